"""Zero-argument callables the benchmark times: dense causal attention per backend, and FlexAttention alone on a
prebuilt block mask. Setup (block masks, plans, repeated K/V) happens when they are built, outside any timing."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

import pbs
from pbs.backends import dense_plan
from pbs.kernels.flex import attend_block_mask, plan_block_mask
from pbs.plan import SparsePlan

from .timing import describe

SDPA_BACKENDS = {
    "sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
}
DENSE_VARIANTS = (*SDPA_BACKENDS, "flex_causal", "ours_dense")
KV_REPEAT_SUFFIX = "_kvrep"


def _sdpa_fn(q: Tensor, k: Tensor, v: Tensor, backend_name: str, kv_repeat: bool = False) -> Callable[[], Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)
    if kv_repeat:  # for a backend that rejects enable_gqa: K/V repeated once, outside the timed call
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        extra = {}
    else:
        extra = {"enable_gqa": True}

    def fn():
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, **extra)

    return fn


def sdpa_kv_repeat(q: Tensor, k: Tensor, v: Tensor, name: str) -> Callable[[], Tensor]:
    """SDPA variant ``name`` (a key of SDPA_BACKENDS) on K/V repeated to the query heads."""
    return _sdpa_fn(q, k, v, SDPA_BACKENDS[name], kv_repeat=True)


def _causal_mask_mod(b, h, q_idx, kv_idx):  # module level, so compiled FlexAttention is not re-traced per call
    return q_idx >= kv_idx


def _flex_causal_fn(q: Tensor, k: Tensor, v: Tensor, compile_flex: bool) -> Callable[[], Tensor]:
    """FlexAttention's own causal path: ``create_block_mask`` once, then ``pbs.kernels.flex``'s compiled call."""
    import inspect

    from torch.nn.attention.flex_attention import create_block_mask

    kwargs = {}
    if compile_flex and "_compile" in inspect.signature(create_block_mask).parameters:
        kwargs["_compile"] = True  # never materializes the N×N mask
    block_mask = create_block_mask(_causal_mask_mod, None, None, q.shape[2], k.shape[2], device=q.device, **kwargs)
    return lambda: attend_block_mask(q, k, v, block_mask, compiled=compile_flex)


def flex_prebuilt_fn(q: Tensor, k: Tensor, v: Tensor, plan: SparsePlan, scale: float,
                     compile_flex: bool = True) -> Callable[[], Tensor]:
    """FlexAttention on the plan's BlockMask built once, outside the timed call (the kernel alone).

    ``compile_flex=False`` runs eager FlexAttention (a math path; CPU smoke runs).
    """
    block_mask = plan_block_mask(plan, compiled=compile_flex)
    return lambda: attend_block_mask(q, k, v, block_mask, scale, compiled=compile_flex)


def failing(exc: BaseException) -> Callable[[], Tensor]:
    """A callable that raises the setup failure ``exc`` on its first call, so the row records it."""
    message = describe(exc)

    def fn():
        raise RuntimeError(f"setup failed: {message}")

    return fn


def dense_variants(q: Tensor, k: Tensor, v: Tensor, *, kernel_backend: str = "triton", block_size: int = 128,
                   include=DENSE_VARIANTS, compile_flex: bool = True) -> dict[str, Callable[[], Tensor]]:
    """name -> zero-argument callable running dense causal attention (Nq == Nk) on q, k, v.

    ``sdpa_cudnn`` / ``sdpa_flash`` / ``sdpa_efficient``: SDPA forced to one backend (is_causal, enable_gqa);
    ``flex_causal``: compiled FlexAttention with a causal ``create_block_mask`` (enable_gqa);
    ``ours_dense``: ``pbs.attend`` on a plan with every causal tile, on ``kernel_backend``.
    A variant whose setup fails gets a callable that raises, so the caller records it as absent on its first call,
    with the exception text.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    out: dict[str, Callable[[], Tensor]] = {}
    for name in include:
        try:
            if name in SDPA_BACKENDS:
                out[name] = _sdpa_fn(q, k, v, SDPA_BACKENDS[name])
            elif name == "flex_causal":
                out[name] = _flex_causal_fn(q, k, v, compile_flex)
            elif name == "ours_dense":
                plan = dense_plan(q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], block_size, q.device)
                out[name] = (lambda plan=plan: pbs.attend(q, k, v, plan, scale=scale, backend=kernel_backend))
            else:
                raise ValueError(f"unknown dense variant {name!r}; choose from {list(DENSE_VARIANTS)}")
        except Exception as exc:  # noqa: BLE001  (recorded, not raised)
            out[name] = failing(exc)
    return out
