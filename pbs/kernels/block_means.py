"""Block means on the GPU in one launch: the mean-pooled queries and keys of the planners.

The fused counterpart of ``pbs.permutation.block_means``: rows laid out from ``front`` padding rows so blocks
align to absolute positions, each block averaged over its real rows, optionally scaled; fp32 output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _block_means_kernel(
    X, OUT, stride_xb, stride_xh, stride_xn, stride_ob, stride_oh, stride_ot,
    n_rows, front, scale,
    H: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BS: tl.constexpr, ROWS: tl.constexpr,
):
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    start = blk * BS - front  # first row of the block in x
    acc = tl.zeros([D_PAD], dtype=tl.float32)
    for r0 in range(0, BS, ROWS):
        rows = start + r0 + tl.arange(0, ROWS)
        ok = (rows >= 0) & (rows < n_rows)
        x = tl.load(X + b.to(tl.int64) * stride_xb + h * stride_xh + rows[:, None].to(tl.int64) * stride_xn
                    + offs_d[None, :], mask=ok[:, None] & d_ok[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32), 0)
    count = tl.minimum(start + BS, n_rows) - tl.maximum(start, 0)
    mean = acc / tl.maximum(count, 1).to(tl.float32) * scale
    tl.store(OUT + b.to(tl.int64) * stride_ob + h * stride_oh + blk * stride_ot + offs_d, mean, mask=d_ok)


def block_means_fused(x: Tensor, block_size: int, front: int = 0, scale: float = 1.0) -> Tensor:
    """(B, H, N, D) -> (B, H, ceil((front + N) / block_size), D) float32 block means of the real rows × scale."""
    batch, heads, n, dim = x.shape
    nb = -(-(front + n) // block_size)
    out = torch.empty(batch, heads, nb, dim, dtype=torch.float32, device=x.device)
    d_pad = max(16, triton.next_power_of_2(dim))
    _block_means_kernel[(nb, batch * heads)](
        x, out, x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1), out.stride(2),
        n, front, scale, H=heads, HEAD_DIM=dim, D_PAD=d_pad, BS=block_size, ROWS=min(block_size, 32),
        num_warps=4,
    )
    return out
