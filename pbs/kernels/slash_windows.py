"""MInference's index building on the GPU: per plan row, the merged slash windows and the columns beside them.

The fused counterpart of ``pbs.vertical_slash.slash_windows`` + ``columns_outside_windows`` (the rule is stated in
``pbs.methods.minference``): one program per (b, head, row) walks the row's live offsets (o < e, in decreasing
order) once, opening or extending ranges of block_size-wide windows, then keeps the columns that lie in no window
and before the last window's end (a binary search per column over the row's ascending window starts).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _windows_kernel(
    OFFSETS, COLUMNS, WIN_NUM, WIN, COL_NUM, COL,
    stride_ob, stride_oh, stride_cb, stride_ch, stride_wnb, stride_wnh, stride_wb, stride_wh, stride_wr,
    stride_cnb, stride_cnh, stride_clb, stride_clh, stride_clr,
    n_offsets, n_columns, seq_len_kv, first_q_block,
    H: tl.constexpr, BS: tl.constexpr, CHUNK: tl.constexpr, SEARCH_STEPS: tl.constexpr,
):
    row = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    e = (first_q_block + row + 1) * BS  # the row's unclipped end
    off_base = OFFSETS + b.to(tl.int64) * stride_ob + h * stride_oh
    win_base = WIN + b.to(tl.int64) * stride_wb + h * stride_wh + row * stride_wr

    # offsets are in decreasing order: skip the dead ones (o >= e) in one vector pass
    dead = 0
    for c0 in range(0, n_offsets, CHUNK):
        idx = c0 + tl.arange(0, CHUNK)
        o = tl.load(off_base + idx, mask=idx < n_offsets, other=-1)
        dead += tl.sum((o >= e).to(tl.int32), 0)

    count = 0
    end = -1  # -1: no range yet
    for i in range(dead, n_offsets):
        o = tl.load(off_base + i)
        x = tl.maximum(e - o, BS)
        opens = (end < 0) | (x > end + BS)
        extends = ~opens & (x > end)
        start = tl.where(opens, x - BS, end)
        emit = (opens | extends) & (start < seq_len_kv)  # a window starting at or after Nk holds no key
        tl.store(win_base + count, start, mask=emit)
        count += emit.to(tl.int32)
        end = tl.where(opens, x, tl.where(extends, end + BS, end))
    tl.store(WIN_NUM + b.to(tl.int64) * stride_wnb + h * stride_wnh + row, count)
    last_end = tl.where(count > 0, tl.load(win_base + tl.maximum(count - 1, 0)) + BS, -1)

    # columns (ascending): gathered iff in no window and before the last window's end
    tl.debug_barrier()  # the window starts written above are read back below
    col_base = COLUMNS + b.to(tl.int64) * stride_cb + h * stride_ch
    out_base = COL + b.to(tl.int64) * stride_clb + h * stride_clh + row * stride_clr
    kept = 0
    for c0 in range(0, n_columns, CHUNK):
        idx = c0 + tl.arange(0, CHUNK)
        ok = idx < n_columns
        col = tl.load(col_base + idx, mask=ok, other=0)
        # last window starting at or before col: binary search over [0, count)
        lo = tl.zeros([CHUNK], dtype=tl.int32)
        hi = tl.zeros([CHUNK], dtype=tl.int32) + count
        for _ in range(SEARCH_STEPS):
            mid = (lo + hi) // 2
            active = lo < hi
            start = tl.load(win_base + mid, mask=active, other=0)
            go_right = active & (start <= col)
            lo = tl.where(go_right, mid + 1, lo)
            hi = tl.where(active & ~go_right, mid, hi)
        at = lo - 1
        at_start = tl.load(win_base + tl.maximum(at, 0), mask=at >= 0, other=0)
        inside = (at >= 0) & (col < at_start + BS)
        take = ok & ~inside & (col < last_end)
        pos = kept + tl.cumsum(take.to(tl.int32), 0) - 1
        tl.store(out_base + pos, col.to(tl.int32), mask=take)
        kept += tl.sum(take.to(tl.int32), 0)
    tl.store(COL_NUM + b.to(tl.int64) * stride_cnb + h * stride_cnh + row, kept)


def slash_windows_fused(offsets: Tensor, columns: Tensor, seq_len_q: int, seq_len_kv: int,
                        block_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Windows and columns of every plan row, no host synchronisation.

    offsets: (B, H, S) distinct diagonal offsets in decreasing order; columns: (B, H, V) distinct key positions in
    increasing order. Returns ``win_num`` (B, H, R) int32, ``win_starts`` (B, H, R, W) int32 ascending (W bounds
    the windows a row can hold: they are disjoint and end within bs of the row's end), ``col_num`` (B, H, R) int32
    and ``col_indices`` (B, H, R, V) int32 ascending.
    """
    batch, heads, n_off = offsets.shape
    n_col = columns.shape[-1]
    bs = block_size
    nkb = -(-seq_len_kv // bs)
    first = (seq_len_kv - seq_len_q) // bs
    rows = nkb - first
    width = max(1, min(n_off, nkb + 1))
    device = offsets.device
    win_num = torch.empty(batch, heads, rows, dtype=torch.int32, device=device)
    win = torch.zeros(batch, heads, rows, width, dtype=torch.int32, device=device)
    col_num = torch.empty_like(win_num)
    col = torch.zeros(batch, heads, rows, max(1, n_col), dtype=torch.int32, device=device)
    offsets, columns = offsets.to(torch.int32).contiguous(), columns.to(torch.int32).contiguous()
    _windows_kernel[(rows, batch * heads)](
        offsets, columns, win_num, win, col_num, col,
        offsets.stride(0), offsets.stride(1), columns.stride(0), columns.stride(1),
        win_num.stride(0), win_num.stride(1), win.stride(0), win.stride(1), win.stride(2),
        col_num.stride(0), col_num.stride(1), col.stride(0), col.stride(1), col.stride(2),
        n_off, n_col, seq_len_kv, first,
        H=heads, BS=bs, CHUNK=256, SEARCH_STEPS=max(1, width.bit_length()), num_warps=4,
    )
    return win_num, win, col_num, col
