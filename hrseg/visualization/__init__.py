"""Visualisation: OpenCV panels of weights and predictions, sortable index.html galleries, the HTML report page."""
