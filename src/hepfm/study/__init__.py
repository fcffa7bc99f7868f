"""The pretraining study: configuration, LR tuning, the grid of cells, statistics, efficiency and the report."""
