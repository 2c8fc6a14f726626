"""Gram statistics: streaming, compensation, loss from statistics vs a forward pass, sharding."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lstsq_cases import dense_targets

from lmopt import sharding as mesh_lib
from lmopt.config import LossConfig, ModelConfig
from lmopt.lstsq import sharding, solvers
from lmopt.lstsq import stats as stats_lib
from lmopt.workload import Workload

SCALE = 1000.0


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def data(rows=96, dim=6, vocab=11, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(rows, dim)).astype(dtype), rng.integers(0, vocab, rows)


def test_batch_stats_match_dense(x64):
  x, y = data()
  gram = stats_lib.batch_stats(jnp.asarray(x), jnp.asarray(y), 11, SCALE)
  y_NxV = dense_targets(y, 11, SCALE)
  chex.assert_trees_all_close(gram, stats_lib.GramStats(x.T @ x, x.T @ y_NxV, np.sum(y_NxV**2),
                                                        96.0), rtol=1e-12)


def test_streaming_equals_one_shot(x64):
  x, y = data()
  step = jax.jit(stats_lib.accumulate, static_argnums=3)
  streamed = stats_lib.zeros(6, 11, jnp.float64)
  for rows in np.array_split(np.arange(96), 6):  # k = 6 batches of 16
    streamed = step(streamed, jnp.asarray(x[rows]), jnp.asarray(y[rows]), SCALE)
  once = stats_lib.batch_stats(jnp.asarray(x), jnp.asarray(y), 11, SCALE)
  chex.assert_trees_all_close(streamed, once, rtol=1e-12)
  for method in solvers.GRAM_METHODS:
    chex.assert_trees_all_close(solvers.solve_gram(method, streamed),
                                solvers.solve("pinv", jnp.asarray(x), jnp.asarray(y), 11, SCALE),
                                rtol=1e-8)


def test_mask_drops_rows(x64):
  x, y = data()
  mask = (np.arange(96) % 2).astype(np.float64)
  masked = stats_lib.batch_stats(jnp.asarray(x), jnp.asarray(y), 11, SCALE,
                                 mask_N=jnp.asarray(mask))
  kept = stats_lib.batch_stats(jnp.asarray(x[1::2]), jnp.asarray(y[1::2]), 11, SCALE)
  chex.assert_trees_all_close(masked, kept, rtol=1e-12)


def test_compensated_float32_beats_plain_float32(x64):
  x, y = data(rows=4000, dim=4, vocab=5, seed=1, dtype=np.float32)
  x = x + 3.0  # a large mean makes summation error visible
  exact = stats_lib.batch_stats(jnp.asarray(x, jnp.float64), jnp.asarray(y), 5, SCALE)
  plain, comp = stats_lib.zeros(4, 5), stats_lib.compensated_zeros(4, 5)
  add = jax.jit(stats_lib.accumulate, static_argnums=3)
  add_comp = jax.jit(stats_lib.accumulate_compensated, static_argnums=3)
  for rows in np.array_split(np.arange(4000), 400):
    xb, yb = jnp.asarray(x[rows]), jnp.asarray(y[rows])
    plain, comp = add(plain, xb, yb, SCALE), add_comp(comp, xb, yb, SCALE)
  err = lambda s: float(jnp.max(jnp.abs(s.xtx - exact.xtx)) / jnp.max(jnp.abs(exact.xtx)))
  assert comp.total.xtx.dtype == jnp.float32
  assert err(comp.total) < err(plain) / 4 and err(comp.total) < 1e-6
  assert float(comp.total.count) == 4000.0


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_loss_from_stats_equals_forward_pass(dtype, rtol):
  with jax.enable_x64(dtype == "float64"):
    workload = Workload(ModelConfig("linear_mixer", vocab_size=64, dim=16, depth=2, seq_len=12,
                                    dtype=dtype), LossConfig(onehot_scale=SCALE))
    params = jax.jit(workload.init)(jax.random.key(0))
    kernel = params["lm_head"]["kernel"]
    params["lm_head"]["kernel"] = jax.random.normal(jax.random.key(1), kernel.shape, kernel.dtype)
    tokens = jax.random.randint(jax.random.key(2), (8, 12), 0, 64)
    inputs, targets = tokens, tokens[:, 1:]

    @jax.jit
    def losses(params):
      x_NxD = workload.features_fn(params, inputs).reshape(-1, 16)
      gram = stats_lib.batch_stats(x_NxD, targets.reshape(-1), 64, SCALE)
      out = []
      for w in (params["lm_head"]["kernel"], jnp.zeros_like(kernel),
                solvers.solve("pinv", x_NxD, targets.reshape(-1), 64, SCALE)):
        direct = workload.loss({**params, "lm_head": {"kernel": w}}, inputs, targets)
        out.append((stats_lib.loss_from_stats(gram, w), direct))
      return out

    (_, _), (zero_from_stats, _), (best, _) = pairs = losses(params)
    for from_stats, direct in pairs:
      np.testing.assert_allclose(from_stats, direct, rtol=rtol)
    np.testing.assert_allclose(zero_from_stats, SCALE**2 / 64, rtol=rtol)
    assert best < zero_from_stats


def test_one_device_mesh_is_the_same_code_path():
  x, y = data(rows=21, dtype=np.float32)
  mesh = mesh_lib.data_mesh(jax.devices()[:1])
  sharded = sharding.sharded_batch_stats(mesh, jnp.asarray(x), jnp.asarray(y), 11, SCALE)
  chex.assert_trees_all_close(sharded, stats_lib.batch_stats(jnp.asarray(x), jnp.asarray(y), 11,
                                                             SCALE), rtol=1e-5, atol=1e-4)


SHARDED_SCRIPT = textwrap.dedent("""
  import jax, jax.numpy as jnp, numpy as np
  from lmopt import sharding as mesh_lib
  from lmopt.lstsq import sharding, stats
  assert jax.device_count() == 4, jax.devices()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(103, 8)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 13, 103))
  mesh = mesh_lib.data_mesh()
  many = sharding.sharded_batch_stats(mesh, x, y, 13, 1000.0)
  one = stats.batch_stats(x, y, 13, 1000.0)
  shards = {len(s.addressable_shards) for s in jax.tree.leaves(many)}
  diff = max(float(jnp.max(jnp.abs(a - b)) / (1.0 + jnp.max(jnp.abs(b))))
             for a, b in zip(jax.tree.leaves(many), jax.tree.leaves(one)))
  print("DIFF", diff, "SHARDS", shards, "COUNT", float(many.count))
""")


def test_sharded_stats_equal_single_device_on_four_devices():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], check=False, env=env, cwd=root,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  fields = out.stdout.split()
  assert fields[fields.index("SHARDS") + 1] == "{4}"
  assert float(fields[fields.index("COUNT") + 1]) == 103.0
  assert float(fields[fields.index("DIFF") + 1]) < 1e-6
