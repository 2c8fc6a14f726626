"""Shared absl flags of every launcher (DESIGN.md's command-line contract).

`run(main)` parses flags so that any bad value — an unknown name, a non-positive
size, a missing file, an unwritable workdir — ends with one line on stderr naming
the flag and what is accepted, and exit code 2, before anything is written.
"""

import sys

from absl import app, flags, logging

from lmopt import config as cfg
from lmopt.optim import OPTIMIZERS

FLAGS = flags.FLAGS

flags.DEFINE_enum("model", "linear_mixer", cfg.MODELS, "Model architecture.")
flags.DEFINE_integer("dim", 64, "Model width (lm_head input size).")
flags.DEFINE_integer("depth", 2, "Number of blocks.")
flags.DEFINE_integer("seq_len", 64, "Tokens per sequence.")
flags.DEFINE_integer("num_heads", 4, "Attention heads (transformer).")
flags.DEFINE_enum("dtype", "float32", cfg.DTYPES, "Parameter/compute dtype.")
flags.DEFINE_integer("batch_size", 32, "Sequences per step; 0 = the full training set.")
flags.DEFINE_integer("vocab_size", 512, "Model vocabulary (the BPE tokenizer is trained to it).")
flags.DEFINE_enum("tokenizer", "bpe", cfg.TOKENIZERS, "Tokenizer.")
flags.DEFINE_string("dataset", "builtin", "builtin, text:PATH (file or folder of .txt) or hf:NAME.")
flags.DEFINE_integer("builtin_stories", 2000, "Stories generated for the builtin corpus.")
flags.DEFINE_float("valid_fraction", 0.1, "Fraction of sequences held out for validation.")
flags.DEFINE_enum("loss", "mse", cfg.LOSSES, "mse (against scaled one-hots) or ce.")
flags.DEFINE_enum("loss_impl", cfg.LossConfig.impl, cfg.LOSS_IMPLS,
                  "MSE computed from lm_head features (factored) or from logits (direct).")
flags.DEFINE_integer("ce_chunk", cfg.LossConfig.ce_chunk,
                     "CE vocabulary chunk for --loss_impl=factored (0: CE from the logits).")
flags.DEFINE_float("onehot_scale", 1000.0, "Scale s of the one-hot MSE targets.")
flags.DEFINE_integer("steps", 50, "Optimizer steps.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data split and batch order.")
flags.DEFINE_string("workdir", None, "Output directory (created if missing).")
flags.DEFINE_bool("overwrite", False, "Replace results already in --workdir.")
flags.DEFINE_enum("optimizer", "adamw", OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", 1e-3, "Learning rate of first-order methods.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
flags.DEFINE_integer("warmup_steps", 0, "Linear warmup steps.")
flags.DEFINE_enum("schedule", "constant", cfg.SCHEDULES, "Learning-rate schedule after warmup.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum (0 = plain gradient descent).")
flags.DEFINE_float("damping", 1e-3, "Initial damping lambda of second-order methods.")
flags.DEFINE_integer("cg_iters", 20, "Conjugate-gradient iteration cap.")
flags.DEFINE_float("cg_tol", 1e-5, "Conjugate-gradient relative residual tolerance.")
flags.DEFINE_float("loss_constant", 0.0, "c of Newton root finding: solve L(theta) = c.")
flags.DEFINE_float("max_step_norm", 0.0, "Cap on the update norm (0 = no cap).")
flags.DEFINE_enum("newton_form", cfg.OptimizerConfig.newton_form, ("min_norm", "matrix_pinv"),
                  "Newton root step: minimal-norm, or the research's pseudo-inverse of the "
                  "gradient matrix.")
flags.DEFINE_integer("backtrack_steps", 0, "Newton root: halvings of the step while |f| grows "
                     "(0 = off).")
flags.DEFINE_float("cg_warm_start", 0.0, "Newton-CG/GN/LM: start CG from this x the previous "
                   "step (0 = from zero).")
flags.DEFINE_enum("preconditioner", "none", cfg.PRECONDITIONERS,
                  "Newton-CG/GN/LM: diagonal CG preconditioner (hutchinson = Jacobi on a "
                  "Hutchinson estimate of the curvature diagonal).")
flags.DEFINE_string("params", "all", "Parameters a method acts on: all, or e.g. lm_head.")


def model_config() -> cfg.ModelConfig:
  return cfg.ModelConfig(name=FLAGS.model, vocab_size=FLAGS.vocab_size, dim=FLAGS.dim,
                         depth=FLAGS.depth, seq_len=FLAGS.seq_len, num_heads=FLAGS.num_heads,
                         dtype=FLAGS.dtype).validate()


def loss_config() -> cfg.LossConfig:
  return cfg.LossConfig(name=FLAGS.loss, onehot_scale=FLAGS.onehot_scale,
                        impl=FLAGS.loss_impl, ce_chunk=FLAGS.ce_chunk).validate()


def data_config() -> cfg.DataConfig:
  return cfg.DataConfig(dataset=FLAGS.dataset, tokenizer=FLAGS.tokenizer,
                        vocab_size=FLAGS.vocab_size, seq_len=FLAGS.seq_len,
                        batch_size=FLAGS.batch_size, valid_fraction=FLAGS.valid_fraction,
                        builtin_stories=FLAGS.builtin_stories, seed=FLAGS.seed).validate()


def optimizer_config(name: str, **overrides) -> cfg.OptimizerConfig:
  fields = ("learning_rate", "weight_decay", "warmup_steps", "schedule", "momentum", "damping",
            "cg_iters", "cg_tol", "loss_constant", "max_step_norm", "params", "newton_form",
            "backtrack_steps", "cg_warm_start", "preconditioner")
  settings = {"name": name, "total_steps": FLAGS.steps, **{f: FLAGS[f].value for f in fields}}
  settings.update(overrides)
  return cfg.OptimizerConfig(**settings).validate()


def check_common(default_workdir=None) -> None:
  """Checks of the shared flags that absl's types do not express."""
  cfg.require(FLAGS.workdir is not None or default_workdir is not None,
              "--workdir is required (the output directory)")
  cfg.require_positive("steps", FLAGS.steps)


def fail(message: str) -> None:
  sys.stderr.write(f"error: {message}\n")
  sys.exit(2)


def _parse(argv):
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(str(e).splitlines()[0])


def run(main, argv=None) -> None:
  """`app.run(main)` with bad flags and ConfigErrors reported in one line, exit code 2."""
  def guarded(argv):
    logging.set_verbosity(logging.WARNING)  # orbax and jax log every save at INFO
    if len(argv) > 1:
      fail(f"unexpected positional arguments {argv[1:]}; every setting is a --flag")
    try:
      main(argv)
    except cfg.ConfigError as e:
      fail(str(e))
  app.run(guarded, argv=argv, flags_parser=_parse)
