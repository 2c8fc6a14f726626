"""Alternating exact least squares on the linear mixer: exact blocks, monotone loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmopt.config import LossConfig, ModelConfig
from lmopt.lstsq import alternating
from lmopt.models import CAUSAL_KERNEL
from lmopt.workload import Workload


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def problem(depth=2):
  workload = Workload(ModelConfig("linear_mixer", vocab_size=20, dim=6, depth=depth, seq_len=7,
                                  dtype="float64"), LossConfig(onehot_scale=10.0))
  params = jax.jit(workload.init)(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (12, 7), 0, 20)
  return workload, params, tokens


def test_each_block_update_is_exact_and_never_increases_the_loss():
  workload, params, tokens = problem()
  inputs, targets = tokens, tokens[:, 1:]
  loss_and_grad = jax.jit(jax.value_and_grad(workload.loss))
  loss, _ = loss_and_grad(params, inputs, targets)
  updates = {name: jax.jit(alternating.block_update(workload, name))
             for name in alternating.block_names(2)}
  for name in alternating.block_names(2) * 2:
    new = updates[name](params, inputs, targets)
    new_loss, grads = loss_and_grad(new, inputs, targets)
    assert new_loss <= loss * (1 + 1e-12), name
    for leaf in jax.tree.leaves(grads[name]):  # stationary in the updated block
      assert float(jnp.max(jnp.abs(leaf))) < 1e-8 * float(loss), name
    if name.startswith("mix"):  # the causal mask and the unscored last row are untouched
      kernel = new[name][CAUSAL_KERNEL]
      assert float(jnp.max(jnp.abs(jnp.triu(kernel, 1)))) == 0.0
      np.testing.assert_array_equal(kernel[-1], params[name][CAUSAL_KERNEL][-1])
    params, loss = new, new_loss


def test_alternating_solve_is_monotone_and_beats_lm_head_alone():
  workload, params, tokens = problem()
  new, initial, history, _ = alternating.alternating_solve(workload, params, tokens, sweeps=3)
  losses = [initial] + [step.loss for step in history]
  assert np.all(np.isfinite(losses)) and np.all(np.diff(losses) <= 0.0)
  assert len(history) == 3 * len(alternating.block_names(2))
  np.testing.assert_allclose(history[-1].loss, workload.loss(new, tokens, tokens[:, 1:]),
                             rtol=1e-10)
  head_only = history[0].loss  # the first block is the lm_head solve
  assert history[-1].loss < 0.97 * head_only
  assert sum(step.accepted for step in history) >= len(history) - 3  # refusals: rounding only
