"""Train-step throughput of each model with AdamW, and the untrained MSE level.

  python -m benchmarks.throughput            # dim 128, seq_len 64, batch 32, vocab 512
  python -m benchmarks.throughput --small

Times the jitted, donated train step of `lmopt.train` (what `launch.train` runs) on
real builtin-corpus batches; reports tokens/s and the step time relative to the
linear mixer. Also measures the initial MSE (s=1000) against s²/V for V=512, 4096.
"""

import jax
import numpy as np

from benchmarks import common
from lmopt import sharding, train
from lmopt.config import DataConfig, LossConfig, ModelConfig, OptimizerConfig
from lmopt.data import load_data
from lmopt.losses import next_token_split
from lmopt.optim import build_optimizer
from lmopt.workload import Workload

MODELS = ("linear_mixer", "masked_mixer", "transformer")


def step_seconds(model_config, tokens, repeats):
  workload = Workload(model_config, LossConfig("mse", 1000.0))
  mesh = sharding.data_mesh()
  tx = build_optimizer(OptimizerConfig(name="adamw"), workload,
                       jax.eval_shape(workload.init, jax.random.key(0)))
  state = train.init_state(workload, tx, 0, mesh)
  step = train.make_train_step(workload, tx)
  batch = sharding.put_batch(tokens, mesh)
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], batch)
    return metrics["loss"]

  return common.median_seconds(run, repeats=repeats), workload.num_params(state.params)


def initial_mse(vocab_size, dim, seq_len, seed=0):
  data = load_data(DataConfig(vocab_size=vocab_size, seq_len=seq_len, batch_size=32,
                              builtin_stories=300, seed=seed))
  workload = Workload(ModelConfig(vocab_size=vocab_size, dim=dim, seq_len=seq_len),
                      LossConfig("mse", 1000.0))
  params = workload.init(jax.random.key(seed))
  return float(workload.loss(params, *next_token_split(data.valid[:64])))


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv)
  dim, seq_len, batch, vocab = (32, 16, 8, 300) if args.small else (128, 64, 32, 512)
  data = load_data(DataConfig(vocab_size=vocab, seq_len=seq_len, batch_size=batch,
                              builtin_stories=300))
  tokens = np.asarray(data.batches.batch(0))
  rows = []
  for name in MODELS:
    config = ModelConfig(name=name, vocab_size=vocab, dim=dim, depth=2, seq_len=seq_len)
    seconds, num_params = step_seconds(config, tokens, args.repeats)
    rows.append({"model": name, "num_params": num_params, "step_ms": 1e3 * seconds,
                 "tokens_per_s": batch * (seq_len - 1) / seconds})
  for row in rows:
    row["step_vs_linear_mixer"] = row["step_ms"] / rows[0]["step_ms"]
  levels = [{"vocab": v, "initial_mse": initial_mse(v, dim, seq_len), "s2_over_V": 1e6 / v}
            for v in (512, 4096)]
  for level in levels:
    level["ratio"] = level["initial_mse"] / level["s2_over_V"]
  table = (f"AdamW train step, dim {dim}, seq_len {seq_len}, batch {batch}, vocab {vocab}:\n\n"
           + common.markdown(rows, ["model", "num_params", "step_ms", "tokens_per_s",
                                    "step_vs_linear_mixer"])
           + "\nUntrained linear mixer, MSE with onehot_scale 1000, vs s²/V:\n\n"
           + common.markdown(levels, ["vocab", "initial_mse", "s2_over_V", "ratio"]))
  command = "python -m benchmarks.throughput" + (" --small" if args.small else "")
  common.save("throughput", rows, table, command, {"initial_mse": levels})


if __name__ == "__main__":
  main()
