"""Lanczos cost and accuracy, and lm_head κ with GD predicted vs measured steps.

  python -m benchmarks.analysis            # dense n=1000/2000, linear mixer dim 64/128/256
  python -m benchmarks.analysis --small    # seconds on 2 CPUs

Three tables, written to benchmarks/results/analysis.{json,md}:

1. Lanczos (64 steps, float64) vs `numpy.linalg.eigh` on a dense symmetric matrix with a
   decaying spectrum: median seconds (after a warm-up) and the relative error of the top 5.
2. One Lanczos run on the linear mixer's GGN and Hessian (all parameters, one batch):
   median milliseconds per curvature product, and their ratio.
3. The lm_head MSE problem at init on the builtin corpus: κ of `XᵀX`, GD steps to a
   relative excess loss of 1e-3 with the optimal step — predicted worst case (κ/4·ln 1/ε),
   rule of thumb κ·ln 1/ε, exact from the spectrum, measured by running GD.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from lmopt import data as lmdata
from lmopt.analysis import convergence, lanczos, lm_head, operators
from lmopt.config import DataConfig, LossConfig, ModelConfig
from lmopt.losses import next_token_split
from lmopt.workload import Workload

EPS = 1e-3


def dense_vs_lanczos(n: int, repeats: int) -> dict:
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  values = 1.0 / np.arange(1, n + 1) ** 1.5
  a = (q * values) @ q.T
  with jax.enable_x64(True):
    a_j = jnp.asarray(a)
    run = jax.jit(lambda a, key: lanczos.extreme_eigenvalues(lambda v: a @ v, n, key, 64, 5,
                                                             jnp.float64))
    lanczos_s = common.median_seconds(run, a_j, jax.random.key(0), repeats=repeats)
    top = np.asarray(run(a_j, jax.random.key(0)).top)
  dense_s = common.median_seconds(np.linalg.eigh, a, repeats=repeats)
  exact = np.sort(np.linalg.eigh(a)[0])[::-1][:5]
  return {"n": n, "lanczos_seconds": lanczos_s, "eigh_seconds": dense_s,
          "eigh_over_lanczos": dense_s / lanczos_s,
          "top5_max_relative_error": float(np.max(np.abs(top / exact - 1)))}


def product_cost(dim: int, vocab: int, seq_len: int, batch: int, repeats: int) -> dict:
  workload = Workload(ModelConfig(dim=dim, vocab_size=vocab, seq_len=seq_len, depth=2),
                      LossConfig())
  params = workload.init(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (batch, seq_len), 0, vocab)
  inputs, targets = next_token_split(tokens)
  out = {"dim": dim, "vocab": vocab, "seq_len": seq_len, "batch": batch, "steps": 32}
  for kind in operators.KINDS:
    @jax.jit
    def run(params, inputs, targets, kind=kind):
      op = operators.model_operator(workload, params, inputs, targets, kind)
      return lanczos.extreme_eigenvalues(op.matvec, op.size, jax.random.key(2), 32, 1)
    seconds = common.median_seconds(run, params, inputs, targets, repeats=repeats)
    out[f"{kind}_ms_per_product"] = 1e3 * seconds / 32
  out["hessian_over_ggn"] = out["hessian_ms_per_product"] / out["ggn_ms_per_product"]
  return out


def lm_head_steps(dims, vocab: int, seq_len: int, stories: int) -> list:
  data = lmdata.load_data(DataConfig(vocab_size=vocab, seq_len=seq_len, builtin_stories=stories))
  rows = []
  for dim in dims:
    workload = Workload(ModelConfig(dim=dim, vocab_size=vocab, seq_len=seq_len, depth=2),
                        LossConfig())
    params = jax.jit(workload.init)(jax.random.key(0))
    with jax.enable_x64(True):
      problem = lm_head.head_problem(lm_head.head_stats(workload, params, data.train))
      cond = lm_head.conditioning(problem)
      w0 = jnp.asarray(params["lm_head"]["kernel"], jnp.float64)
      step = convergence.gd_step(cond.lmax, cond.lmin)
      target = EPS * lm_head.excess_loss(w0, problem.hessian, problem.solution)
      start = time.perf_counter()
      run = convergence.run_to_target(optax.sgd(step), lm_head.excess_loss, w0, problem.hessian,
                                      problem.solution, target, 50_000)
      seconds = time.perf_counter() - start
    rows.append({"dim": dim, "vocab": vocab, "seq_len": seq_len, "rows": int(data.train.size
                 - len(data.train)), "kappa": cond.kappa,
                 "gd_predicted_steps": convergence.gd_steps(cond.kappa, EPS),
                 "gd_rule_of_thumb_steps": round(convergence.rule_of_thumb_steps(cond.kappa, EPS)),
                 "gd_exact_steps": lm_head.gd_steps_exact(problem, w0, step, EPS),
                 "gd_measured_steps": int(run.steps) if run.reached else None,
                 "gd_seconds": seconds})
  return rows


def main():
  args = common.parse_args(__doc__.splitlines()[0])
  if args.small:
    dense = [dense_vs_lanczos(300, args.repeats)]
    products = [product_cost(32, 300, 16, 8, args.repeats)]
    head = lm_head_steps([16, 32], 300, 16, 200)
  else:
    dense = [dense_vs_lanczos(n, args.repeats) for n in (1000, 2000)]
    products = [product_cost(64, 512, 64, 32, args.repeats)]
    head = lm_head_steps([64, 128, 256], 512, 64, 2000)
  md = ("Lanczos (64 steps, float64) vs dense `numpy.linalg.eigh`, decaying spectrum:\n\n"
        + common.markdown(dense, list(dense[0]))
        + "\nCurvature products inside one Lanczos run (linear mixer, all parameters):\n\n"
        + common.markdown(products, list(products[0]))
        + f"\nlm_head MSE problem at init (builtin corpus): GD steps to a relative excess loss "
        f"of {EPS:g} with the optimal step 2/(λmax+λmin):\n\n"
        + common.markdown(head, list(head[0])))
  command = "python -m benchmarks.analysis" + (" --small" if args.small else "")
  common.save("analysis", dense + products + head, md, command,
              {"dense_vs_lanczos": dense, "curvature_products": products, "lm_head_gd_steps": head})


if __name__ == "__main__":
  main()
