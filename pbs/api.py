"""The public steps: ``pbs.plan`` (which tiles), ``pbs.attend`` (attention under a plan), and both in one call,
``pbs.sparse_attention``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .backends import check_triton_device, resolve, run_dense, run_plan
from .config import make_config
from .methods import Dense, NotFused, get_method
from .plan import SparsePlan
from .policy import dense_reason

PLANNERS = ("auto", "torch", "triton")


@dataclass(frozen=True)
class AttentionStats:
    """What a call computed.

    density: computed (query-block, key-block) tiles / the T(T+1)/2 tiles of dense causal attention
        (T = ceil(N / block_size)), averaged over batch and heads; forced tiles count; 1.0 for dense runs.
        Gathered columns (MInference) count as ceil(columns / block_size) tiles per query block.
    per_head: (B, Hq) float64 tensor of the same.
    method: the method name.
    dense_fallback: why a sparse method ran dense (e.g. too short), else None.
    plan: the SparsePlan that was executed (None for dense runs).
    backend: the backend that ran the attention.
    planner: what built the plan: "torch" or "triton" (None for dense runs); ``plan.planner_note`` says why a
        requested fused planner was not used.
    """

    density: float
    per_head: Tensor
    method: str
    dense_fallback: str | None
    plan: SparsePlan | None
    backend: str
    planner: str | None = None


def plan(
    q: Tensor,
    k: Tensor,
    method: str = "pbs",
    *,
    scale: float | None = None,
    planner: str = "auto",
    short_seq_policy: bool = True,
    **method_kwargs,
) -> SparsePlan | Dense:
    """Which tiles a method computes for these q, k: a :class:`SparsePlan`, or ``Dense(reason)``.

    Args:
        q: (B, Hq, Nq, D); k: (B, Hkv, Nk, D) (the layout of :func:`sparse_attention`).
        method, **method_kwargs: as for :func:`sparse_attention`.
        scale: softmax scale used for the estimation, default 1/sqrt(D); pass the same to :func:`attend`.
        planner: "auto" (triton on CUDA, torch elsewhere), "torch" (the PyTorch reference planners) or "triton"
            (fused Triton planners: same plan, no host synchronisation; CUDA, or CPU under TRITON_INTERPRET=1).
            Settings a fused planner does not cover run the torch planner and say so in ``plan.planner_note``.
        short_seq_policy: on CUDA, return ``Dense`` below the crossover length measured for this GPU
            (``pbs/crossover.json``), where dense attention is faster than planning + sparse attention.

    The plan can be printed (density, shapes, block size, permutations, planner) and reused for any number of
    :func:`attend` calls with the same q/k shapes (e.g. repeated timing, or layers that share it).

    Edge cases (the same for every method): an empty input (B, Hq or Nq = 0) gives ``Dense`` saying so;
    head_dim 0, meta tensors and ``planner="triton"`` on a device Triton cannot run on raise ``ValueError``. A NaN
    or Inf in q or k makes the scores of every row that sees it non-finite; such a row (a head, for MInference's
    and FlexPrefill's estimate) computes all its causal tiles, so the value reaches the output as in SDPA.
    """
    _check_inputs(q, k, k)
    scale = _check_scale(scale, q)
    spec = get_method(method)
    cfg = make_config(spec.config_cls, method_kwargs)
    if planner not in PLANNERS:
        raise ValueError(f"planner must be one of {list(PLANNERS)}, got planner={planner!r}")
    if planner == "auto":
        planner = "triton" if q.device.type == "cuda" else "torch"
    elif planner == "triton" and spec.fused_plan is not None:
        check_triton_device("planner", q.device)
    if _is_empty(q):
        return Dense(f"empty input (q.shape={tuple(q.shape)}): nothing to compute")
    if short_seq_policy and q.device.type == "cuda":
        reason = dense_reason(method, k.shape[2], q.device, "triton")
        if reason:
            return Dense(reason)
    with torch.no_grad():
        if planner == "triton" and spec.fused_plan is not None:
            try:
                return spec.fused_plan(q, k, cfg, scale)
            except NotFused as why:
                return _noted(spec.plan(q, k, cfg, scale), f"fused planner not used: {why}")
        result = spec.plan(q, k, cfg, scale)
        if planner == "triton":
            return _noted(result, f"fused planner not used: method {method!r} has none")
        return result


def attend(q: Tensor, k: Tensor, v: Tensor, plan: SparsePlan | Dense, *, scale: float | None = None,
           backend: str = "auto") -> Tensor:
    """Causal attention of q over k, v restricted to ``plan`` (dense causal attention for ``Dense``).

    q (B, Hq, Nq, D); k, v (B, Hkv, Nk, D); returns (B, Hq, Nq, D) in q's dtype. ``backend`` as for
    :func:`sparse_attention`. The plan must have been made for these shapes. Edge cases as for :func:`plan`: an
    empty input returns an empty output.
    """
    _check_inputs(q, k, v)
    scale = _check_scale(scale, q)
    backend = resolve(backend, q.device)
    if _is_empty(q):
        return q.new_zeros(q.shape)
    with torch.no_grad():
        if isinstance(plan, Dense):
            return run_dense(q, k, v, scale, backend)
        if not isinstance(plan, SparsePlan):
            raise ValueError(f"plan must be a SparsePlan or Dense (from pbs.plan), got plan={type(plan).__name__}")
        batch, heads = plan.kv_num_blocks.shape[:2]
        if (plan.seq_len_q, plan.seq_len_kv, batch, heads) != (q.shape[2], k.shape[2], q.shape[0], q.shape[1]):
            raise ValueError(
                f"plan does not match the inputs: plan (B={batch}, H={heads}, Nq={plan.seq_len_q}, "
                f"Nk={plan.seq_len_kv}) vs q.shape={tuple(q.shape)}, k.shape={tuple(k.shape)}"
            )
        return run_plan(q, k, v, plan, scale, backend)


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    method: str = "pbs",
    *,
    causal: bool = True,
    scale: float | None = None,
    backend: str = "auto",
    planner: str = "auto",
    return_stats: bool = False,
    short_seq_policy: bool = True,
    **method_kwargs,
):
    """Causal (block-)sparse attention for prefill, in the layout of ``scaled_dot_product_attention``.

    ``pbs.plan`` then ``pbs.attend``, plus stats.

    Args:
        q: (B, Hq, Nq, D) queries; the last Nq positions of the sequence (query i sits at Nk − Nq + i).
        k, v: (B, Hkv, Nk, D); Hq must be a multiple of Hkv (GQA; K/V are never repeated in memory).
        method: one of ``available_methods()``:
            ``full`` dense causal attention;
            ``pbs`` PBS-Attn — block_size=128, segment_size=256, threshold=0.9, permute="key"
            ("key" | "query" | "key+query" | "none"), scoring="mean" ("antidiagonal" = PBS-Attn+, stride=8),
            share_permutation="q_head" ("kv_head" = App. G), force_sink=True, budget=None;
            ``meanpool`` block_size=128, threshold=0.9, force_sink=True, force_current=True, budget=None;
            ``xattention`` block_size=128, stride=8, threshold=0.9, chunk_size=None (the original's from Nk),
            accounting="original" ("corrected");
            ``minference`` vertical_size=1000, slash_size=6096, last_q=64, block_size=64,
            num_sink_columns=30, num_local_diagonals=100, slash_layout="windows" ("aligned");
            ``flexprefill`` gamma=0.95, tau=0.1, block_size=128, min_budget=1, max_budget=None (tokens),
            budget_unit=128 (None = block_size), query_mean="padded" ("real"), include_crossing_tile=False;
            ``oracle`` block_size=128, segment_size=256, threshold=0.9, permute="none" ("none" | "key"), budget=None.
            A threshold (gamma) >= 1 selects every causal block. ``budget`` (a target density in (0, 1]) replaces
            the threshold: per row the forced tiles plus the top-scoring tiles up to budget × the row's causal
            tiles. Defaults live in ``pbs.config``.
        causal: must be True (all methods are causal prefill methods).
        scale: softmax scale, default 1/sqrt(D).
        backend: "auto" (triton on CUDA, torch elsewhere), "torch" (the pure-PyTorch reference, any device),
            "triton" (our permuted block-sparse FlashAttention kernel; CUDA, or CPU under TRITON_INTERPRET=1),
            "flex" (the same plan through PyTorch FlexAttention).
        planner: "auto" | "torch" | "triton", see :func:`plan`.
        return_stats: also return an :class:`AttentionStats`.
        short_seq_policy: on the triton backend, run dense below the crossover length measured for this GPU
            (``pbs/crossover.json``); ``stats.dense_fallback`` says so. False always runs the sparse plan.
        **method_kwargs: fields of the method's config dataclass; unknown names are an error.

    Returns:
        out (B, Hq, Nq, D) with q's dtype, or ``(out, stats)``. A query sees the keys at original positions
        at or before its own that its block's plan lists; keys permuted inside the diagonal segment are masked
        per token on original positions. A row that sees no key returns zeros.

    Edge cases (one rule for every method): an empty input (B, Hq or Nq = 0) returns an empty output of q's shape,
        with ``stats.density`` NaN and ``stats.dense_fallback`` saying so. NaN/Inf in q or k propagate as in SDPA:
        a row whose estimated scores are not finite (a head, for MInference's and FlexPrefill's estimate)
        computes every causal tile, so exactly SDPA's rows come out non-finite; a NaN in v reaches the rows that
        compute its tile.

    Raises:
        ValueError: naming the argument and its value, for wrong ranks, mismatched batch/head_dim/dtype/device,
            head_dim 0, meta tensors (planning reads the values), Hq not a multiple of Hkv, Nq > Nk, an unknown
            method, backend, planner or kwarg, an invalid kwarg value, or ``backend``/``planner="triton"`` on a
            device Triton cannot run on (not CUDA, and TRITON_INTERPRET is not set).

    Example:
        >>> out, stats = pbs.sparse_attention(q, k, v, method="pbs", threshold=0.9, return_stats=True)
        >>> stats.density  # fraction of causal tiles computed
    """
    _check_inputs(q, k, v)
    if causal is not True:
        raise ValueError(f"causal must be True: every method is a causal prefill method, got causal={causal!r}")
    backend = resolve(backend, q.device)
    scale = _check_scale(scale, q)
    the_plan = plan(q, k, method, scale=scale, planner=planner,
                    short_seq_policy=short_seq_policy and backend == "triton", **method_kwargs)
    out = attend(q, k, v, the_plan, scale=scale, backend=backend)
    if not return_stats:
        return out
    if isinstance(the_plan, Dense):
        per_head = torch.full((q.shape[0], q.shape[1]), math.nan if _is_empty(q) else 1.0, dtype=torch.float64)
        sparse, reason = None, the_plan.reason
    else:
        per_head = the_plan.density_per_head().cpu()
        sparse, reason = the_plan, None
    stats = AttentionStats(
        density=float(per_head.mean()) if per_head.numel() else math.nan,
        per_head=per_head,
        method=method,
        dense_fallback=reason,
        plan=sparse,
        backend=backend,
        planner=None if sparse is None else sparse.planner,
    )
    return out, stats


def _noted(result, note: str):
    return replace(result, planner_note=note) if isinstance(result, SparsePlan) else result


def _check_scale(scale, q: Tensor) -> float:
    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got scale={scale!r}")
    return float(scale)


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {name}={type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have rank 4 (B, H, N, D), got {name}.shape={tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {name}.dtype={t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got q.dtype={q.dtype}, k.dtype={k.dtype}, v.dtype={v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got q.device={q.device}, k.device={k.device}, v.device={v.device}")
    if q.device.type == "meta":
        raise ValueError(f"q, k, v must hold values (planning and attention read them), got q.device={q.device}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k.shape={tuple(k.shape)}, v.shape={tuple(v.shape)}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"batch sizes differ: q.shape[0]={q.shape[0]}, k.shape[0]={k.shape[0]}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"head_dim differs: q.shape[-1]={q.shape[-1]}, k.shape[-1]={k.shape[-1]}")
    if q.shape[-1] == 0:
        raise ValueError(f"head_dim must be >= 1, got q.shape[-1]={q.shape[-1]}")
    if (k.shape[1] == 0 and q.shape[1] > 0) or (k.shape[1] and q.shape[1] % k.shape[1]):
        raise ValueError(
            f"the number of query heads must be a multiple of the KV heads, got q.shape[1]={q.shape[1]}, "
            f"k.shape[1]={k.shape[1]}"
        )
    if q.shape[2] > k.shape[2]:
        raise ValueError(f"Nq must be <= Nk (queries are the last Nq positions), got q.shape[2]={q.shape[2]}, "
                         f"k.shape[2]={k.shape[2]}")


def _is_empty(q: Tensor) -> bool:
    """No query to compute: B, Hq or Nq is 0."""
    return q.shape[0] == 0 or q.shape[1] == 0 or q.shape[2] == 0
