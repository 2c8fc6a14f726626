"""Acting on a parameter subset while the loss still sees every parameter.

`optax.masked` hides the unselected leaves from its inner transform, so a Newton
step on `lm_head` alone could not evaluate the loss. Here the inner transform is
built from functions of the *active* parameters only; the frozen ones travel with
the batch: `fn(params, inputs, ...)` becomes `fn(active, (frozen, inputs), ...)`,
which closes over the frozen values at each update without retracing.

Subsets are chosen by top-level module names (e.g. `("lm_head",)`), which is the
labelling `optax.multi_transform` uses too. Leaves outside the subset pass their
incoming updates through unchanged, so
`optax.chain(on_subset(newton, ("lm_head",), ...), optax.masked(adamw, others))`
runs Newton on the head and AdamW elsewhere.
"""

from collections.abc import Callable, Sequence

import optax


def split(params: dict, keys: Sequence[str]):
  """`(active, frozen)` dicts of the top-level entries in / not in `keys`."""
  active = {k: v for k, v in params.items() if k in keys}
  frozen = {k: v for k, v in params.items() if k not in keys}
  return active, frozen


def bind_frozen(fn: Callable) -> Callable:
  """`fn(params, inputs, *rest)` -> `fn_sub(active, (frozen, inputs), *rest)`."""
  def fn_sub(active, packed_inputs, *rest):
    frozen, inputs = packed_inputs
    return fn({**frozen, **active}, inputs, *rest)
  return fn_sub


def check_keys(params: dict, keys: Sequence[str]) -> None:
  missing = [k for k in keys if k not in params]
  if missing or not keys:
    raise ValueError(f"parameter subset {list(keys)} is not accepted; "
                     f"use names among {sorted(params)}")


def on_subset(build: Callable[..., optax.GradientTransformationExtraArgs], keys: Sequence[str],
              **fns: Callable) -> optax.GradientTransformationExtraArgs:
  """Runs `build(**bound_fns)` on the `keys` subset of a full parameter tree.

  Args:
    build: makes the inner transform from functions given by keyword.
    keys: top-level parameter names the inner transform acts on.
    **fns: functions `fn(params, inputs, *rest)` of the full parameters; they are
      rebound with `bind_frozen` before `build` sees them.
  The inner transform receives `inputs=(frozen, inputs)` and every other extra
  argument unchanged; its state covers the active leaves only.
  """
  keys = tuple(keys)
  inner = build(**{name: bind_frozen(fn) for name, fn in fns.items()})

  def init_fn(params):
    check_keys(params, keys)
    return inner.init(split(params, keys)[0])

  def update_fn(updates, state, params=None, *, inputs=None, **extra):
    active, frozen = split(params, keys)
    active_updates = split(updates, keys)[0]
    new_active, state = inner.update(active_updates, state, active, inputs=(frozen, inputs),
                                     **extra)
    return {**updates, **new_active}, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def zero_outside(keys: Sequence[str]) -> optax.GradientTransformation:
  """Sets the updates of every top-level entry not in `keys` to zero."""
  keys = tuple(keys)
  return optax.masked(optax.set_to_zero(), lambda params: {k: k not in keys for k in params})
