"""Alternating exact least squares over every weight of the linear mixer.

The linear mixer `h_0 = E[tokens]`, `h_{j+1} = (I + M_j) h_j + b_j 1ᵀ`, logits `h_d W`
(positions `0..L'-1`, `L' = L - 1`) is linear in each block given the others, so each
block has a closed-form least-squares update under the MSE against `s * onehot(y)`:

* `lm_head` `W` `[D, V]`: `solvers` on the final features `F`.
* `mix_i` (`M_i` lower triangle, bias `b_i`): with `P = T_{d-1}⋯T_{i+1}` (`T_j = I + M_j`)
  and `H̃ = [h_i; 1ᵀ]` `[L'+1, D]` per sequence, `Δlogits_b = P ΔΘ H̃_b W` for
  `ΔΘ = [ΔM | Δb]`. The normal matrix is `(PᵀP)[u,u'] · K[s,s']`,
  `K = Σ_b H̃_b WWᵀ H̃_bᵀ`, over the free entries (`s ≤ u`, plus the bias column); the
  right side is `Pᵀ Σ_b R_b H̃_bᵀ` with `R = s Wᵀ[y] − F WWᵀ` `[B, L', D]`.
* `wte` `E` `[V, D]`: `Δlogits_b = P O_b ΔE W` (`O_b` the one-hot of the inputs, never
  built): `ΔE = (AᵀA)⁺ (Σ_b O_bᵀ Pᵀ R_b) (WWᵀ)⁺` with `AᵀA = Σ_b O_bᵀ PᵀP O_b` `[V, V]`,
  a scatter-add of `PᵀP` into token pairs.

Each block solves for the minimum-norm *change* (eigenvalue cutoff of `solvers.eigh`),
so weights the data cannot see (unseen tokens' embeddings, the unscored last position)
stay as they are. In exact arithmetic no update increases the loss; an update that
rounding makes worse is refused (counted in the history), so the training loss is
monotone by construction. Row `L-1` of each `M_i` and `b_i[L-1]` only feed the
dropped last position and are left untouched. Computation is in the parameters'
dtype; float64 (with `jax_enable_x64`) is the exact reference.
"""

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lmopt.lstsq import solvers
from lmopt.lstsq import stats as stats_lib
from lmopt.models import CAUSAL_KERNEL, causal_mask

HIGHEST = jax.lax.Precision.HIGHEST


class BlockStep(NamedTuple):
  sweep: int
  block: str
  loss: float  # full-batch per-token MSE after this block (unchanged if refused)
  accepted: bool
  seconds: float  # wall time since the first update, compilation excluded


def _mix_name(i: int) -> str:
  return f"mix_{i}"


def _with_blocks_zeroed(params, names):
  return {k: (jax.tree.map(jnp.zeros_like, v) if k in names else v) for k, v in params.items()}


def _transfer(params, start: int, depth: int, size: int):
  """`P = T_{d-1} ⋯ T_start` `[size, size]`, `T_j = I + tril(M_j)` (top-left block)."""
  eye = jnp.eye(size, dtype=params["lm_head"]["kernel"].dtype)
  p_LxL = eye
  for j in range(start, depth):
    m_LxL = params[_mix_name(j)][CAUSAL_KERNEL][:size, :size]
    p_LxL = jnp.matmul(eye + m_LxL * causal_mask(size, m_LxL.dtype), p_LxL, precision=HIGHEST)
  return p_LxL


def _psd_solve(a_KxK, b_KxM, rcond):
  """Minimum-norm solution of `A X = B` for symmetric PSD `A` (`solvers`' `eigh` method)."""
  gram = stats_lib.GramStats(a_KxK, b_KxM, jnp.zeros((), a_KxK.dtype), jnp.ones((), a_KxK.dtype))
  return solvers.solve_gram("eigh", gram, rcond=rcond)


class _Problem(NamedTuple):
  features: jax.Array  # F [B, L', D] of the current parameters
  residual_w: jax.Array  # R = s Wᵀ[y] − F WWᵀ [B, L', D]
  wwt: jax.Array  # WWᵀ [D, D]


def _problem(workload, params, inputs_BxL, targets_BxL1) -> _Problem:
  w_DxV = params["lm_head"]["kernel"]
  f_BxLxD = workload.features_fn(params, inputs_BxL)
  wwt_DxD = jnp.matmul(w_DxV, w_DxV.T, precision=HIGHEST)
  target_w = workload.loss_config.onehot_scale * w_DxV.T[targets_BxL1]
  return _Problem(f_BxLxD, target_w - jnp.matmul(f_BxLxD, wwt_DxD, precision=HIGHEST), wwt_DxD)


def mixer_loss(workload, params, inputs_BxL, targets_BxL1):
  """Full-batch per-token MSE through the lm_head statistics (no `[N, V]` logits)."""
  f_NxD = workload.features_fn(params, inputs_BxL).reshape(-1, params["lm_head"]["kernel"].shape[0])
  gram = stats_lib.batch_stats(f_NxD, targets_BxL1.reshape(-1), workload.model_config.vocab_size,
                               workload.loss_config.onehot_scale)
  return stats_lib.loss_from_stats(gram, params["lm_head"]["kernel"])


def solve_lm_head(workload, params, inputs_BxL, targets_BxL1, method="pinv", ridge=0.0, rcond=None):
  """Exact lm_head for the batch (any `solvers.METHODS`)."""
  w_DxV = params["lm_head"]["kernel"]
  f_NxD = workload.features_fn(params, inputs_BxL).reshape(-1, w_DxV.shape[0])
  w_new = solvers.solve(method, f_NxD, targets_BxL1.reshape(-1), workload.model_config.vocab_size,
                        workload.loss_config.onehot_scale, ridge=ridge, rcond=rcond)
  return {**params, "lm_head": {"kernel": w_new.astype(w_DxV.dtype)}}


def solve_mix(workload, params, inputs_BxL, targets_BxL1, index: int, rcond=None):
  """Exact (minimum-norm change) update of `M_index` (lower triangle) and `b_index`."""
  depth = workload.model_config.depth
  prob = _problem(workload, params, inputs_BxL, targets_BxL1)
  batch, size, dim = prob.features.shape
  zeroed = _with_blocks_zeroed(params, [_mix_name(j) for j in range(index, depth)])
  h_BxLxD = workload.features_fn(zeroed, inputs_BxL)
  ht_BxSxD = jnp.concatenate([h_BxLxD, jnp.ones((batch, 1, dim), h_BxLxD.dtype)], axis=1)
  p_LxL = _transfer(params, index + 1, depth, size)
  ptp_LxL = jnp.matmul(p_LxL.T, p_LxL, precision=HIGHEST)
  k_SxS = jnp.einsum("bsd,de,bre->sr", ht_BxSxD, prob.wwt, ht_BxSxD, precision=HIGHEST)
  rhs_LxS = jnp.matmul(p_LxL.T, jnp.einsum("btd,bsd->ts", prob.residual_w, ht_BxSxD,
                                           precision=HIGHEST), precision=HIGHEST)
  rows, cols = jnp.tril_indices(size)
  u_F = jnp.concatenate([rows, jnp.arange(size)])
  s_F = jnp.concatenate([cols, jnp.full((size,), size)])
  a_FxF = ptp_LxL[u_F][:, u_F] * k_SxS[s_F][:, s_F]
  delta_F = _psd_solve(a_FxF, rhs_LxS[u_F, s_F][:, None], rcond)[:, 0]
  delta_LxS = jnp.zeros((size, size + 1), delta_F.dtype).at[u_F, s_F].set(delta_F)
  block = params[_mix_name(index)]
  kernel = block[CAUSAL_KERNEL].at[:size, :size].add(delta_LxS[:, :size])
  bias = block["bias"].at[:size].add(delta_LxS[:, size])
  return {**params, _mix_name(index): {**block, CAUSAL_KERNEL: kernel, "bias": bias}}


def solve_wte(workload, params, inputs_BxL, targets_BxL1, rcond=None):
  """Exact (minimum-norm change) update of the embedding `E` `[V, D]`."""
  prob = _problem(workload, params, inputs_BxL, targets_BxL1)
  size = prob.features.shape[1]
  vocab = workload.model_config.vocab_size
  tokens_BxL = inputs_BxL[:, :size]
  p_LxL = _transfer(params, 0, workload.model_config.depth, size)
  ptp_LxL = jnp.matmul(p_LxL.T, p_LxL, precision=HIGHEST)
  pairs_BxLxL = jnp.broadcast_to(ptp_LxL, tokens_BxL.shape + (size,))
  ata_VxV = jnp.zeros((vocab, vocab), ptp_LxL.dtype).at[
      tokens_BxL[:, :, None], tokens_BxL[:, None, :]].add(pairs_BxLxL)
  z_BxLxD = jnp.einsum("tu,btd->bud", p_LxL, prob.residual_w, precision=HIGHEST)
  atr_VxD = jnp.zeros((vocab, z_BxLxD.shape[-1]), z_BxLxD.dtype).at[tokens_BxL].add(z_BxLxD)
  left_VxD = _psd_solve(ata_VxV, atr_VxD, rcond)
  delta_VxD = _psd_solve(prob.wwt, left_VxD.T, rcond).T
  embedding = params["wte"]["embedding"] + delta_VxD
  return {**params, "wte": {**params["wte"], "embedding": embedding}}


def block_names(depth: int):
  """The update order of one sweep: lm_head, mix_{d-1} … mix_0, wte."""
  return ("lm_head",) + tuple(_mix_name(i) for i in reversed(range(depth))) + ("wte",)


def block_update(workload, name: str, method: str = "pinv", ridge: float = 0.0, rcond=None):
  """`update(params, inputs, targets) -> params`: the exact update of one block by name."""
  if name == "lm_head":
    return functools.partial(solve_lm_head, workload, method=method, ridge=ridge, rcond=rcond)
  if name == "wte":
    return functools.partial(solve_wte, workload, rcond=rcond)
  return functools.partial(solve_mix, workload, index=int(name.split("_")[1]), rcond=rcond)


class AlternatingResult(NamedTuple):
  params: dict
  initial_loss: float
  history: list  # of BlockStep
  compile_seconds: float


def alternating_solve(workload, params, tokens_BxL, sweeps: int, method: str = "pinv",
                      ridge: float = 0.0, rcond=None) -> AlternatingResult:
  """Runs `sweeps` sweeps of exact block updates on the full batch `tokens_BxL`.

  `method`/`ridge` apply to lm_head; inner blocks always use the minimum-norm `eigh`
  solve. Every block step is compiled ahead, so `BlockStep.seconds` excludes compilation.
  """
  inputs, targets = tokens_BxL, tokens_BxL[:, 1:]
  start = time.perf_counter()
  loss_fn = jax.jit(functools.partial(mixer_loss, workload)).lower(params, inputs, targets)
  loss = loss_fn.compile()(params, inputs, targets)
  steps = {}
  for name in block_names(workload.model_config.depth):
    update = block_update(workload, name, method, ridge, rcond)

    def step(p, inputs, targets, loss_old, update=update):
      new = update(p, inputs, targets)
      loss_new = mixer_loss(workload, new, inputs, targets)
      ok = jnp.isfinite(loss_new) & (loss_new <= loss_old)
      keep = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, p)
      return keep, jnp.where(ok, loss_new, loss_old), ok

    steps[name] = jax.jit(step).lower(params, inputs, targets, loss).compile()
  compile_seconds = time.perf_counter() - start
  initial_loss = float(loss)
  history = []
  start = time.perf_counter()
  for sweep in range(sweeps):
    for name, step in steps.items():
      params, loss, ok = step(params, inputs, targets, loss)
      history.append(BlockStep(sweep, name, float(loss), bool(ok), time.perf_counter() - start))
  return AlternatingResult(params, initial_loss, history, compile_seconds)
