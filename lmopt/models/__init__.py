"""Model registry: `build_model(ModelConfig)` returns a pure Flax linen module.

Every model maps int32 tokens `[B, L]` to logits `[B, L, vocab]` (`apply`) and to
the lm_head input features `[B, L, dim]` (`apply(..., method="features")`); the
output layer is a bias-free Dense named `lm_head` with kernel `[dim, vocab]`.
"""

import jax.numpy as jnp

from lmopt.config import ModelConfig
from lmopt.models.layers import CAUSAL_KERNEL, causal_mask
from lmopt.models.linear_mixer import LinearMixer
from lmopt.models.masked_mixer import MaskedMixer
from lmopt.models.transformer import Transformer

__all__ = ["CAUSAL_KERNEL", "build_model", "causal_mask"]


def build_model(config: ModelConfig):
  config.validate()
  dtype = jnp.dtype(config.dtype)
  if config.name == "linear_mixer":
    return LinearMixer(config.vocab_size, config.dim, config.depth, dtype)
  if config.name == "masked_mixer":
    return MaskedMixer(config.vocab_size, config.dim, config.depth, config.mlp_expansion, dtype)
  return Transformer(config.vocab_size, config.dim, config.depth, config.seq_len,
                     config.num_heads, config.mlp_expansion, dtype)
