"""Building blocks shared by the models."""

import flax.linen as nn
import jax.numpy as jnp

CAUSAL_KERNEL = "causal_kernel"


def causal_mask(seq_len: int, dtype=jnp.float32):
  """Lower-triangular `[seq_len, seq_len]` mask: entry (t, s) is 1 iff s <= t."""
  return jnp.tril(jnp.ones((seq_len, seq_len), dtype))


def _lower_triangular_init(stddev: float):
  def init(key, shape, dtype):
    return jnp.tril(nn.initializers.normal(stddev)(key, shape, dtype))
  return init


class CausalTokenMixing(nn.Module):
  """`y[b, t] = sum_{s<=t} M[t, s] x[b, s] + bias[t]`: a causal mix along the sequence.

  `M` (param `causal_kernel`, `[L, L]`) is the kernel-size-1 Conv1d whose channels
  are positions. Causality comes from masking in the forward pass; entries above the
  diagonal start at zero and, since the mask zeroes their gradient, stay zero.
  """

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD):
    seq_len = x_BxLxD.shape[1]
    kernel_LxL = self.param(CAUSAL_KERNEL, _lower_triangular_init(0.02), (seq_len, seq_len),
                            self.dtype)
    bias_L = self.param("bias", nn.initializers.zeros, (seq_len,), self.dtype)
    masked_LxL = kernel_LxL * causal_mask(seq_len, self.dtype)
    return jnp.einsum("ts,bsd->btd", masked_LxL, x_BxLxD) + bias_L[None, :, None]


class Mlp(nn.Module):
  """dim -> expansion*dim -> GELU -> dim."""

  expansion: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD):
    dim = x_BxLxD.shape[-1]
    h = nn.Dense(self.expansion * dim, dtype=self.dtype, param_dtype=self.dtype, name="fc_in")(
        x_BxLxD)
    return nn.Dense(dim, dtype=self.dtype, param_dtype=self.dtype, name="fc_out")(nn.gelu(h))


def embed(vocab_size: int, dim: int, dtype) -> nn.Embed:
  return nn.Embed(vocab_size, dim, embedding_init=nn.initializers.normal(0.02), dtype=dtype,
                  param_dtype=dtype, name="wte")


def lm_head(vocab_size: int, dtype) -> nn.Dense:
  """The bias-free output layer every model ends in; kernel `[dim, vocab]`."""
  return nn.Dense(vocab_size, use_bias=False, dtype=dtype, param_dtype=dtype, name="lm_head")
