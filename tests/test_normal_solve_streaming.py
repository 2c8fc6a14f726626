"""normal_solve with mini-batches: the Gram methods stream statistics across steps."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmopt import sharding, train
from lmopt.config import LossConfig, ModelConfig, OptimizerConfig
from lmopt.optim import build_optimizer
from lmopt.workload import Workload

WORKLOAD = Workload(ModelConfig(vocab_size=40, dim=8, depth=1, seq_len=12),
                    LossConfig("mse", 10.0))


def _run(method, batches):
  params = jax.eval_shape(WORKLOAD.init, jax.random.key(0))
  tx = build_optimizer(OptimizerConfig(name="normal_solve", params="lm_head", solve_method=method,
                                       ridge=1e-6), WORKLOAD, params)
  mesh = sharding.data_mesh()
  state = train.init_state(WORKLOAD, tx, 0, mesh)
  step = train.make_train_step(WORKLOAD, tx)
  for batch in batches:
    state, _ = step(state, jnp.asarray(batch))
  return state


@pytest.mark.parametrize("method", ["cholesky", "eigh"])
def test_one_epoch_of_minibatches_equals_the_full_batch_solve(method):
  tokens = np.random.default_rng(0).integers(0, 40, (24, 12)).astype(np.int32)
  streamed = _run(method, np.split(tokens, 4))
  full = _run(method, [tokens])
  chex.assert_trees_all_close(streamed.params["lm_head"], full.params["lm_head"], rtol=2e-3,
                              atol=1e-4)
  others = lambda s: {k: v for k, v in s.params.items() if k != "lm_head"}
  chex.assert_trees_all_equal(others(streamed), others(full))


def test_a_non_finite_batch_does_not_poison_the_running_statistics():
  tokens = np.random.default_rng(1).integers(0, 40, (8, 12)).astype(np.int32)
  state = _run("cholesky", [tokens])
  seen_before = jax.device_get(state.opt_state[0].seen)
  bad = jax.tree.map(lambda x: x, state)
  bad = bad._replace(params={**bad.params, "wte": {"embedding": bad.params["wte"]["embedding"]
                                                    .at[0, 0].set(jnp.nan)}})
  tx = build_optimizer(OptimizerConfig(name="normal_solve", params="lm_head",
                                       solve_method="cholesky", ridge=1e-6), WORKLOAD,
                       jax.eval_shape(WORKLOAD.init, jax.random.key(0)))
  step = train.make_train_step(WORKLOAD, tx)
  after, metrics = step(bad, jnp.asarray(np.zeros((8, 12), np.int32)))
  assert not bool(metrics["finite_loss"])
  chex.assert_trees_all_equal(jax.device_get(after.opt_state[0].seen), seen_before)
