"""Optimizers: optax baselines and lmopt's second-order transformations."""

from lmopt.optim.registry import OPTIMIZERS, build_optimizer

__all__ = ["OPTIMIZERS", "build_optimizer"]
