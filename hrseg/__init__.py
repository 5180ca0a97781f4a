"""hrseg: transfer learning for semantic segmentation via hierarchical region selection."""

__version__ = "0.3.0"
