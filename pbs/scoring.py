"""Block scores: the estimated share of attention mass in each (query block, key block) tile.

Every scorer returns (B, H, R, T) float32 probabilities over the ``allowed`` tiles of each plan row (rows sum to
1, or to 0 when nothing is allowed). A row that sees a NaN or Inf in q or k scores NaN: the selection then computes
every tile of it (``pbs.selection``), so the non-finite value reaches the output as in SDPA. Rows follow the plan's absolute block alignment
(``pbs.plan``); key blocks are in permuted-slot space when a ``key_perm`` is given.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .permutation import block_means, pooled_keys
from .plan import num_blocks


def block_grid(seq_len_q: int, seq_len_kv: int, block_size: int, device=None) -> tuple[Tensor, Tensor]:
    """Absolute query-block index of each plan row (R,) and key-block index (T,)."""
    first = (seq_len_kv - seq_len_q) // block_size
    nkb = num_blocks(seq_len_kv, block_size)
    return torch.arange(first, nkb, device=device), torch.arange(nkb, device=device)


def causal_blocks(seq_len_q: int, seq_len_kv: int, block_size: int, device=None) -> Tensor:
    """(R, T) bool: key block at or before the query block."""
    qb, kb = block_grid(seq_len_q, seq_len_kv, block_size, device)
    return kb[None, :] <= qb[:, None]


def same_segment(seq_len_q: int, seq_len_kv: int, block_size: int, segment_size: int, device=None) -> Tensor:
    """(R, T) bool: key block in the query block's segment (the diagonal segment, tail included)."""
    qb, kb = block_grid(seq_len_q, seq_len_kv, block_size, device)
    per_seg = segment_size // block_size
    return (kb[None, :] // per_seg) == (qb[:, None] // per_seg)


def masked_softmax(logits: Tensor, allowed: Tensor) -> Tensor:
    """fp32 softmax over the last dim restricted to ``allowed``; rows with nothing allowed give 0, rows with a NaN
    or +inf logit NaN (propagated, never zeroed)."""
    probs = torch.softmax(logits.float().masked_fill(~allowed, float("-inf")), dim=-1)
    return probs.masked_fill(~allowed.any(-1, keepdim=True), 0.0)


def pooled_queries(q: Tensor, query_perm: Tensor | None, seq_len_kv: int, block_size: int) -> Tensor:
    """Mean of the (permuted) queries in each plan row: (B, H, R, D) float32.

    Rows are aligned to absolute positions, so queries are laid out from the first row's start (front
    padding when Nk − Nq is not a multiple of block_size) and averaged over their real rows.
    """
    _batch, _heads, nq, dim = q.shape
    q_offset = seq_len_kv - nq
    rows = q if query_perm is None else torch.gather(q, 2, query_perm[..., None].expand(-1, -1, -1, dim))
    return block_means(rows, block_size, front=q_offset % block_size)


def mean_pooled_block_probs(
    q: Tensor,
    k: Tensor,
    allowed: Tensor,
    block_size: int,
    scale: float,
    key_perm: Tensor | None = None,
    query_perm: Tensor | None = None,
) -> Tensor:
    """Mean-pooled block scores (App. D.1 Alg. 2): softmax_kb(mean(q_blk) · mean(k_blk) · scale) over ``allowed``.

    q: (B, Hq, Nq, D); k: (B, Hkv, Nk, D); allowed: (R, T) or (B, H, R, T) bool.
    """
    pq = pooled_queries(q, query_perm, k.shape[2], block_size)  # (B, H, R, D)
    pk = pooled_keys(k, key_perm, q.shape[1], block_size)  # (B, H, T, D)
    logits = torch.matmul(pq, pk.transpose(-1, -2)) * scale  # (B, H, R, T)
    return masked_softmax(logits, allowed)


def antidiagonal_block_probs(
    q: Tensor,
    k: Tensor,
    allowed: Tensor,
    block_size: int,
    stride: int,
    scale: float,
    key_perm: Tensor | None = None,
    query_perm: Tensor | None = None,
    token_causal: bool = True,
    rows_per_chunk: int = 8,
) -> Tensor:
    """XAttention's strided antidiagonal scores, summed per tile and normalized per row: (B, H, R, T).

    Reshaped query i concatenates q[i*s + s-1-r] and reshaped key j concatenates k[j*s + r] (r = 0..s-1), so their
    dot product is the sum of one antidiagonal of the s×s sub-block of QKᵀ. Logits are scaled by scale / s,
    softmaxed in fp32 over the reshaped keys in ``allowed`` tiles (and, with ``token_causal``, at or before the
    reshaped query), then summed per tile. Positions are absolute; padding rows/keys are zero and excluded.
    Processed ``rows_per_chunk`` plan rows at a time so memory stays O(H · rows · N / s).
    """
    batch, heads, nq, dim = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    q_offset = nk - nq
    first = q_offset // block_size
    nkb = num_blocks(nk, block_size)
    rows = nkb - first
    per_block = block_size // stride
    padded = nkb * block_size

    if key_perm is not None and key_perm.shape[1] == heads:
        idx = key_perm[..., None].expand(-1, -1, -1, dim)
        k_src = torch.gather(k.repeat_interleave(heads // kv_heads, dim=1), 2, idx)  # (B, H, Nk, D)
    elif key_perm is not None:
        k_src = torch.gather(k, 2, key_perm[..., None].expand(-1, -1, -1, dim))  # (B, Hkv, Nk, D)
    else:
        k_src = k
    k_heads = k_src.shape[1]
    group = heads // k_heads
    k_pad = torch.nn.functional.pad(k_src.float(), (0, 0, 0, padded - nk))
    k_resh = k_pad.view(batch, k_heads, padded // stride, stride * dim)  # (B, Hk, N/s, s*D)
    key_real = (torch.arange(padded // stride, device=q.device) * stride) < nk  # reshaped key has a real token

    q_src = q if query_perm is None else torch.gather(q, 2, query_perm[..., None].expand(-1, -1, -1, dim))
    # absolute layout: slot for position p is p - first*bs; zero rows before q_offset and after Nk
    q_abs = torch.zeros(batch, heads, rows * block_size, dim, device=q.device)
    q_abs[:, :, q_offset - first * block_size : q_offset - first * block_size + nq] = q_src.float()
    q_abs = q_abs.view(batch, heads, rows * per_block, stride, dim).flip(3).reshape(
        batch, heads, rows * per_block, stride * dim
    )
    pos_lo = torch.arange(rows * per_block, device=q.device) * stride + first * block_size
    row_real = (pos_lo + stride - 1 >= q_offset) & (pos_lo < nk)  # reshaped row holds a real query

    if allowed.dim() == 2:
        allowed = allowed.expand(batch, heads, rows, nkb)
    out = torch.zeros(batch, heads, rows, nkb, device=q.device)
    key_pos = torch.arange(padded // stride, device=q.device)
    for r0 in range(0, rows, rows_per_chunk):
        r1 = min(rows, r0 + rows_per_chunk)
        qr = q_abs[:, :, r0 * per_block : r1 * per_block]  # (B, H, m, s*D)
        qr = qr.reshape(batch, k_heads, group * qr.shape[2], stride * dim)
        logits = torch.matmul(qr, k_resh.transpose(-1, -2)).view(batch, heads, -1, padded // stride)
        logits = logits * (scale / stride)
        ok = allowed[:, :, r0:r1].repeat_interleave(per_block, dim=2).repeat_interleave(per_block, dim=3)
        ok = ok & key_real
        if token_causal:
            row_pos = torch.arange(r0 * per_block, r1 * per_block, device=q.device) + first * per_block
            ok = ok & (key_pos[None, :] <= row_pos[:, None])
        probs = masked_softmax(logits, ok)  # (B, H, m, N/s)
        probs = probs.masked_fill(~row_real[r0 * per_block : r1 * per_block, None], 0.0)
        tile = probs.view(batch, heads, r1 - r0, per_block, nkb, per_block).sum(dim=(3, 5))
        out[:, :, r0:r1] = tile
    return _normalise(out)


def exact_block_mass(
    q: Tensor,
    k: Tensor,
    allowed: Tensor,
    block_size: int,
    scale: float,
    key_perm: Tensor | None = None,
) -> Tensor:
    """Exact attention mass per tile, averaged over each row's queries, renormalized over ``allowed``: (B, H, R, T).

    Token-level causal softmax over all keys (original positions); each key's probability is credited to the
    permuted block holding it. O(H · block_size · Nk) memory per row: meant for analysis at modest N.
    """
    batch, heads, nq, dim = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    group = heads // kv_heads
    q_offset = nk - nq
    first = q_offset // block_size
    nkb = num_blocks(nk, block_size)
    rows = nkb - first
    if key_perm is None:
        block_of_key = (torch.arange(nk, device=q.device) // block_size).expand(batch, heads, nk)
    else:
        block_of_key = torch.argsort(key_perm, dim=-1) // block_size
        if block_of_key.shape[1] != heads:
            block_of_key = block_of_key.repeat_interleave(heads // block_of_key.shape[1], dim=1)
    key_pos = torch.arange(nk, device=q.device)
    kf = k.float()
    out = torch.zeros(batch, heads, rows, nkb, device=q.device)
    for row in range(rows):
        lo = max(q_offset, (first + row) * block_size)
        hi = min(nk, (first + row + 1) * block_size)
        qr = q[:, :, lo - q_offset : hi - q_offset].float().reshape(batch, kv_heads, group * (hi - lo), dim)
        logits = (torch.matmul(qr, kf.transpose(-1, -2)) * scale).view(batch, heads, hi - lo, nk)
        visible = key_pos[None, :] <= torch.arange(lo, hi, device=q.device)[:, None]
        probs = masked_softmax(logits, visible)
        mass = torch.zeros(batch, heads, nkb, device=q.device)
        mass.scatter_add_(-1, block_of_key, probs.mean(dim=2))
        out[:, :, row] = mass
    if allowed.dim() == 2:
        allowed = allowed.expand(batch, heads, rows, nkb)
    return _normalise(out.masked_fill(~allowed, 0.0))


def _normalise(out: Tensor) -> Tensor:
    """Rows divided by their sum; all-zero rows stay 0 and NaN rows stay NaN."""
    total = out.sum(-1, keepdim=True)
    return torch.where(total == 0, torch.zeros_like(out), out / total.clamp(min=1e-30))
