"""Visualisation: OpenCV panels of weights and predictions, and an index.html gallery."""
