"""Newton–Raphson root finding on the loss: which variants diverge, why, and the vmap speed-up.

  python -m benchmarks.newton_root            # V=512, D=64, L=32, B=8 (N=248 tokens)
  python -m benchmarks.newton_root --small    # V=320, D=32, L=16, B=4

Linear mixer (depth 1), MSE against `1000·onehot`, one fixed batch of the builtin corpus
(BPE), float32. For `lm_head` only and for all parameters: the loss after each of 10 steps
of every variant for several `c`, and when it diverges (loss non-finite, above 10× the
initial loss, or a step zeroed by the non-finite guard). Then the numbers that explain it:
for the scalar step on the quadratic `lm_head` loss, `f' = f²κ_g/(2‖g‖²)` exactly
(`κ_g = gᵀHg/‖g‖²`); the conditioning of `JJᵀ` for the component and system forms; the
rank of the gradient matrix for `matrix_pinv`. Last, the vmapped component step against a
per-token Python loop (same result, ratio of medians).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from lmopt.config import DataConfig, LossConfig, ModelConfig, OptimizerConfig
from lmopt.data import load_data
from lmopt.optim import build_optimizer, subset
from lmopt.optim import newton_root as nr
from lmopt.workload import Workload

STEPS = 10
VARIANTS = {  # name -> (registered optimizer, OptimizerConfig overrides)
    "whole": ("newton_root", {}),
    "whole/matrix_pinv": ("newton_root", {"newton_form": "matrix_pinv"}),
    "components": ("newton_root_components", {}),
    "components/matrix_pinv": ("newton_root_components", {"newton_form": "matrix_pinv"}),
    "recalculated": ("newton_root_recalculated", {}),
    "system": ("newton_system", {"damping": 0.0, "cg_iters": 100, "cg_tol": 1e-6}),
}


def setup(small: bool):
  vocab, dim, seq, batch = (320, 32, 16, 4) if small else (512, 64, 32, 8)
  workload = Workload(ModelConfig(name="linear_mixer", vocab_size=vocab, dim=dim, depth=1,
                                  seq_len=seq), LossConfig(name="mse", onehot_scale=1000.0))
  data = load_data(DataConfig(tokenizer="bpe", vocab_size=vocab, seq_len=seq, batch_size=batch))
  tokens = jnp.asarray(data.batches.batch(0))
  params = workload.init(jax.random.key(0))
  return workload, params, tokens, tokens[:, 1:]


def head_optimum(workload, params, inputs, targets) -> float:
  """The exact least-squares optimum of the MSE over `lm_head` (float64 lstsq)."""
  x = np.asarray(workload.features_fn(params, inputs), np.float64).reshape(-1, params[
      "lm_head"]["kernel"].shape[0])
  vocab = workload.model_config.vocab_size
  y = np.zeros((x.shape[0], vocab))
  y[np.arange(x.shape[0]), np.asarray(targets).reshape(-1)] = workload.loss_config.onehot_scale
  beta = np.linalg.lstsq(x, y, rcond=None)[0]
  return float(np.mean((x @ beta - y) ** 2))


def trajectory_fn(workload, variant: str, params_name: str):
  """A jitted `(params, inputs, targets, c) -> (losses [STEPS+1], states)`: `STEPS` steps of the
  registered optimizer (`build_optimizer`, so subset and causal masking as in training)
  on one fixed batch; `c` is traced, so one compile serves every `c`."""
  name, overrides = VARIANTS[variant]
  loss = workload.loss

  @jax.jit
  def trajectory(params, inputs, targets, c):
    config = OptimizerConfig(name=name, params=params_name, loss_constant=c, **overrides)
    tx = build_optimizer(config, workload, params)

    def step(carry, _):
      p, state = carry
      grads = jax.grad(loss)(p, inputs, targets)
      updates, state = tx.update(grads, state, p, inputs=inputs, targets=targets)
      p = optax.apply_updates(p, updates)
      return (p, state), (loss(p, inputs, targets), state[0])

    (_, _), (losses, states) = jax.lax.scan(step, (params, tx.init(params)), None, STEPS)
    return jnp.concatenate([loss(params, inputs, targets)[None], losses]), states

  return trajectory


def diverged_at(losses, states):
  for k, (value, state) in enumerate(zip(losses[1:], states, strict=True), start=1):
    if not math.isfinite(value) or value > 10 * losses[0] or state["nonfinite"] > 0:
      return k
  return None


def divergence_table(workload, params, inputs, targets, head_best):
  loss0 = float(workload.loss(params, inputs, targets))
  constants = {"0": 0.0, "0.5 L*": 0.5 * head_best, "0.9 L*": 0.9 * head_best, "L*": head_best}
  rows = []
  for params_name in ("lm_head", "all"):
    for variant in VARIANTS:
      trajectory = trajectory_fn(workload, variant, params_name)
      for c_name, c in constants.items():
        losses, states = trajectory(params, inputs, targets, jnp.float32(c))
        losses = [float(v) for v in losses]
        states = [jax.tree.map(lambda a, k=k: float(a[k]), states._asdict()) for k in range(STEPS)]
        at = diverged_at(losses, states)
        row = {"params": params_name, "variant": variant, "c": c_name, "c_value": c,
               "diverged_at": at if at else "no", "loss_0": loss0,
               "best": min(v for v in losses if math.isfinite(v)),
               "max_step_norm": max(s["step_norm"] for s in states),
               "nonfinite_steps": int(states[-1]["nonfinite"])}
        row.update({f"loss_{k}": v for k, v in enumerate(losses)})
        rows.append(row)
        print(params_name, variant, c_name, at, [f"{v:.4g}" for v in losses], flush=True)
  return rows


def scalar_step_anatomy(workload, params, inputs, targets, c, keys=("lm_head",), steps=STEPS):
  """Per whole-loss step on `keys`: f, ‖g‖, η = f/‖g‖², κ_g = gᵀHg/‖g‖², the quadratic
  model's `f' = f²κ_g/(2‖g‖²)` (exact for `lm_head`) and the `f'` observed."""
  active, frozen = subset.split(params, keys)
  loss = jax.jit(lambda a: workload.loss({**frozen, **a}, inputs, targets))
  grad = jax.jit(jax.grad(loss))
  hvp = jax.jit(lambda a, v: jax.jvp(grad, (a,), (v,))[1])
  rows = []
  for k in range(steps):
    f = float(loss(active)) - c
    g = grad(active)
    g_sq = float(optax.tree.norm(g, squared=True))
    kappa = float(optax.tree.vdot(g, hvp(active, g))) / g_sq
    eta = f / g_sq
    active = optax.apply_updates(active, optax.tree.scale(-eta, g))
    f_next = float(loss(active)) - c
    rows.append({"params": ",".join(keys) if len(keys) == 1 else "all", "step": k, "f": f, "grad_norm": math.sqrt(g_sq), "eta": eta,
                 "step_norm": abs(f) / math.sqrt(g_sq), "kappa_g": kappa, "eta_kappa": eta * kappa,
                 "predicted_f_next": f * f * kappa / (2 * g_sq), "f_next": f_next})
    if not math.isfinite(f_next):
      break
  return rows


def leaf_steps(workload, params, inputs, targets):
  """‖θ‖, ‖g‖ and ‖Δ‖ per leaf for the first whole-loss step (c = 0) on all parameters."""
  tx = nr.newton_root(workload.per_token_loss, 0.0)
  step, _ = tx.update(params, tx.init(params), params, inputs=inputs, targets=targets)
  grad = jax.grad(workload.loss)(params, inputs, targets)
  rows = []
  for (path, theta), g, delta in zip(jax.tree_util.tree_leaves_with_path(params),
                                     jax.tree.leaves(grad), jax.tree.leaves(step), strict=True):
    norms = [float(jnp.linalg.norm(a)) for a in (theta, g, delta)]
    rows.append({"leaf": jax.tree_util.keystr(path), "param_norm": norms[0], "grad_norm": norms[1],
                 "step_norm": norms[2], "relative_step": norms[2] / norms[0] if norms[0] else math.inf})
  return rows


def conditioning(workload, params, inputs, targets):
  """Spectra of `G = JJᵀ` at the initial point (dense `J`, float64)."""
  rows = []
  for params_name, keys in (("lm_head", ("lm_head",)), ("all", None)):
    active, frozen = subset.split(params, keys or tuple(params))
    fn = lambda a, x, y, frozen=frozen: workload.per_token_loss({**frozen, **a}, x, y)
    _, jac = nr._token_jacobian(fn, active, inputs, targets, 0)
    j = np.asarray(jax.vmap(lambda row: jax.flatten_util.ravel_pytree(row)[0])(jac), np.float64)
    gram = j @ j.T
    eig = np.linalg.eigvalsh(gram)
    diag = np.diag(gram)
    jacobi = np.linalg.eigvalsh(gram / np.sqrt(np.outer(diag, diag)))
    head_grad = np.asarray(jax.grad(workload.loss)(params, inputs, targets)["lm_head"]["kernel"])
    rows.append({"params": params_name, "N": gram.shape[0], "P": j.shape[1],
                 "rank_J": int(np.linalg.matrix_rank(j)), "eig_max": float(eig[-1]),
                 "eig_min": float(eig[0]), "cond_JJt": float(eig[-1] / max(eig[0], 1e-300)),
                 "rho_jacobi": float(jacobi[-1]),
                 "rank_head_grad": int(np.linalg.matrix_rank(head_grad))})
  return rows


def component_speed(workload, params, inputs, targets, repeats):
  """The jitted vmapped component step vs a per-token loop of jitted single-token steps."""
  c = 0.0
  tx = nr.newton_root_components(workload.per_token_loss, c)
  state = tx.init(params)
  vmapped = jax.jit(lambda p: tx.update(p, state, p, inputs=inputs, targets=targets)[0])

  @jax.jit
  def token_step(p, b, t):
    value, g = jax.value_and_grad(lambda q: workload.per_token_loss(q, inputs, targets)[b, t])(p)
    return nr._min_norm_direction(g, value - c)

  add = jax.jit(optax.tree.add)

  def loop(p):
    total = optax.tree.zeros_like(p)
    for b in range(targets.shape[0]):
      for t in range(targets.shape[1]):
        total = add(total, token_step(p, b, t))
    return total

  fast = common.median_seconds(vmapped, params, repeats=repeats)
  slow = common.median_seconds(loop, params, repeats=max(1, repeats // 2))
  a, b = vmapped(params), loop(params)
  diff = float(optax.tree.norm(optax.tree.sub(a, b)) / optax.tree.norm(b))
  return [{"tokens": targets.size, "vmapped_s": fast, "loop_s": slow, "speedup": slow / fast,
           "relative_difference": diff}]


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv)
  workload, params, inputs, targets = setup(args.small)
  head_best = head_optimum(workload, params, inputs, targets)
  rows = divergence_table(workload, params, inputs, targets, head_best)
  anatomy = {name: scalar_step_anatomy(workload, params, inputs, targets, c)
             for name, c in (("0", 0.0), ("0.9 L*", 0.9 * head_best), ("L*", head_best))}
  anatomy["0, all parameters"] = scalar_step_anatomy(workload, params, inputs, targets, 0.0,
                                                     tuple(params), steps=3)
  first_step = leaf_steps(workload, params, inputs, targets)
  spectra = conditioning(workload, params, inputs, targets)
  speed = component_speed(workload, params, inputs, targets, args.repeats)
  loss_columns = [f"loss_{k}" for k in range(STEPS + 1)]
  md = (f"Initial loss {rows[0]['loss_0']:.4g}; exact `lm_head` least-squares optimum "
        f"L* = {head_best:.4g} on this batch ({targets.size} tokens).\n\n"
        + common.markdown(rows, ["params", "variant", "c", "diverged_at", "nonfinite_steps",
                                 "max_step_norm"] + loss_columns)
        + "\nWhole-loss step on `lm_head` (the loss is quadratic there, so "
          "`f' = f²κ_g/(2‖g‖²)` exactly):\n\n")
  for name, steps in anatomy.items():
    md += f"c = {name}:\n\n" + common.markdown(steps, list(steps[0])) + "\n"
  md += ("First whole-loss step (c = 0) on all parameters, per leaf:\n\n"
         + common.markdown(first_step, list(first_step[0])) + "\n")
  md += ("Spectrum of `JJᵀ` at the start (`rho_jacobi` = λ_max(D^-½ G D^-½): the component "
         "step overshoots the linearised residuals when it exceeds 2):\n\n"
         + common.markdown(spectra, list(spectra[0]))
         + "\nVmapped component step vs a per-token Python loop (all parameters):\n\n"
         + common.markdown(speed, list(speed[0])))
  command = "python -m benchmarks.newton_root" + (" --small" if args.small else "")
  common.save("newton_root", rows, md, command, {"head_optimum": head_best, "anatomy": anatomy,
                                                 "conditioning": spectra, "speed": speed,
                                                 "first_step": first_step})


if __name__ == "__main__":
  main()
