"""sharpness: sharp vs flat minima analysis for PyTorch."""
__version__ = "0.1.0"
