"""segexport: classic semantic-segmentation networks from PyTorch to verified deployment artifacts."""

__version__ = "0.1.0"
