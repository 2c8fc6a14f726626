"""A small pre-LN causal decoder with learned positions, for comparison."""

import flax.linen as nn
import jax.numpy as jnp

from lmopt.models import layers


class DecoderBlock(nn.Module):
  num_heads: int
  expansion: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h):
    ln = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype, name=name)
    x = ln("ln_attn")(h)
    mask = nn.make_causal_mask(jnp.ones(h.shape[:2], jnp.int32))
    h = h + nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.dtype, name="attn")(
            x, x, mask=mask)
    return h + layers.Mlp(self.expansion, self.dtype, name="mlp")(ln("ln_mlp")(h))


class Transformer(nn.Module):
  vocab_size: int
  dim: int
  depth: int
  seq_len: int
  num_heads: int = 4
  expansion: int = 4
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.wte = layers.embed(self.vocab_size, self.dim, self.dtype)
    self.wpe = self.param("wpe", nn.initializers.normal(0.02), (self.seq_len, self.dim), self.dtype)
    self.blocks = [DecoderBlock(self.num_heads, self.expansion, self.dtype, name=f"block_{i}")
                   for i in range(self.depth)]
    self.ln_f = nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype)
    self.lm_head = layers.lm_head(self.vocab_size, self.dtype)

  def features(self, tokens_BxL):
    """lm_head inputs `[B, L, dim]`."""
    h = self.wte(tokens_BxL) + self.wpe[None, : tokens_BxL.shape[1]]
    for block in self.blocks:
      h = block(h)
    return self.ln_f(h)

  def __call__(self, tokens_BxL):
    return self.lm_head(self.features(tokens_BxL))
