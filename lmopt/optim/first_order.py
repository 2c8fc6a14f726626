"""First-order and quasi-Newton baselines from optax: sgd, adamw, lbfgs, muon."""

import optax

from lmopt.config import OptimizerConfig


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then constant or cosine decay to 0 at `total_steps`."""
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, max(config.total_steps, 1))
  if config.warmup_steps:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps),
         optax.constant_schedule(config.learning_rate)], [config.warmup_steps])
  return optax.constant_schedule(config.learning_rate)


def sgd(config: OptimizerConfig, workload) -> optax.GradientTransformationExtraArgs:
  """Heavy-ball SGD (`momentum=0` for plain gradient descent) with decoupled weight decay."""
  del workload
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(learning_rate_schedule(config), momentum=config.momentum or None))


def adamw(config: OptimizerConfig, workload) -> optax.GradientTransformationExtraArgs:
  del workload
  return optax.adamw(learning_rate_schedule(config), weight_decay=config.weight_decay)


def lbfgs(config: OptimizerConfig, workload) -> optax.GradientTransformationExtraArgs:
  """optax L-BFGS with its zoom line search (needs `value`, `grad`, `value_fn` extra args)."""
  del workload
  return optax.lbfgs(memory_size=10)


def muon(config: OptimizerConfig, workload) -> optax.GradientTransformationExtraArgs:
  """optax.contrib.muon on matrices (AdamW on the rest)."""
  del workload
  return optax.contrib.muon(learning_rate_schedule(config), weight_decay=config.weight_decay)
