"""Training defaults, in one place: the trainer, the command line and the study configuration all read these.

The learning rates are the paper's (arXiv:2412.10665): 1e-4 for a model trained from scratch and for a new
output layer, 10x lower (1e-5) for pretrained layers. The study tunes the rates per strategy on validation
data (hepfm.study.run.tune) unless a configuration fixes them.
"""

LR = 1e-4
BACKBONE_LR = 1e-5
EPOCHS = 50
PATIENCE = 5
BATCH_SIZE = 1024
