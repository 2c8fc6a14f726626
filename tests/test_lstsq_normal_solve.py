"""The `normal_solve` optimizer: one step is the exact lm_head optimum of the batch."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lstsq_cases import reference

from lmopt import sharding, train
from lmopt.config import ConfigError, LossConfig, ModelConfig, OptimizerConfig
from lmopt.optim import build_optimizer
from lmopt.workload import Workload

SCALE = 100.0


def problem(dtype="float64", loss="mse"):
  workload = Workload(ModelConfig("linear_mixer", vocab_size=24, dim=8, depth=1, seq_len=9,
                                  dtype=dtype), LossConfig(loss, onehot_scale=SCALE))
  tokens = jax.random.randint(jax.random.key(3), (6, 9), 0, 24)
  return workload, tokens


@pytest.mark.parametrize("method", ["lstsq"])
def test_train_step_reaches_the_exact_optimum(method):
  with jax.enable_x64(True):
    workload, tokens = problem()
    tx = build_optimizer(OptimizerConfig(name="normal_solve", solve_method=method), workload,
                         jax.eval_shape(workload.init, jax.random.key(0)))
    mesh = sharding.data_mesh(jax.devices()[:1])
    state = train.init_state(workload, tx, 0, mesh)
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = train.make_train_step(workload, tx)(state, tokens)
    inputs, targets = tokens, tokens[:, 1:]
    grads = jax.grad(workload.loss)(state.params, inputs, targets)
    grads0 = jax.grad(workload.loss)(before, inputs, targets)
    head = lambda g: float(jnp.linalg.norm(g["lm_head"]["kernel"]))
    assert head(grads) < 1e-9 * head(grads0)
    for name in ("wte", "mix_0"):
      chex.assert_trees_all_equal(state.params[name], before[name])
    x = np.asarray(workload.features_fn(before, inputs)).reshape(-1, 8)
    _, best = reference(x, np.asarray(targets).reshape(-1), 24, SCALE)
    np.testing.assert_allclose(workload.loss(state.params, inputs, targets), best, rtol=1e-10)
    np.testing.assert_allclose(metrics["opt/loss_after"], best, rtol=1e-6)
    np.testing.assert_allclose(metrics["opt/loss_before"], metrics["loss"], rtol=1e-6)


def test_update_compiles_once_and_refuses_non_finite():
  workload, tokens = problem("float32")
  config = OptimizerConfig(name="normal_solve", solve_method="cholesky", ridge=0.0)
  params = jax.jit(workload.init)(jax.random.key(0))
  params["wte"]["embedding"] = jnp.zeros_like(params["wte"]["embedding"])  # XᵀX = 0: singular
  tx = build_optimizer(config, workload, params)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def update(state, params, tokens):
    return tx.update(params, state, params, inputs=tokens, targets=tokens[:, 1:])

  state = tx.init(params)
  for seed in range(3):
    batch = jax.random.randint(jax.random.key(seed), tokens.shape, 0, 24)
    updates, state = update(state, params, batch)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
  assert int(state[0].nonfinite) == 3 and int(state[0].count) == 3


@pytest.mark.parametrize("loss,method,match", [("ce", "pinv", "--loss=mse"),
                                               ("mse", "gauss", "--method")])
def test_config_errors(loss, method, match):
  workload, _ = problem("float32", loss)
  config = OptimizerConfig(name="normal_solve", solve_method=method)
  with pytest.raises(ConfigError, match=match):
    build_optimizer(config, workload, jax.eval_shape(workload.init, jax.random.key(0)))
