"""Backends that execute a SparsePlan: the torch reference, our Triton kernel, PyTorch FlexAttention."""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from .plan import SparsePlan, num_blocks
from .reference import attend

BACKENDS = ("auto", "torch", "triton", "flex")


def resolve(backend: str, device: torch.device) -> str:
    """The backend that will run: ``auto`` is triton on CUDA, torch elsewhere; ``triton`` elsewhere than on CUDA
    needs Triton's CPU interpreter (a ValueError otherwise)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got backend={backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if backend == "triton":
        check_triton_device("backend", device)
    return backend


def triton_interpreter() -> bool:
    """Triton's CPU interpreter is on (``TRITON_INTERPRET=1``, set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on", "y")


def check_triton_device(arg: str, device: torch.device) -> None:
    """A ValueError naming ``arg`` (``backend`` or ``planner``) unless Triton kernels can run on ``device``."""
    if importlib.util.find_spec("triton") is None:
        raise ValueError(f"{arg}='triton' needs the triton package (pip install triton); use {arg}='torch'")
    if device.type != "cuda" and not triton_interpreter():
        raise ValueError(
            f"{arg}='triton' runs on CUDA devices, got q.device={device}; use {arg}='torch' (or 'auto'), or set "
            f"TRITON_INTERPRET=1 before triton is imported to run the Triton kernels on the CPU (slow, for tests)"
        )


def run_plan(q: Tensor, k: Tensor, v: Tensor, plan: SparsePlan, scale: float, backend: str) -> Tensor:
    if backend == "torch":
        return attend(q, k, v, plan, scale)
    if backend == "triton":
        from .kernels.block_sparse_attn import pbs_attn_fwd

        return pbs_attn_fwd(q, k, v, plan, scale)
    from .kernels.flex import flex_attend

    return flex_attend(q, k, v, plan, scale)


def dense_plan(batch: int, heads: int, kv_heads: int, seq_len_q: int, seq_len_kv: int, block_size: int,
               device=None) -> SparsePlan:
    """Every causal tile, no permutation."""
    rows = num_blocks(seq_len_kv, block_size) - (seq_len_kv - seq_len_q) // block_size
    everything = torch.ones(batch, heads, rows, num_blocks(seq_len_kv, block_size), dtype=torch.bool, device=device)
    return SparsePlan.from_block_mask(everything, block_size=block_size, seq_len_q=seq_len_q, seq_len_kv=seq_len_kv,
                                      num_kv_heads=kv_heads)


def run_dense(q: Tensor, k: Tensor, v: Tensor, scale: float, backend: str) -> Tensor:
    """Dense causal attention, bottom-right aligned (query i at Nk − Nq + i), GQA-native.

    Nq == Nk goes to SDPA (cuDNN/flash on GPU: the fastest dense attention, which is what a method falls back
    to); Nq < Nk runs a dense plan on the chosen backend, since SDPA's is_causal is top-left aligned.
    """
    nq, nk = q.shape[2], k.shape[2]
    if nq == nk and backend != "flex":
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=k.shape[1] != q.shape[1]
        )
    plan = dense_plan(q.shape[0], q.shape[1], k.shape[1], nq, nk, 128, q.device)
    return run_plan(q, k, v, plan, scale, backend)
