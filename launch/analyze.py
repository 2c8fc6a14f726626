"""Why gradient descent needs many steps here: curvature spectra and measured convergence.

  python -m launch.analyze --workdir=runs/analyze --dim=64
  python -m launch.analyze --workdir=runs/analyze_sweep --sweep --sweep_dims=64,128,256

For the model and data of the shared flags, at the initial parameters (`--seed`):

1. Lanczos (`--curvature` = ggn or hessian, on `--params`, one batch of `--batch_size`
   windows): the `--top_k` largest and smallest eigenvalues with residual bounds, and a
   stochastic-Lanczos-quadrature density; checked against the exact lm_head spectrum of
   the same batch.
2. The lm_head MSE problem on `--lm_head_windows` training windows (0: all): exact
   Hessian `H_D ⊗ I_V` spectrum and κ (float64), then steps to a relative excess loss
   `--epsilon`, predicted vs measured: GD with the optimal step `2/(λmax+λmin)`, heavy-ball
   momentum, AdamW (best of `--adamw_lrs`), exact Newton and Newton–CG (`--cg_iters`,
   `--cg_tol`, `--newton_damping`; Newton equals Gauss–Newton on a linear least-squares problem).
   Measured runs stop at `--max_steps` (`--adamw_steps` for AdamW); GD's exact count from the
   spectrum is reported as well, whatever the cap.
3. With `--sweep`: κ of the lm_head problem as `dim`, `vocab_size` and `seq_len` vary
   one at a time around the flags' values.

Writes `analysis.json`, `analysis.md` and `spectrum.png`; refuses a workdir that holds
them unless `--overwrite`. Bad input exits 2 with one line before anything is written.
"""

import dataclasses
import math
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags
from matplotlib.figure import Figure

from launch import flags as launch_flags
from launch import report, runs
from lmopt import io
from lmopt.analysis import convergence, lanczos, lm_head, operators
from lmopt.config import ConfigError, OptimizerConfig, require, require_positive
from lmopt.data.tokenizer import MIN_VOCAB
from lmopt.losses import next_token_split
from lmopt.optim import second_order
from lmopt.optim.registry import subset_keys

flags.DEFINE_enum("curvature", "ggn", operators.KINDS, "Operator for Lanczos: ggn or hessian.")
flags.DEFINE_integer("lanczos_iters", 64, "Lanczos steps for the extreme eigenvalues.")
flags.DEFINE_integer("top_k", 5, "Largest and smallest eigenvalues reported.")
flags.DEFINE_integer("slq_probes", 4, "Random probes of the spectral density estimate.")
flags.DEFINE_integer("slq_iters", 32, "Lanczos steps per density probe.")
flags.DEFINE_float("epsilon", 1e-3, "Target relative excess loss (f - f*) / (f0 - f*).")
flags.DEFINE_integer("lm_head_windows", 0, "Training windows of the lm_head problem (0: all).")
flags.DEFINE_list("adamw_lrs", ["1", "10", "100", "1000"], "AdamW learning rates tried on the "
                  "lm_head problem (the best is kept).")
flags.DEFINE_integer("max_steps", 20000, "Step cap of the measured lm_head runs.")
flags.DEFINE_integer("adamw_steps", 2000, "Step cap of each AdamW run.")
flags.DEFINE_float("newton_damping", 0.0, "Damping of Newton-CG on the lm_head problem (its "
                   "Hessian eigenvalues are ~1e-6, far below the training default of --damping).")
flags.DEFINE_bool("sweep", False, "Also report lm_head κ over dims, vocab sizes, seq lens.")
flags.DEFINE_list("sweep_dims", ["64", "128", "256"], "dim values of --sweep.")
flags.DEFINE_list("sweep_vocab_sizes", ["512", "1024", "2048"], "vocab_size values of --sweep.")
flags.DEFINE_list("sweep_seq_lens", ["32", "64", "128"], "seq_len values of --sweep.")

FLAGS = flags.FLAGS
OUTPUTS = ("analysis.json", "analysis.md", "spectrum.png")
SWEEPS = {"dim": "sweep_dims", "vocab_size": "sweep_vocab_sizes", "seq_len": "sweep_seq_lens"}


def _numbers(flag: str, kind):
  values = []
  for text in getattr(FLAGS, flag):
    try:
      value = kind(text)
    except ValueError:
      raise ConfigError(f"--{flag}={','.join(getattr(FLAGS, flag))}: {text!r} is not a "
                        f"{kind.__name__}") from None
    require(value > 0, f"--{flag}: {text} must be positive")
    values.append(value)
  require(values, f"--{flag} is empty; give a comma list")
  return values


def check_flags() -> dict:
  """Validates the analysis flags; returns the sweep values by field."""
  launch_flags.check_common()
  for flag in ("lanczos_iters", "top_k", "slq_probes", "slq_iters", "max_steps", "adamw_steps",
               "cg_iters"):
    require_positive(flag, getattr(FLAGS, flag))
  require(FLAGS.top_k <= FLAGS.lanczos_iters,
          f"--top_k={FLAGS.top_k} must not exceed --lanczos_iters={FLAGS.lanczos_iters}")
  require(0 < FLAGS.epsilon < 1, f"--epsilon={FLAGS.epsilon} must lie strictly between 0 and 1")
  require(FLAGS.newton_damping >= 0, f"--newton_damping={FLAGS.newton_damping} must be >= 0")
  require(FLAGS.lm_head_windows >= 0, f"--lm_head_windows={FLAGS.lm_head_windows} must be >= 0")
  require(FLAGS.loss == "mse", f"--loss={FLAGS.loss!r} is not accepted here; the lm_head "
          "analysis is the MSE least-squares problem, use --loss=mse")
  _numbers("adamw_lrs", float)
  sweeps = {field: _numbers(flag, int) for field, flag in SWEEPS.items()} if FLAGS.sweep else {}
  for vocab in sweeps.get("vocab_size", []):
    require(vocab >= MIN_VOCAB, f"--sweep_vocab_sizes: {vocab} is below the {MIN_VOCAB} ids "
            "every tokenizer needs")
  for seq_len in sweeps.get("seq_len", []):
    require(seq_len >= 2, f"--sweep_seq_lens: {seq_len} must be at least 2")
  return sweeps


# 1. Lanczos on the model's curvature ----------------------------------------------------


def curvature_spectrum(setup, params, keys) -> dict:
  """Extreme eigenvalues, an SLQ density and the lm_head cross-check on one batch."""
  inputs, targets = next_token_split(setup.batch_at(0))
  workload, start = setup.workload, time.time()
  size = operators.model_operator(workload, params, inputs, targets, FLAGS.curvature, keys).size
  require(max(FLAGS.lanczos_iters, FLAGS.slq_iters) <= size,
          f"--lanczos_iters/--slq_iters must not exceed the {size} parameters of --params")

  @jax.jit
  def spectra(params, inputs, targets, key):
    op = operators.model_operator(workload, params, inputs, targets, FLAGS.curvature, keys)
    head = operators.model_operator(workload, params, inputs, targets, "ggn", ("lm_head",))
    k1, k2, k3 = jax.random.split(key, 3)
    return (lanczos.extreme_eigenvalues(op.matvec, op.size, k1, FLAGS.lanczos_iters,
                                        FLAGS.top_k, op.dtype),
            lanczos.slq(op.matvec, op.size, k2, FLAGS.slq_iters, FLAGS.slq_probes, op.dtype),
            lanczos.extreme_eigenvalues(head.matvec, head.size, k3,
                                        min(FLAGS.lanczos_iters, head.size), 1, head.dtype))

  ext, quad, head_ext = jax.device_get(spectra(params, inputs, targets,
                                               jax.random.key(FLAGS.seed)))
  with jax.enable_x64(True):
    exact = lm_head.conditioning(lm_head.head_problem(
        lm_head.head_stats(workload, params, np.asarray(inputs))))
  bottom, top = float(ext.bottom[0]), float(ext.top[0])
  return {
      "kind": FLAGS.curvature, "params": FLAGS.params, "num_params": size,
      "batch_windows": int(inputs.shape[0]), "lanczos_iters": FLAGS.lanczos_iters,
      "top": ext.top.tolist(), "top_bounds": ext.top_bounds.tolist(),
      "bottom": ext.bottom.tolist(), "bottom_bounds": ext.bottom_bounds.tolist(),
      "kappa": top / bottom if bottom > 0 else None,  # a lower bound: Ritz values are inside
      # What GD with one step for all of --params faces on the lm_head block of this batch:
      "lm_head_kappa": exact.kappa, "lm_head_kappa_under_shared_step": top / exact.lmin,
      "slq": {"probes": FLAGS.slq_probes, "iters": FLAGS.slq_iters,
              "nodes": quad.values.tolist(), "weights": quad.weights.tolist()},
      "lm_head_check": {"lanczos_top": float(head_ext.top[0]), "exact_top": exact.lmax,
                        "relative_error": abs(float(head_ext.top[0]) / exact.lmax - 1)},
      "seconds": time.time() - start,
  }


# 2. The lm_head problem: exact spectrum, predicted vs measured steps --------------------


def _measure(name, tx, problem, w0, target, max_steps, predicted, predicted_rate, **settings):
  run = jax.jit(convergence.run_to_target, static_argnums=(0, 1, 6))
  start = time.time()
  out = jax.device_get(run(tx, lm_head.excess_loss, w0, problem.hessian, problem.solution,
                           target, max_steps))
  excess = np.asarray(out.losses[:int(out.steps) + 1], np.float64)
  relative = excess / excess[0]
  floor = 1e-13 * excess[0]
  return {
      "method": name, "predicted_steps": None if predicted in (None, math.inf) else predicted,
      "measured_steps": int(out.steps) if out.reached else None, "reached": bool(out.reached),
      "steps_run": int(out.steps), "final_relative_excess": float(relative[-1]),
      "observed_order": convergence.observed_order(excess, floor),
      "linear_rate": convergence.linear_rate(excess, floor), "predicted_rate": predicted_rate,
      "seconds": time.time() - start, "curve": relative.tolist(), **settings,
  }


def lm_head_analysis(setup, params) -> dict:
  windows = setup.data.train[:FLAGS.lm_head_windows or None]
  eps = FLAGS.epsilon
  with jax.enable_x64(True):
    start = time.time()
    problem = lm_head.head_problem(lm_head.head_stats(setup.workload, params, windows))
    cond = lm_head.conditioning(problem)
    w0 = jnp.asarray(params["lm_head"]["kernel"], jnp.float64)
    excess0 = float(lm_head.excess_loss(w0, problem.hessian, problem.solution))
    target = eps * excess0
    step = convergence.gd_step(cond.lmax, cond.lmin)
    rho = convergence.gd_rate(cond.kappa)
    hb_lr, hb_momentum = convergence.heavy_ball(cond.lmax, cond.lmin)
    root = math.sqrt(cond.kappa)
    cg_rate = 4 * ((root - 1) / (root + 1)) ** (2 * FLAGS.cg_iters)
    setup_seconds = time.time() - start
    methods = [
        _measure("gd", optax.sgd(step), problem, w0, target, FLAGS.max_steps,
                 convergence.gd_steps(cond.kappa, eps), rho**2, learning_rate=step),
        _measure("heavy_ball", optax.sgd(hb_lr, momentum=hb_momentum), problem, w0, target,
                 FLAGS.max_steps, convergence.heavy_ball_steps(cond.kappa, eps),
                 ((root - 1) / (root + 1)) ** 2, learning_rate=hb_lr, momentum=hb_momentum),
    ]
    adamw = [_measure("adamw", optax.adamw(lr, weight_decay=FLAGS.weight_decay), problem, w0,
                      target, FLAGS.adamw_steps, None, None, learning_rate=lr)
             for lr in _numbers("adamw_lrs", float)]
    best = min(adamw, key=lambda r: (not r["reached"], r["steps_run"], r["final_relative_excess"]))
    best["lr_sweep"] = {str(r["learning_rate"]): r["measured_steps"] for r in adamw}
    methods.append(best)
    methods.append(_measure("newton", lm_head.newton(problem), problem, w0, target, FLAGS.max_steps,
                            1, 0.0))
    newton_cg = second_order.newton(lm_head.excess_loss, damping=FLAGS.newton_damping,
                                    cg_iters=FLAGS.cg_iters, cg_tol=FLAGS.cg_tol)
    methods.append(_measure("newton_cg", newton_cg, problem, w0, target, FLAGS.max_steps,
                            convergence.newton_cg_steps(cond.kappa, FLAGS.cg_iters, eps),
                            cg_rate if cg_rate < 1 else None, cg_iters=FLAGS.cg_iters,
                            cg_tol=FLAGS.cg_tol, damping=FLAGS.newton_damping))
    gd_exact = lm_head.gd_steps_exact(problem, w0, step, eps)
    eigenvalues = np.asarray(problem.eigenvalues).tolist()
    optimum = float(problem.optimum)
  return {
      "windows": len(windows), "rows": len(windows) * (windows.shape[1] - 1),
      "dim": setup.workload.model_config.dim, "vocab": setup.workload.model_config.vocab_size,
      **cond._asdict(), "hessian_eigenvalues": eigenvalues,
      "initial_loss": optimum + excess0, "optimal_loss": optimum, "initial_excess": excess0,
      "epsilon": eps, "target_loss": optimum + target, "gd_step": step,
      "gd_predicted_steps": convergence.gd_steps(cond.kappa, eps),
      "gd_rule_of_thumb_steps": convergence.rule_of_thumb_steps(cond.kappa, eps),
      "gd_exact_steps": gd_exact, "setup_seconds": setup_seconds, "methods": methods,
  }


# 3. How κ moves with dim, vocab_size and seq_len ------------------------------------------


def sweep(base_model, base_data, sweeps: dict) -> list:
  rows, cache = [], {}
  for field, values in sweeps.items():
    for value in values:
      model = dataclasses.replace(base_model, **{field: value}).validate()
      data = base_data if field == "dim" else dataclasses.replace(base_data, **{field: value})
      key = (data.vocab_size, data.seq_len)
      if key not in cache:
        cache = {key: runs.prepare(model_config=model, data_config=data.validate())}
      setup = dataclasses.replace(cache[key], workload=dataclasses.replace(
          cache[key].workload, model_config=model))
      params = jax.jit(setup.workload.init)(jax.random.key(FLAGS.seed))
      windows = setup.data.train[:FLAGS.lm_head_windows or None]
      with jax.enable_x64(True):
        problem = lm_head.head_problem(lm_head.head_stats(setup.workload, params, windows))
        cond = lm_head.conditioning(problem)
        w0 = jnp.asarray(params["lm_head"]["kernel"], jnp.float64)
        exact = lm_head.gd_steps_exact(problem, w0, convergence.gd_step(cond.lmax, cond.lmin),
                                       FLAGS.epsilon)
      rows.append({"vary": field, "value": value, "dim": model.dim, "vocab_size": model.vocab_size,
                   "seq_len": model.seq_len, "rows": len(windows) * (model.seq_len - 1),
                   **cond._asdict(),
                   "gd_predicted_steps": convergence.gd_steps(cond.kappa, FLAGS.epsilon),
                   "gd_rule_of_thumb_steps": convergence.rule_of_thumb_steps(cond.kappa,
                                                                             FLAGS.epsilon),
                   "gd_exact_steps": exact})
  return rows


# Outputs ---------------------------------------------------------------------------------


def markdown(result: dict) -> str:
  spec, head = result["curvature"], result["lm_head"]
  gd = head["methods"][0]
  lines = [
      (f"# Curvature and convergence: {result['model']['name']}, dim {head['dim']}, "
      f"vocab {head['vocab']}, seq_len {result['model']['seq_len']}"), "",
      f"## lm_head MSE problem ({head['windows']} windows, {head['rows']} rows)", "",
      (f"Hessian `H_D ⊗ I_V`, `H_D = 2 XᵀX / (N V)`: λmax {head['lmax']:.4g}, "
      f"λmin {head['lmin']:.4g}, **κ = {head['kappa']:.4g}** (rank {head['rank']}/{head['dim']}). "
      f"Loss {head['initial_loss']:.6g} at init, optimum {head['optimal_loss']:.6g}; target: "
      f"excess ≤ ε = {head['epsilon']:g} of the initial excess."), "",
      (f"GD with the optimal step {head['gd_step']:.4g}: predicted ≤ {head['gd_predicted_steps']} "
      f"steps (κ/4·ln(1/ε) worst case; κ·ln(1/ε) = {head['gd_rule_of_thumb_steps']:.4g}), exact "
      f"count from the spectrum {report.cell(head['gd_exact_steps'])}, measured "
      f"{report.cell(gd['measured_steps'])} (cap {gd['steps_run'] if not gd['reached'] else '-'})."), "",
      *report.table_lines(head["methods"], ("method", "predicted_steps", "measured_steps", "reached",
                                "steps_run", "final_relative_excess", "observed_order",
                                "linear_rate", "predicted_rate", "learning_rate")), "",
      (f"## Lanczos on the {spec['kind']} ({spec['params']}, {spec['num_params']} parameters, "
      f"{spec['batch_windows']} windows, {spec['lanczos_iters']} steps)"), "",
      *report.table_lines([{"end": "top", **{str(i): v for i, v in enumerate(spec["top"])}},
               {"end": "bound", **{str(i): v for i, v in enumerate(spec["top_bounds"])}},
               {"end": "bottom", **{str(i): v for i, v in enumerate(spec["bottom"])}},
               {"end": "bound", **{str(i): v for i, v in enumerate(spec["bottom_bounds"])}}],
              ("end", *map(str, range(len(spec["top"]))))), "",
      (f"κ estimate (top/bottom Ritz value, a lower bound): {report.cell(spec['kappa'])}. lm_head "
       f"block of this batch: κ {spec['lm_head_kappa']:.4g} alone, "
       f"{spec['lm_head_kappa_under_shared_step']:.4g} under one step size for all of "
       f"{spec['params']} (top eigenvalue / lm_head λmin). Check: Lanczos top of the lm_head GGN "
      f"{spec['lm_head_check']['lanczos_top']:.6g} vs exact "
      f"{spec['lm_head_check']['exact_top']:.6g} (relative error "
      f"{spec['lm_head_check']['relative_error']:.2g})."), ""]
  if result.get("sweep"):
    lines += ["## κ of the lm_head problem across sizes", "",
              *report.table_lines(result["sweep"], ("vary", "dim", "vocab_size", "seq_len", "rows", "lmax",
                                        "lmin", "kappa", "rank", "gd_predicted_steps",
                                        "gd_exact_steps")), ""]
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  """SLQ density, exact lm_head eigenvalues, excess-loss curves and (sweep) κ by size."""
  spec, head, rows = result["curvature"], result["lm_head"], result.get("sweep")
  fig = Figure(figsize=(20 if rows else 15, 4.5))
  axes = fig.subplots(1, 4 if rows else 3)
  nodes, weights = np.asarray(spec["slq"]["nodes"]), np.asarray(spec["slq"]["weights"])
  low, high = min(nodes.min(), spec["bottom"][0]), max(nodes.max(), spec["top"][0])
  sigma = max(high - low, 1e-30) / 200
  grid = np.linspace(low - 5 * sigma, high + 5 * sigma, 1000)
  dens = lanczos.density(lanczos.Ritz(jnp.asarray(nodes), jnp.asarray(weights),
                                      jnp.zeros_like(nodes)), jnp.asarray(grid), sigma)
  axes[0].semilogy(grid, np.maximum(np.asarray(dens), 1e-12 / sigma))
  for value in spec["top"] + spec["bottom"]:
    axes[0].axvline(value, color="C3", alpha=0.3, lw=0.8)
  axes[0].set(title=f"SLQ density: {spec['kind']} ({spec['params']})", xlabel="eigenvalue",
              ylabel="density (Ritz values in red)")
  values = np.sort(np.asarray(head["hessian_eigenvalues"]))[::-1]
  axes[1].semilogy(np.arange(1, len(values) + 1), np.maximum(values, 1e-300), ".")
  axes[1].set(title=f"lm_head Hessian factor H_D: κ = {head['kappa']:.3g}", xlabel="index",
              ylabel="eigenvalue (each × V)")
  for method in head["methods"]:
    axes[2].semilogy(np.maximum(method["curve"], 1e-17), label=method["method"])
  axes[2].axhline(head["epsilon"], color="k", ls=":", lw=0.8)
  axes[2].set(title="lm_head: relative excess loss", xlabel="step", ylabel="(f - f*) / (f0 - f*)",
              xscale="symlog", xlim=(0, None))
  axes[2].legend(fontsize=8)
  if rows:
    for field in SWEEPS:
      part = [r for r in rows if r["vary"] == field]
      axes[3].loglog([r["value"] for r in part], [r["kappa"] for r in part], "o-", label=field)
    axes[3].set(title="lm_head κ across sizes", xlabel="value of the varied size", ylabel="κ")
    axes[3].legend(fontsize=8)
  for axis in axes:
    axis.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv):
  del argv
  sweeps = check_flags()
  workdir = os.path.abspath(FLAGS.workdir)
  io.check_workdir(workdir)
  existing = io.existing_outputs(workdir, OUTPUTS)
  require(not existing or FLAGS.overwrite,
          f"--workdir={workdir} already holds {', '.join(existing)}; pass --overwrite to replace")
  setup = runs.prepare()
  params = jax.jit(setup.workload.init)(jax.random.key(FLAGS.seed))
  keys = subset_keys(OptimizerConfig(params=FLAGS.params), params)
  result = {"model": dataclasses.asdict(setup.workload.model_config),
            "loss": dataclasses.asdict(setup.workload.loss_config),
            "data": dataclasses.asdict(launch_flags.data_config()), "seed": FLAGS.seed}
  result["curvature"] = curvature_spectrum(setup, params, keys)
  result["lm_head"] = lm_head_analysis(setup, params)
  if sweeps:
    result["sweep"] = sweep(setup.workload.model_config, launch_flags.data_config(), sweeps)

  text = markdown(result)
  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "analysis.json"), result)
  io.write_text_atomic(os.path.join(workdir, "analysis.md"), text)
  with tempfile.NamedTemporaryFile(dir=workdir, suffix=".png", delete=False) as tmp:
    plot(result, tmp.name)
  os.replace(tmp.name, os.path.join(workdir, "spectrum.png"))
  print(text)
  print(f"wrote {workdir}/analysis.json, analysis.md, spectrum.png")


if __name__ == "__main__":
  jax.config.parse_flags_with_absl()
  launch_flags.run(main)
