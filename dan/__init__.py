"""Dual Attention Networks: a reproducible study."""
__version__ = "0.1.0"
