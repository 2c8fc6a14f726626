"""The runner: one compilation, the non-finite guard, data-parallel equivalence."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmopt import sharding, train
from lmopt.config import ModelConfig, OptimizerConfig
from lmopt.optim import build_optimizer
from lmopt.workload import Workload

WORKLOAD = Workload(ModelConfig(vocab_size=64, dim=16, depth=1, seq_len=8))


def _tokens(seed, batch=8):
  return np.random.default_rng(seed).integers(0, 64, (batch, 8)).astype(np.int32)


def _state_and_step(tx):
  mesh = sharding.data_mesh()
  return train.init_state(WORKLOAD, tx, 0, mesh), train.make_train_step(WORKLOAD, tx), mesh


def test_train_step_compiles_once():
  params = jax.eval_shape(WORKLOAD.init, jax.random.key(0))
  tx = build_optimizer(OptimizerConfig(name="adamw", learning_rate=1e-2), WORKLOAD, params)
  state, step, _ = _state_and_step(tx)
  losses = []
  for i in range(4):
    state, metrics = step(state, jnp.asarray(_tokens(i)))
    losses.append(float(metrics["loss"]))
  assert step._cache_size() == 1
  assert np.all(np.isfinite(losses))


def test_non_finite_update_is_not_applied():
  state, step, _ = _state_and_step(optax.scale(jnp.nan))
  before = jax.device_get(state.params)
  state, metrics = step(state, jnp.asarray(_tokens(0)))
  chex.assert_trees_all_equal(jax.device_get(state.params), before)
  assert not bool(metrics["finite_update"]) and bool(metrics["finite_loss"])
  assert int(state.nonfinite) == 1 and int(state.step) == 1


def test_non_finite_loss_is_reported_and_not_applied():
  state, step, _ = _state_and_step(optax.sgd(1.0))
  nan_params = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.params)
  state = state._replace(params=nan_params)
  before = jax.device_get(state.params)
  state, metrics = step(state, jnp.asarray(_tokens(0)))
  assert not bool(metrics["finite_loss"])
  chex.assert_trees_all_equal(jax.device_get(state.params), before)


def test_fit_reports_records_and_stops_early():
  state, step, mesh = _state_and_step(optax.adam(1e-2))
  records = []
  state, compile_seconds = train.fit(step, state, _tokens, mesh, num_steps=10,
                                     on_step=lambda s, r: records.append(r) or r.step == 3)
  assert [r.step for r in records] == [1, 2, 3] and int(state.step) == 3
  assert compile_seconds > 0 and records[-1].seconds >= records[0].seconds


def test_four_devices_match_one():
  script = textwrap.dedent("""
      import jax, numpy as np
      from lmopt import sharding, train
      from lmopt.config import ModelConfig
      from lmopt.workload import Workload
      import optax
      assert len(jax.devices()) == 4
      workload = Workload(ModelConfig(vocab_size=64, dim=16, depth=1, seq_len=8))
      tokens = np.random.default_rng(0).integers(0, 64, (8, 8)).astype(np.int32)
      out = []
      for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.data_mesh(devices)
        tx = optax.adam(1e-2)
        state = train.init_state(workload, tx, 0, mesh)
        step = train.make_train_step(workload, tx)
        for _ in range(2):
          state, _ = step(state, sharding.put_batch(tokens, mesh))
        out.append(jax.device_get(state.params))
      diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(out[0]),
                                                              jax.tree.leaves(out[1])))
      print("MAXDIFF", diff)
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  diff = float(result.stdout.split("MAXDIFF")[1])
  assert diff < 1e-5


def test_a_chained_optax_line_search_compiles_once():
  """optax's backtracking line search starts with weak-typed state; the step must not retrace."""
  tx = optax.chain(optax.sgd(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=4))
  state, step, _ = _state_and_step(tx)
  for i in range(3):
    state, metrics = step(state, jnp.asarray(_tokens(i)))
  assert step._cache_size() == 1
  assert bool(metrics["finite_update"])
