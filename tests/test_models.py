"""Models: shapes, causality, the untrained MSE level, dtypes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmopt.config import LossConfig, ModelConfig
from lmopt.models import CAUSAL_KERNEL, build_model
from lmopt.workload import Workload

MODELS = ("linear_mixer", "masked_mixer", "transformer")


def _config(name, **kw):
  return ModelConfig(name=name, vocab_size=kw.pop("vocab_size", 97), dim=32, depth=2, seq_len=16,
                     num_heads=4, **kw)


@pytest.mark.parametrize("name", MODELS)
def test_shapes(name):
  model = build_model(_config(name))
  tokens = jnp.zeros((3, 16), jnp.int32)
  params = model.init(jax.random.key(0), tokens)
  chex.assert_shape(model.apply(params, tokens), (3, 16, 97))
  chex.assert_shape(model.apply(params, tokens, method="features"), (3, 16, 32))
  chex.assert_shape(params["params"]["lm_head"]["kernel"], (32, 97))
  assert "bias" not in params["params"]["lm_head"]


@pytest.mark.parametrize("name", MODELS)
def test_causal(name):
  """Changing token t leaves the logits at positions < t unchanged (and changes position t)."""
  model = build_model(_config(name))
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 97)
  params = model.init(jax.random.key(0), tokens)
  t = 9
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % 97)
  before, after = model.apply(params, tokens), model.apply(params, changed)
  chex.assert_trees_all_close(before[:, :t], after[:, :t], atol=1e-6)
  assert float(jnp.max(jnp.abs(before[:, t] - after[:, t]))) > 1e-6


@pytest.mark.parametrize("name", ("linear_mixer", "masked_mixer"))
def test_mixing_kernels_start_lower_triangular(name):
  params = Workload(_config(name)).init(jax.random.key(0))
  kernels = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
             if path[-1].key == CAUSAL_KERNEL]
  assert len(kernels) == 2
  for kernel in kernels:
    np.testing.assert_array_equal(np.triu(np.asarray(kernel), 1), 0.0)
    assert np.abs(np.tril(np.asarray(kernel))).max() > 0


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("vocab_size", (512, 4096))
def test_untrained_mse_is_near_scale_squared_over_vocab(name, vocab_size):
  workload = Workload(_config(name, vocab_size=vocab_size), LossConfig("mse", 1000.0))
  params = workload.init(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, vocab_size)
  loss = float(workload.loss(params, tokens, tokens[:, 1:]))
  assert abs(loss / (1000.0**2 / vocab_size) - 1) < 0.03


@pytest.mark.parametrize("name", MODELS)
def test_float64_model(name):
  with jax.enable_x64(True):
    workload = Workload(_config(name, dtype="float64"))
    params = workload.init(jax.random.key(0))
    tokens = jnp.zeros((2, 16), jnp.int32)
    logits = workload.logits_fn(params, tokens)
    assert logits.dtype == jnp.float64
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))


def test_bad_model_name_is_a_config_error():
  with pytest.raises(ValueError, match="--model='rnn' is not accepted"):
    build_model(ModelConfig(name="rnn"))
