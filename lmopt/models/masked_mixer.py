"""The masked mixer: the nonlinear mixer with LayerNorm and a GELU MLP per block."""

import flax.linen as nn
import jax.numpy as jnp

from lmopt.models import layers


class MixerBlock(nn.Module):
  expansion: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h):
    ln = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype, name=name)
    h = h + layers.CausalTokenMixing(self.dtype, name="mix")(ln("ln_mix")(h))
    return h + layers.Mlp(self.expansion, self.dtype, name="mlp")(ln("ln_mlp")(h))


class MaskedMixer(nn.Module):
  vocab_size: int
  dim: int
  depth: int
  expansion: int = 4
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.wte = layers.embed(self.vocab_size, self.dim, self.dtype)
    self.blocks = [MixerBlock(self.expansion, self.dtype, name=f"block_{i}")
                   for i in range(self.depth)]
    self.ln_f = nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype)
    self.lm_head = layers.lm_head(self.vocab_size, self.dtype)

  def features(self, tokens_BxL):
    """lm_head inputs `[B, L, dim]`."""
    h = self.wte(tokens_BxL)
    for block in self.blocks:
      h = block(h)
    return self.ln_f(h)

  def __call__(self, tokens_BxL):
    return self.lm_head(self.features(tokens_BxL))
