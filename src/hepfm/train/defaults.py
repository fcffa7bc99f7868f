"""Training defaults, in one place: the trainer, the command line and the study configuration all read these.

The learning rates are the paper's (arXiv:2412.10665): 1e-4 for a model trained from scratch and for a new
output layer, 10x lower (1e-5) for pretrained layers. The study tunes the rates per strategy on validation
data (hepfm.study.run.tune) unless a configuration fixes them. The values live in :mod:`hepfm.config`, with
every other setting of a run.
"""

from hepfm.config import BACKBONE_LR, BATCH_SIZE, EPOCHS, LR, PATIENCE

__all__ = ["BACKBONE_LR", "BATCH_SIZE", "EPOCHS", "LR", "PATIENCE"]
