"""Evaluation and plotting."""
