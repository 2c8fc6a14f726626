"""lmopt: exact least-squares, Newton and Gauss-Newton training of language models."""

__version__ = "0.1.0"
