"""The linear mixer: embedding, `depth` causal token-mixing blocks, lm_head; no nonlinearity."""

import flax.linen as nn
import jax.numpy as jnp

from lmopt.models import layers


class LinearMixer(nn.Module):
  """`h <- h + M h + b` per block; linear in every weight matrix given the others."""

  vocab_size: int
  dim: int
  depth: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.wte = layers.embed(self.vocab_size, self.dim, self.dtype)
    self.blocks = [layers.CausalTokenMixing(self.dtype, name=f"mix_{i}") for i in range(self.depth)]
    self.lm_head = layers.lm_head(self.vocab_size, self.dtype)

  def features(self, tokens_BxL):
    """lm_head inputs `[B, L, dim]`."""
    h = self.wte(tokens_BxL)
    for block in self.blocks:
      h = h + block(h)
    return h

  def __call__(self, tokens_BxL):
    """Logits `[B, L, vocab]`."""
    return self.lm_head(self.features(tokens_BxL))
