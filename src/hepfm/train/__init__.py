"""Tasks, strategies, the training loop, checkpoints and the pretrain/fine-tune/evaluate workflows."""
