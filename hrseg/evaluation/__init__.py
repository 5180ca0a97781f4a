"""Evaluation: confusion-matrix metrics, scoring runs and prediction folders, weighting quality."""
