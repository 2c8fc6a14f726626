"""A workload: model + loss, as pure functions of `(params, inputs, targets)`.

This is the half of training that the optimizers never see directly: they are
built from the functions below (see `lmopt.optim`). Conventions:

* `params`: the model's `"params"` collection (a dict keyed by module name;
  `params["lm_head"]["kernel"]` is `[dim, vocab]`).
* `inputs`: int32 tokens `[B, L]`; `targets`: int32 tokens `[B, L-1]`
  (`inputs[:, 1:]`, see `losses.next_token_split`).
* `logits_fn(params, inputs) -> [B, L-1, V]` (the last position is dropped),
  `features_fn(params, inputs) -> [B, L-1, dim]` (lm_head inputs),
  `output_loss(logits, targets) -> [B, L-1]` (per-token loss from logits),
  `per_token_loss(params, inputs, targets) -> [B, L-1]`,
  `loss(params, inputs, targets) -> []` (the mean).

`per_token_loss` and `loss` follow `loss_config.impl`: with `"factored"` they are
computed from `features_fn` and the lm_head kernel without `[B, L-1, V]` logits
(`losses.uses_head_form`: the MSE for batches of at least `dim` tokens, the CE when
the vocabulary exceeds `ce_chunk`); `logits_fn` / `output_loss` always go through the
logits (what Gauss–Newton products need).
"""

import dataclasses

import jax
import jax.numpy as jnp

from lmopt import losses
from lmopt.config import LossConfig, ModelConfig
from lmopt.models import build_model


@dataclasses.dataclass(frozen=True)
class Workload:
  model_config: ModelConfig
  loss_config: LossConfig = dataclasses.field(default_factory=LossConfig)

  @property
  def model(self):
    return build_model(self.model_config)

  def init(self, rng):
    """Parameters from a PRNG key (pure; jit it at the call site)."""
    tokens = jnp.zeros((1, self.model_config.seq_len), jnp.int32)
    return self.model.init(rng, tokens)["params"]

  def logits_fn(self, params, inputs_BxL):
    return self.model.apply({"params": params}, inputs_BxL)[:, :-1]

  def features_fn(self, params, inputs_BxL):
    return self.model.apply({"params": params}, inputs_BxL, method="features")[:, :-1]

  def output_loss(self, logits, targets):
    cfg = self.loss_config
    return losses.per_token_output_loss(cfg.name, logits, targets, cfg.onehot_scale)

  def head_form(self, targets) -> bool:
    """Whether `per_token_loss` / `loss` skip the logits (see `losses.uses_head_form`)."""
    cfg, mc = self.loss_config, self.model_config
    return losses.uses_head_form(cfg.name, cfg.impl, mc.vocab_size, cfg.ce_chunk, targets.size,
                                 mc.dim)

  def _head_args(self, params, inputs, targets):
    cfg = self.loss_config
    return (cfg.name, self.features_fn(params, inputs), params["lm_head"]["kernel"], targets,
            cfg.onehot_scale, cfg.ce_chunk)

  def per_token_loss(self, params, inputs, targets):
    if self.head_form(targets):
      return losses.per_token_head_loss(*self._head_args(params, inputs, targets))
    return self.output_loss(self.logits_fn(params, inputs), targets)

  def loss(self, params, inputs, targets):
    if self.head_form(targets):
      return losses.mean_head_loss(*self._head_args(params, inputs, targets))
    return jnp.mean(self.per_token_loss(params, inputs, targets))

  def num_params(self, params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
