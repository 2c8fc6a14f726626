"""Curvature-product cost and Newton / Gauss-Newton / LM steps-to-target against AdamW.

  python -m benchmarks.second_order           # products at dim 128; race at dim 64, 1000 AdamW steps
  python -m benchmarks.second_order --small   # seconds

1. Cost of one Hessian-vector product (jvp of grad) and one GGN-vector product
   (jvp + closed-form H_ℓ + vjp), each from scratch, relative to one gradient
   (value_and_grad), per model, CE loss; plus the marginal cost of one more product
   inside CG (the linearisation reused), all timed in the same run.
2. Full-batch race on builtin-corpus windows: AdamW (best of a learning-rate sweep)
   for N steps sets the target loss; `newton`, `gauss_newton`, `levenberg_marquardt`
   (all parameters, registry defaults but `cg_iters`) run until they reach it.
   Steps and wall time (compilation excluded) of `lmopt.train.make_train_step`.
3. Observed convergence order of `exact_newton` on L2-regularised softmax regression
   (float64): `q_k = log(e_{k+1}/e_k) / log(e_k/e_{k-1})`, `e_k = ‖∇L(θ_k)‖`.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from lmopt import sharding, train
from lmopt.config import DataConfig, LossConfig, ModelConfig, OptimizerConfig
from lmopt.data import load_data
from lmopt.losses import next_token_split
from lmopt.optim import build_optimizer, curvature, second_order
from lmopt.workload import Workload

MODELS = ("linear_mixer", "masked_mixer", "transformer")
SECOND_ORDER = ("newton", "gauss_newton", "levenberg_marquardt")
ADAMW_LRS = (3e-3, 1e-2, 3e-2, 1e-1)


def product_costs(model, tokens, vocab, dim, repeats):
  """Seconds of grad / HVP / GGN-vp and of 10 extra products inside CG, as ratios to grad."""
  seq_len = tokens.shape[1]
  workload = Workload(ModelConfig(name=model, vocab_size=vocab, dim=dim, depth=2,
                                  seq_len=seq_len), LossConfig("ce"))
  params = jax.jit(workload.init)(jax.random.key(0))
  inputs, targets = next_token_split(jnp.asarray(tokens))
  v = jax.tree.map(lambda x: jnp.ones_like(x) * 1e-3, params)
  out_hvp = curvature.output_hessian_vp("ce")
  ggn = lambda p: curvature.ggn_operator(workload.logits_fn, workload.output_loss, out_hvp, p,
                                         inputs, targets)
  hess = lambda p: curvature.hessian_operator(workload.loss, p, inputs, targets)

  def repeated(operator, count):
    """`count` chained products from one linearisation (what CG does)."""
    def run(p, v):
      op = operator(p)
      return jax.lax.fori_loop(0, count, lambda _, u: op.matvec(u), v)
    return jax.jit(run)

  fns = {
      "grad": jax.jit(lambda p: jax.value_and_grad(workload.loss)(p, inputs, targets)),
      "hvp": jax.jit(lambda p, v: curvature.hvp(workload.loss, p, v, inputs, targets)),
      "ggn_vp": jax.jit(lambda p, v: curvature.ggn_vp(workload.logits_fn, workload.output_loss,
                                                      out_hvp, p, v, inputs, targets)),
  }
  t = {"grad": common.median_seconds(fns["grad"], params, repeats=repeats)}
  for name in ("hvp", "ggn_vp"):
    t[name] = common.median_seconds(fns[name], params, v, repeats=repeats)
  for name, op in (("hvp", hess), ("ggn_vp", ggn)):
    one, eleven = (common.median_seconds(repeated(op, n), params, v, repeats=repeats)
                   for n in (1, 11))
    t[f"{name}_in_cg"] = max(eleven - one, 0.0) / 10
  return {"model": model, "num_params": workload.num_params(params),
          "grad_ms": 1e3 * t["grad"],
          **{f"{k}/grad": t[k] / t["grad"] for k in ("hvp", "ggn_vp", "hvp_in_cg", "ggn_vp_in_cg")}}


def trajectory(workload, config, tokens, max_steps, target=None):
  """Losses `L(θ_0..θ_k)` and cumulative seconds of `make_train_step`, stopping at `target`."""
  mesh = sharding.data_mesh()
  tx = build_optimizer(config, workload, jax.eval_shape(workload.init, jax.random.key(0)))
  step = train.make_train_step(workload, tx)
  batch = sharding.put_batch(tokens, mesh)
  jax.block_until_ready(step(train.init_state(workload, tx, 0, mesh), batch))  # compile
  state = train.init_state(workload, tx, 0, mesh)
  losses, seconds, elapsed = [], [0.0], 0.0
  for k in range(max_steps + 1):
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    loss = float(metrics["loss"])  # L(θ_k), before the k-th update
    elapsed += time.perf_counter() - t0
    losses.append(loss)
    if (target is not None and loss <= target) or not np.isfinite(loss):
      break
    seconds.append(elapsed)
  return np.array(losses), np.array(seconds[:len(losses)]), state


def race(model, loss, tokens, vocab, dim, adamw_steps, max_steps, cg_iters, lrs):
  """Rows: AdamW's best lr and each second-order method's steps/seconds to AdamW's loss."""
  workload = Workload(ModelConfig(name=model, vocab_size=vocab, dim=dim, depth=2,
                                  seq_len=tokens.shape[1]), LossConfig(loss))
  sweep = {}
  for lr in lrs:
    config = OptimizerConfig(name="adamw", learning_rate=lr, total_steps=adamw_steps)
    sweep[lr] = trajectory(workload, config, tokens, adamw_steps)
  best_lr = min(sweep, key=lambda lr: sweep[lr][0][-1] if np.isfinite(sweep[lr][0][-1]) else np.inf)
  adamw_losses, adamw_seconds, _ = sweep[best_lr]
  target = float(adamw_losses[-1])
  first = int(np.argmax(adamw_losses <= target))
  base = {"model": model, "loss": loss, "target": target, "initial": float(adamw_losses[0])}
  rows = [{**base, "optimizer": f"adamw (lr={best_lr:g})", "steps": first,
           "seconds": float(adamw_seconds[first]), "step_ratio": 1.0, "time_ratio": 1.0}]
  for name in SECOND_ORDER:
    config = OptimizerConfig(name=name, cg_iters=cg_iters)
    losses, seconds, state = trajectory(workload, config, tokens, max_steps, target)
    reached = bool(losses[-1] <= target)
    steps = len(losses) - 1
    diag = state.opt_state[0]
    rows.append({**base, "optimizer": name, "steps": steps if reached else f">{max_steps}",
                 "seconds": float(seconds[-1]), "final": float(losses[-1]),
                 "step_ratio": steps / max(first, 1) if reached else float("nan"),
                 "time_ratio": float(seconds[-1] / adamw_seconds[first]) if reached else float("nan"),
                 "rejected": int(diag.rejected), "neg_curv": int(diag.negative_curvature),
                 "damping": float(diag.damping)})
  return rows


def softmax_regression_orders():
  """Gradient norms and observed orders of exact Newton on L2 softmax regression (float64)."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    x, y = jnp.asarray(rng.normal(size=(200, 8))), jnp.asarray(rng.integers(0, 5, size=200))

    def loss_fn(p, inputs, targets):
      logits = inputs @ p["w"]
      ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[:, None], 1)[:, 0]
      return jnp.mean(ce) + 0.01 * jnp.sum(p["w"] ** 2)

    tx = second_order.exact_newton(loss_fn)
    params = {"w": jnp.zeros((8, 5))}
    state = tx.init(params)
    update = jax.jit(lambda p, s: tx.update(None, s, p, inputs=x, targets=y))
    grad_norm = jax.jit(lambda p: optax.tree.norm(jax.grad(loss_fn)(p, x, y)))
    norms = [float(grad_norm(params))]
    for _ in range(10):
      updates, state = update(params, state)
      params = optax.apply_updates(params, updates)
      norms.append(float(grad_norm(params)))
  e = [n for n in norms if n > 1e-14]
  orders = [float(np.log(e[k + 1] / e[k]) / np.log(e[k] / e[k - 1])) for k in range(1, len(e) - 1)]
  return norms, orders


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv)
  if args.small:
    sizes = {"vocab": 300, "product_dim": 32, "seq": 16, "batch": 4, "race_dim": 16, "adamw_steps": 200,
                 "max_steps": 40, "cg_iters": 10, "race_models": ("linear_mixer",), "lrs": (3e-2, 1e-1)}
  else:
    sizes = {"vocab": 512, "product_dim": 128, "seq": 32, "batch": 16, "race_dim": 64, "adamw_steps": 1000,
                 "max_steps": 200, "cg_iters": 20, "race_models": ("linear_mixer", "masked_mixer"),
                 "lrs": ADAMW_LRS}
  data = load_data(DataConfig(vocab_size=sizes["vocab"], seq_len=sizes["seq"], batch_size=0,
                              builtin_stories=300))
  tokens = np.asarray(data.train[:sizes["batch"]])

  cost_rows = [product_costs(m, tokens, sizes["vocab"], sizes["product_dim"], args.repeats)
               for m in MODELS]
  cost_md = common.markdown(cost_rows, ["model", "num_params", "grad_ms", "hvp/grad",
                                        "ggn_vp/grad", "hvp_in_cg/grad", "ggn_vp_in_cg/grad"])
  race_rows = []
  for model in sizes["race_models"]:
    for loss in ("mse", "ce"):
      race_rows += race(model, loss, tokens, sizes["vocab"], sizes["race_dim"],
                        sizes["adamw_steps"], sizes["max_steps"], sizes["cg_iters"], sizes["lrs"])
  race_md = common.markdown(race_rows, ["model", "loss", "optimizer", "target", "steps",
                                        "seconds", "step_ratio", "time_ratio", "rejected",
                                        "neg_curv", "damping"])
  norms, orders = softmax_regression_orders()
  order_md = ("Exact Newton, L2 softmax regression (float64): gradient norms "
              + ", ".join(f"{n:.2e}" for n in norms) + "; observed orders "
              + ", ".join(f"{q:.2f}" for q in orders) + "\n")
  command = "python -m benchmarks.second_order" + (" --small" if args.small else "")
  setup = (f"Products: CE, dim {sizes['product_dim']}, depth 2, seq {sizes['seq']}, batch "
           f"{sizes['batch']}, vocab {sizes['vocab']}. Race: dim {sizes['race_dim']}, depth 2, the "
           f"same full batch, AdamW {sizes['adamw_steps']} steps (lr in {sizes['lrs']}), second-order "
           f"methods at registry defaults with cg_iters={sizes['cg_iters']}, at most "
           f"{sizes['max_steps']} steps; `steps` counts updates to reach AdamW's final loss.\n")
  table = (setup + "\n### Cost of one curvature product relative to one gradient\n\n" + cost_md
           + "\n### Steps and wall time to AdamW's loss\n\n" + race_md
           + "\n### Observed convergence order\n\n" + order_md)
  common.save("second_order", cost_rows + race_rows, table, command,
              extra={"sizes": sizes, "grad_norms": norms, "orders": orders})


if __name__ == "__main__":
  main()
