"""Train-step gradient time and memory: factored vs direct MSE, chunked vs direct CE.

For each vocabulary size, times `jax.jit(jax.value_and_grad(workload.loss))` of a
depth-1 linear mixer (the backbone is cheap, so the step is dominated by the loss head)
under `--loss_impl=direct` and the logits-free form (`factored` MSE; `factored` CE =
vocabulary chunks of `min(1024, V/4)` columns). Times are medians over `--repeats`
runs after one warm-up (`block_until_ready`); memory is XLA's buffer assignment of the
compiled step (`memory_analysis()`: temporaries, and arguments + outputs + temporaries).
`rel_err` is `|loss_impl − loss_direct| / loss_direct` in float32 at the initial parameters.

  python -m benchmarks.losses            # dim 256, 16384 tokens, vocab 512/4096/16384
  python -m benchmarks.losses --small    # dim 64, 2048 tokens, vocab 512/4096 (seconds)
"""

import jax

from benchmarks import common
from lmopt.config import LossConfig, ModelConfig
from lmopt.losses import next_token_split
from lmopt.workload import Workload

CE_CHUNK = 1024
MIB = 2.0**20
COLUMNS = ["loss", "impl", "vocab", "dim", "tokens", "chunk", "step_ms", "speedup", "temp_mib",
           "total_mib", "memory_ratio", "rel_err"]


def _memory_mib(fn, args) -> dict:
  """XLA's buffer assignment of the compiled step: temporaries, and all live buffers."""
  m = jax.jit(fn).lower(*args).compile().memory_analysis()
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return {"temp_mib": m.temp_size_in_bytes / MIB, "total_mib": total / MIB}


def measure(loss: str, impl: str, vocab: int, dim: int, batch: int, seq_len: int, chunk: int,
            repeats: int) -> dict:
  """Time, memory and loss value of one gradient step at the initial parameters."""
  model = ModelConfig(name="linear_mixer", vocab_size=vocab, dim=dim, depth=1, seq_len=seq_len)
  workload = Workload(model, LossConfig(name=loss, impl=impl, ce_chunk=chunk))
  params = jax.jit(workload.init)(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (batch, seq_len), 0, vocab)
  args = (params, *next_token_split(tokens))
  grad_fn = jax.value_and_grad(workload.loss)
  step = jax.jit(grad_fn)
  fast = impl == "factored"
  return {"loss": loss, "impl": ("chunked" if loss == "ce" else impl) if fast else impl,
          "vocab": vocab, "dim": dim, "tokens": batch * (seq_len - 1),
          "chunk": chunk if loss == "ce" and fast else "-",
          "step_ms": 1e3 * common.median_seconds(step, *args, repeats=repeats),
          "value": float(step(*args)[0]), **_memory_mib(grad_fn, args)}


def run(vocabs, dim: int, batch: int, seq_len: int, repeats: int) -> list:
  """Direct and logits-free rows for each loss and vocabulary, with their ratios."""
  rows = []
  for loss in ("mse", "ce"):
    for vocab in vocabs:
      chunk = min(CE_CHUNK, vocab // 4)
      direct, fast = (measure(loss, impl, vocab, dim, batch, seq_len, chunk, repeats)
                      for impl in ("direct", "factored"))
      fast["speedup"] = direct["step_ms"] / fast["step_ms"]
      fast["memory_ratio"] = direct["total_mib"] / fast["total_mib"]
      fast["rel_err"] = abs(fast["value"] - direct["value"]) / abs(direct["value"])
      rows += [direct, fast]
  return rows


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv)
  if args.small:
    vocabs, dim, batch, seq_len = (512, 4096), 64, 16, 129
  else:
    vocabs, dim, batch, seq_len = (512, 4096, 16384), 256, 64, 257
  rows = run(vocabs, dim, batch, seq_len, args.repeats)
  intro = ("Gradient step (`jax.value_and_grad(workload.loss)`, jitted) of a depth-1 linear "
           "mixer, float32; speedup and memory_ratio = direct / logits-free (total = arguments "
           "+ outputs + temporaries of the compiled step); rel_err = |loss − direct| / direct. "
           f"CE chunk = min({CE_CHUNK}, V/4).\n\n")
  command = "python -m benchmarks.losses" + (" --small" if args.small else "")
  common.save("losses", rows, intro + common.markdown(rows, COLUMNS), command)


if __name__ == "__main__":
  main()
