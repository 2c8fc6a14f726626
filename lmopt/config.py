"""Frozen configuration dataclasses shared by the library and the launchers.

The library never reads flags: `launch/` parses absl flags into these objects and
calls `validate()`, which raises `ConfigError` with one line naming the bad field
and the accepted values.
"""

import dataclasses

MODELS = ("linear_mixer", "masked_mixer", "transformer")
LOSSES = ("mse", "ce")
LOSS_IMPLS = ("factored", "direct")
TOKENIZERS = ("byte", "bpe")
DTYPES = ("float32", "float64")
SCHEDULES = ("constant", "cosine")
PRECONDITIONERS = ("none", "hutchinson")


class ConfigError(ValueError):
  """A user-facing configuration error (one line: what is wrong, what is accepted)."""


def require(condition: bool, message: str) -> None:
  """Raises `ConfigError(message)` unless `condition` holds."""
  if not condition:
    raise ConfigError(message)


def require_choice(flag: str, value: str, accepted) -> None:
  require(value in accepted, f"--{flag}={value!r} is not accepted; use one of {', '.join(accepted)}")


def require_positive(flag: str, value) -> None:
  require(value > 0, f"--{flag}={value} must be positive")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which model and its sizes. `dtype` is the parameter and compute dtype."""

  name: str = "linear_mixer"
  vocab_size: int = 512
  dim: int = 128
  depth: int = 2
  seq_len: int = 64
  num_heads: int = 4
  mlp_expansion: int = 4
  dtype: str = "float32"

  def validate(self) -> "ModelConfig":
    require_choice("model", self.name, MODELS)
    require_choice("dtype", self.dtype, DTYPES)
    for flag in ("vocab_size", "dim", "depth", "seq_len", "num_heads", "mlp_expansion"):
      require_positive(flag, getattr(self, flag))
    require(self.seq_len >= 2, f"--seq_len={self.seq_len} must be at least 2 (next-token targets)")
    if self.name == "transformer":
      require(self.dim % self.num_heads == 0,
              f"--dim={self.dim} must be divisible by --num_heads={self.num_heads}")
    return self


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """`mse` against `onehot_scale * onehot(target)` (mean over vocab) or `ce`.

  `impl="factored"` computes the loss from lm_head features and kernel without the
  `[tokens, vocab]` logits: the MSE in factored form (for batches of at least `dim`
  tokens, where it is the cheaper form), the CE by a scan over vocabulary
  chunks of `ce_chunk` columns when `0 < ce_chunk < vocab` (else from logits);
  `"direct"` always goes through the logits.
  """

  name: str = "mse"
  onehot_scale: float = 1000.0
  impl: str = "factored"
  ce_chunk: int = 1024

  def validate(self) -> "LossConfig":
    require_choice("loss", self.name, LOSSES)
    require_choice("loss_impl", self.impl, LOSS_IMPLS)
    require_positive("onehot_scale", self.onehot_scale)
    require(self.ce_chunk >= 0, f"--ce_chunk={self.ce_chunk} must be >= 0 (0: CE from logits)")
    return self


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Corpus, tokenizer and batching. `batch_size=0` means full batch."""

  dataset: str = "builtin"
  tokenizer: str = "bpe"
  vocab_size: int = 512
  seq_len: int = 64
  batch_size: int = 32
  valid_fraction: float = 0.1
  builtin_stories: int = 2000
  seed: int = 0

  def validate(self) -> "DataConfig":
    require_choice("tokenizer", self.tokenizer, TOKENIZERS)
    kind = self.dataset.split(":", 1)[0]
    require(kind in ("builtin", "text", "hf") and (kind == "builtin") == (self.dataset == "builtin"),
            f"--dataset={self.dataset!r} is not accepted; use builtin, text:PATH or hf:NAME")
    require_positive("vocab_size", self.vocab_size)
    require(self.seq_len >= 2, f"--seq_len={self.seq_len} must be at least 2 (next-token targets)")
    require(self.batch_size >= 0, f"--batch_size={self.batch_size} must be positive (or 0: full batch)")
    require(0.0 < self.valid_fraction < 1.0,
            f"--valid_fraction={self.valid_fraction} must lie strictly between 0 and 1")
    require_positive("builtin_stories", self.builtin_stories)
    return self


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Hyperparameters of every registered optimizer; each builder reads what it needs.

  `params` selects the parameter subset a method acts on (`all` or a top-level
  module name such as `lm_head`); the others are held fixed by that optimizer.
  """

  name: str = "adamw"
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  warmup_steps: int = 0
  schedule: str = "constant"
  total_steps: int = 100
  momentum: float = 0.9
  damping: float = 1e-3
  cg_iters: int = 20
  cg_tol: float = 1e-5
  loss_constant: float = 0.0
  max_step_norm: float = 0.0
  params: str = "all"
  solve_method: str = "pinv"
  ridge: float = 0.0
  rcond: float = 1e-6
  newton_form: str = "min_norm"  # newton_root*: "min_norm" or "matrix_pinv" (research's literal)
  backtrack_steps: int = 0  # newton_root*/newton_system: halvings of the step on |f| (0 = off)
  cg_warm_start: float = 0.0  # newton/gauss_newton/LM: CG starts from this x the last step
  preconditioner: str = "none"  # newton/gauss_newton/LM CG: "none" or "hutchinson" (Jacobi)

  def validate(self) -> "OptimizerConfig":
    require_choice("schedule", self.schedule, SCHEDULES)
    require_positive("learning_rate", self.learning_rate)
    require(self.weight_decay >= 0, f"--weight_decay={self.weight_decay} must be >= 0")
    require(self.damping >= 0, f"--damping={self.damping} must be >= 0")
    require_positive("cg_iters", self.cg_iters)
    require(self.warmup_steps >= 0, f"--warmup_steps={self.warmup_steps} must be >= 0")
    require(self.max_step_norm >= 0, f"--max_step_norm={self.max_step_norm} must be >= 0")
    require(self.ridge >= 0, f"--ridge={self.ridge} must be >= 0")
    require(0 <= self.cg_warm_start <= 1,
            f"--cg_warm_start={self.cg_warm_start} must lie in [0, 1]")
    require_choice("preconditioner", self.preconditioner, PRECONDITIONERS)
    return self
