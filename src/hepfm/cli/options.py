"""Command-line options shared by the training, study and inference commands (defaults from train/defaults)."""

from __future__ import annotations

import typer

from hepfm.train import defaults

_EPOCHS = typer.Option(defaults.EPOCHS, help="Maximum number of epochs (early stopping may end sooner).")
_BATCH = typer.Option(None, help=f"Global batch size (split over torchrun processes); default {defaults.BATCH_SIZE}, "
                      "512 with --optimizer sgd-cosine.")
_PATIENCE = typer.Option(defaults.PATIENCE, help="Stop after this many epochs without a better validation loss.")
_OPTIMIZER = typer.Option("adam", help="adam, adamw, sgd, or sgd-cosine (the KEK study's: SGD, the rate annealed by a "
                          "cosine from --lr, default 1e-2, to --lr/100 over --epochs; batch 512; ignores --schedule).")
_SCHEDULE = typer.Option("exponential", help="exponential (LR x 0.99 per epoch), cosine or constant.")
_AUGMENT = typer.Option(None, "--augment", help="Augmentation: phi, eta_flip or boost (repeatable).")
_BF16 = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: on for CUDA, off on the CPU).")
_COMPILE = typer.Option(False, "--compile", help="torch.compile the model (GPU).")
_WARMUP = typer.Option(0, help="Optimiser steps of linear learning-rate warm-up (0: none).")
_LR_SCALING = typer.Option("none", help="none, or linear: learning rates x batch size / --lr-reference-batch "
                           "(large batches).")
_LR_REFERENCE = typer.Option(defaults.BATCH_SIZE, help="The batch size the given learning rates are for "
                             "(--lr-scaling linear).")
_READ_AHEAD = typer.Option(2, help="Batches a streamed store reads ahead in a background thread (0: none).")
_CKPT = typer.Option(0, help="Also checkpoint every N batches (0: at the end of each epoch only).")
_DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace a finished model in --out.")
_PROGRESS = typer.Option(True, help="Show progress bars.")
_MAX_EVENTS = typer.Option(None, help="Read at most this many events per process.")
_ALLOW_OVERLAP = typer.Option(False, "--allow-overlap", help="Go on (with a warning; the result is marked "
                              "overlap: true) when validation or test events were in the pretraining data.")
