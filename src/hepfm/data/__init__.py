"""Turning stored events into model inputs: features, batches, augmentations."""
