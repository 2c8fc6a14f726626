"""Optimizers by name: `build_optimizer(OptimizerConfig, Workload)`.

Each entry names a builder `builder(config, workload) -> GradientTransformationExtraArgs`
(imported lazily, so a module is only loaded when used). Every optimizer is
followed by `mask_causal_updates` and, when `config.params` names a subset, by a
zeroing of the other parameters' updates.

Update contract (what the train step passes to every optimizer): `tx.update(grads,
state, params, value=loss, grad=grads, value_fn=workload.loss, inputs=inputs,
targets=targets)`; a transform uses what it needs and ignores the rest.
`value_fn(params, inputs, targets)` takes the batch by keyword: optax's line searches
forward the remaining extra args to it that way (and reject any it cannot take).
"""

import importlib

import optax

from lmopt.config import ConfigError, OptimizerConfig
from lmopt.optim import masking, subset

_BUILDERS = {
    "sgd": "lmopt.optim.first_order:sgd",
    "adamw": "lmopt.optim.first_order:adamw",
    "lbfgs": "lmopt.optim.first_order:lbfgs",
    "muon": "lmopt.optim.first_order:muon",
    "normal_solve": "lmopt.optim.normal_solve:normal_solve",
    "newton_root": "lmopt.optim.newton_root:newton_root_from_config",
    "newton_root_components": "lmopt.optim.newton_root:newton_root_components_from_config",
    "newton_root_recalculated": "lmopt.optim.newton_root:newton_root_recalculated_from_config",
    "newton_system": "lmopt.optim.newton_root:newton_system_from_config",
    "newton": "lmopt.optim.second_order:newton_from_config",
    "exact_newton": "lmopt.optim.second_order:exact_newton_from_config",
    "gauss_newton": "lmopt.optim.second_order:gauss_newton_from_config",
    "levenberg_marquardt": "lmopt.optim.second_order:levenberg_marquardt_from_config",
}

OPTIMIZERS = tuple(_BUILDERS)


def subset_keys(config: OptimizerConfig, params: dict):
  """The top-level parameter names `config.params` selects (`None` for all)."""
  if config.params == "all":
    return None
  keys = tuple(config.params.split(","))
  try:
    subset.check_keys(params, keys)
  except ValueError as e:
    raise ConfigError(f"--params={config.params!r}: {e}") from None
  return keys


def build_optimizer(config: OptimizerConfig, workload, params) -> optax.GradientTransformationExtraArgs:
  """The named optimizer, acting on `config.params` of `params` (shapes only are used)."""
  if config.name not in _BUILDERS:
    raise ConfigError(f"--optimizer={config.name!r} is not accepted; use one of "
                      f"{', '.join(OPTIMIZERS)}")
  config.validate()
  module, function = _BUILDERS[config.name].split(":")
  tx = getattr(importlib.import_module(module), function)(config, workload)
  keys = subset_keys(config, params)
  parts = [tx, masking.mask_causal_updates()]
  if keys is not None:
    parts.append(subset.zero_outside(keys))
  return optax.chain(*parts)
