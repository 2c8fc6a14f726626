"""The runner: the one place that knows both the workload and the optimizer.

`make_train_step` returns a jitted, donated step that computes the loss and its
gradient, calls the optimizer with the full extra-argument contract of
`lmopt.optim.registry`, and applies the update only when the loss, the gradient
and the update are all finite (otherwise parameters and optimizer state are kept
and `nonfinite` is incremented). `fit` drives it over batches with timing that
excludes compilation.
"""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmopt import sharding
from lmopt.losses import next_token_split


class TrainState(NamedTuple):
  step: jax.Array  # int32 []
  params: Any
  opt_state: Any
  nonfinite: jax.Array  # int32 []: steps whose update was refused


def init_state(workload, tx, seed: int, mesh) -> TrainState:
  """Initial state from `seed`, replicated over `mesh` (jit-compiled)."""
  def init(key):
    params = workload.init(key)
    # Weak-typed leaves (e.g. optax line-search states) would retrace the step once.
    opt_state = jax.tree.map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), tx.init(params))
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, jnp.zeros((), jnp.int32))
  return jax.jit(init, out_shardings=sharding.replicated(mesh))(jax.random.key(seed))


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def optimizer_diagnostics(opt_state) -> dict:
  """Scalar float/int leaves of an optimizer state keyed by their field path (for logging)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
    names = [k.name for k in path if isinstance(k, jax.tree_util.GetAttrKey)]
    if names and jnp.ndim(leaf) == 0 and jnp.issubdtype(jnp.result_type(leaf), jnp.number):
      out["opt/" + ".".join(names)] = leaf
  return out


def make_train_step(workload, tx) -> Callable:
  """`step(state, tokens_BxL) -> (state, metrics)`, jitted with the state donated."""
  tx = optax.with_extra_args_support(tx)

  def step(state: TrainState, tokens_BxL):
    inputs, targets = next_token_split(tokens_BxL)
    loss, grads = jax.value_and_grad(workload.loss)(state.params, inputs, targets)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss, grad=grads,
                                   value_fn=workload.loss, inputs=inputs, targets=targets)
    finite = {"finite_loss": jnp.isfinite(loss), "finite_grad": _all_finite(grads),
              "finite_update": _all_finite(updates)}
    ok = finite["finite_loss"] & finite["finite_grad"] & finite["finite_update"]
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=keep(optax.apply_updates(state.params, updates), state.params),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite=state.nonfinite + (~ok).astype(jnp.int32))
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "update_norm": optax.tree.norm(updates), **finite,
               **optimizer_diagnostics(opt_state)}
    return new_state, metrics

  return jax.jit(step, donate_argnums=0)


def make_eval_fn(workload) -> Callable:
  """`evaluate(params, tokens_BxL) -> mean loss` (jitted)."""
  return jax.jit(lambda params, tokens: workload.loss(params, *next_token_split(tokens)))


def evaluate(eval_fn, params, windows_NxL: np.ndarray, mesh, batch_size: int) -> float:
  """Mean loss over all windows, in equal-size chunks (a multiple of the mesh size)."""
  chunk = max(mesh.size, (batch_size // mesh.size) * mesh.size) if batch_size else len(windows_NxL)
  chunk = min(chunk, (len(windows_NxL) // mesh.size) * mesh.size)
  usable = (len(windows_NxL) // chunk) * chunk
  losses = [eval_fn(params, sharding.put_batch(windows_NxL[i:i + chunk], mesh))
            for i in range(0, usable, chunk)]
  return float(np.mean(jax.device_get(losses)))


class StepRecord(NamedTuple):
  step: int
  seconds: float  # wall time of training so far, excluding compilation
  metrics: dict


def fit(step_fn, state: TrainState, batch_at: Callable[[int], np.ndarray], mesh, *,
        num_steps: int, on_step: Callable[[TrainState, StepRecord], bool] | None = None):
  """Runs `num_steps` steps from `state.step`; returns `(state, compile_seconds)`.

  The step is compiled ahead of time on the first batch, so `seconds` in each
  `StepRecord` excludes compilation. `on_step` may return True to stop early.
  """
  start = int(state.step)
  first = sharding.put_batch(batch_at(start), mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, first).compile()
  compile_seconds = time.perf_counter() - t0
  elapsed = 0.0
  for i in range(start, start + num_steps):
    batch = first if i == start else sharding.put_batch(batch_at(i), mesh)
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    metrics = jax.device_get(metrics)
    elapsed += time.perf_counter() - t0
    if on_step is not None and on_step(state, StepRecord(i + 1, elapsed, metrics)):
      break
  return state, compile_seconds
