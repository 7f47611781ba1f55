"""SparsePlan: the contract between the planning methods and the attention kernels.

Geometry (all positions are *absolute* token positions in the key sequence):

* ``Nk`` keys at positions ``0..Nk-1``; ``Nq <= Nk`` queries are the last ``Nq`` positions, so query row ``i``
  sits at position ``q_offset + i`` with ``q_offset = Nk - Nq``. Query ``p`` may see key ``j`` iff ``j <= p``.
* Blocks are aligned to absolute positions: key block ``kb`` covers permuted key *slots*
  ``[kb*bs, (kb+1)*bs) ∩ [0, Nk)``; plan row ``r`` is query block ``first_q_block + r`` and covers query slots
  whose positions fall in ``[(first_q_block+r)*bs, ...+bs) ∩ [q_offset, Nk)``.
* ``key_perm[b, hp, slot]`` is the original key index at a permuted slot (``None`` = identity; int64 from the
  torch planners, int32 from the fused ones); ``hp`` indexes either the query heads or the KV heads. ``query_perm[b, h, slot]`` is the original query
  row at a permuted query slot (``None`` = identity); outputs are always written to the original rows.
* Per (batch, query head, row) the plan lists key blocks in two disjoint groups, with FlexAttention's names:
  ``full_kv_*`` tiles need no mask (every key precedes every query of the row), ``kv_*`` tiles need the token
  causal mask on original positions. ``col_*`` lists individually gathered original key positions
  (MInference's vertical columns), also causally masked. ``win_*`` (optional, MInference's slash windows) lists
  key *windows* by their start: window ``s`` covers original key positions ``[s, s + block_size) ∩ [0, Nk)``
  (never permuted), causally masked, and counts as one tile. A key is never listed twice (tiles, columns and
  windows of a row are disjoint).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def num_blocks(n: int, block_size: int) -> int:
    return -(-n // block_size)


@dataclass(frozen=True)
class SparsePlan:
    """Which key tiles each query block attends to, and the permutations to apply.

    Shapes: ``B`` batch, ``H`` query heads, ``R`` plan rows (query blocks), ``M*`` padded list lengths.
    Counts are int32, block indices int32 or int16; entries past a row's count are padding (0) and must be ignored.
    A plan depends only on q, k, the method's settings and the scale: it can be reused for every call with those
    (e.g. timed repeatedly, or shared by layers that share them). ``planner`` says what built it ("torch" or
    "triton"), ``planner_note`` why a fused planner was not used (None if it was, or was not asked for).
    """

    block_size: int
    seq_len_q: int
    seq_len_kv: int
    kv_num_blocks: Tensor  # (B, H, R) partial tiles (token causal mask needed)
    kv_indices: Tensor  # (B, H, R, Mp) key block indices in permuted-slot space
    full_kv_num_blocks: Tensor  # (B, H, R) tiles needing no mask
    full_kv_indices: Tensor  # (B, H, R, Mf)
    key_perm: Tensor | None = None  # (B, Hp, Nk) int64/int32: permuted slot -> original key index
    query_perm: Tensor | None = None  # (B, H, Nq) int64/int32: permuted query slot -> original query row
    col_num: Tensor | None = None  # (B, H, R) gathered columns per row
    col_indices: Tensor | None = None  # (B, H, R, Mc) original key positions
    win_num: Tensor | None = None  # (B, H, R) key windows per row
    win_starts: Tensor | None = None  # (B, H, R, Mw) original position of each window's first key, ascending
    planner: str = "torch"
    planner_note: str | None = None

    def __repr__(self) -> str:
        batch, heads, rows = self.kv_num_blocks.shape
        def shape(t):
            return None if t is None else f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
        return (
            f"SparsePlan(density={self.density():.4f}, batch={batch}, heads={heads}, seq_len_q={self.seq_len_q}, "
            f"seq_len_kv={self.seq_len_kv}, block_size={self.block_size}, rows={rows}, "
            f"key_perm={shape(self.key_perm)}, query_perm={shape(self.query_perm)}, columns={shape(self.col_indices)}, "
            f"windows={shape(self.win_starts)}, "
            f"planner={self.planner!r}" + (f", planner_note={self.planner_note!r}" if self.planner_note else "") + ")"
        )

    @property
    def q_offset(self) -> int:
        return self.seq_len_kv - self.seq_len_q

    @property
    def first_q_block(self) -> int:
        return self.q_offset // self.block_size

    @property
    def num_rows(self) -> int:
        return num_blocks(self.seq_len_kv, self.block_size) - self.first_q_block

    @property
    def num_kv_blocks(self) -> int:
        return num_blocks(self.seq_len_kv, self.block_size)

    def tiles_per_head(self) -> Tensor:
        """(B, H) float64: computed tiles; a key window is one tile, gathered columns count as
        ceil(n_cols / block_size) tiles per row."""
        tiles = self.kv_num_blocks.double().sum(-1) + self.full_kv_num_blocks.double().sum(-1)
        if self.col_num is not None:
            tiles = tiles + torch.ceil(self.col_num.double() / self.block_size).sum(-1)
        if self.win_num is not None:
            tiles = tiles + self.win_num.double().sum(-1)
        return tiles

    def causal_tiles(self) -> int:
        """Tiles of dense causal attention over the plan's rows: T(T+1)/2 when Nq == Nk."""
        first, total = self.first_q_block, self.num_kv_blocks
        return sum(qb + 1 for qb in range(first, total))

    def density_per_head(self) -> Tensor:
        """(B, H) float64: computed tiles / dense causal tiles (the paper's block density)."""
        return self.tiles_per_head() / self.causal_tiles()

    def density(self) -> float:
        return float(self.density_per_head().mean())

    @staticmethod
    def from_block_mask(
        block_mask: Tensor,
        *,
        block_size: int,
        seq_len_q: int,
        seq_len_kv: int,
        num_kv_heads: int,
        key_perm: Tensor | None = None,
        query_perm: Tensor | None = None,
        col_indices: Tensor | None = None,
        col_valid: Tensor | None = None,
        win_starts: Tensor | None = None,
        win_valid: Tensor | None = None,
    ) -> SparsePlan:
        """Turn a (B, H, R, T) bool mask of selected tiles into index lists.

        Tiles that no query of the row can see (every key after every query, e.g. above the block diagonal
        without permutation) are dropped; the rest are split into full and partial tiles from the original
        positions they hold. ``col_indices`` (B, H, R, C) with ``col_valid`` adds gathered columns, and
        ``win_starts`` (B, H, R, W) with ``win_valid`` key windows (kept in their given order).
        """
        batch, heads, _rows, _nkb = block_mask.shape
        visible, full = tile_visibility(key_perm, query_perm, batch, heads, num_kv_heads, seq_len_q, seq_len_kv,
                                        block_size, block_mask.device)
        mask = block_mask & visible
        full_mask = mask & full
        partial_mask = mask & ~full
        kv_num, kv_idx = _mask_to_indices(partial_mask)
        full_num, full_idx = _mask_to_indices(full_mask)
        col_num = col_idx = None
        if col_indices is not None:
            col_num, col_idx = _compact(col_indices, col_valid)
        win_num = win_idx = None
        if win_starts is not None:
            win_num, win_idx = _compact(win_starts, win_valid)
        return SparsePlan(
            block_size=block_size,
            seq_len_q=seq_len_q,
            seq_len_kv=seq_len_kv,
            kv_num_blocks=kv_num,
            kv_indices=kv_idx,
            full_kv_num_blocks=full_num,
            full_kv_indices=full_idx,
            key_perm=key_perm,
            query_perm=query_perm,
            col_num=col_num,
            col_indices=col_idx,
            win_num=win_num,
            win_starts=win_idx,
        )

    def block_mask(self) -> Tensor:
        """(B, H, R, T) bool: every listed tile (full or partial). For tests and analysis, not for kernels."""
        batch, heads, rows = self.kv_num_blocks.shape
        out = torch.zeros(batch, heads, rows, self.num_kv_blocks, dtype=torch.bool, device=self.kv_indices.device)
        for num, idx in ((self.kv_num_blocks, self.kv_indices), (self.full_kv_num_blocks, self.full_kv_indices)):
            valid = torch.arange(idx.shape[-1], device=idx.device) < num[..., None]
            b, h, r, m = torch.nonzero(valid, as_tuple=True)
            out[b, h, r, idx[b, h, r, m].long()] = True
        return out

    def key_counts(self) -> Tensor:
        """(B, H, R, Nk) int32: how often each original key position is listed per row (tiles, columns and
        windows; 0 or 1 under the plan's contract). O(B·H·R·Nk) memory: for tests and analysis."""
        batch, heads, rows = self.kv_num_blocks.shape
        nk, bs = self.seq_len_kv, self.block_size
        device = self.kv_indices.device
        out = torch.zeros(batch, heads, rows, nk + 1, dtype=torch.int32, device=device)  # last column: spill
        lane = torch.arange(bs, device=device)
        perm = self.key_perm
        if perm is not None and perm.shape[1] != heads:
            perm = perm.repeat_interleave(heads // perm.shape[1], dim=1)
        for num, idx in ((self.kv_num_blocks, self.kv_indices), (self.full_kv_num_blocks, self.full_kv_indices)):
            slots = (idx.long()[..., None] * bs + lane).flatten(-2)  # (B, H, R, M*bs)
            valid = (torch.arange(idx.shape[-1], device=device) < num[..., None]).repeat_interleave(bs, -1)
            valid = valid & (slots < nk)
            slots = slots.clamp(max=nk - 1)
            keys = slots if perm is None else torch.gather(perm[:, :, None].expand(-1, -1, rows, -1), -1, slots)
            out.scatter_add_(-1, torch.where(valid, keys, nk), valid.to(torch.int32))
        if self.col_indices is not None:
            valid = torch.arange(self.col_indices.shape[-1], device=device) < self.col_num[..., None]
            out.scatter_add_(-1, torch.where(valid, self.col_indices.long(), nk), valid.to(torch.int32))
        if self.win_starts is not None:
            keys = (self.win_starts.long()[..., None] + lane).flatten(-2)
            valid = (torch.arange(self.win_starts.shape[-1], device=device) < self.win_num[..., None])
            valid = valid.repeat_interleave(bs, -1) & (keys < nk)
            out.scatter_add_(-1, torch.where(valid, keys, nk), valid.to(torch.int32))
        return out[..., :nk]


def tile_visibility(key_perm, query_perm, batch, heads, num_kv_heads, seq_len_q, seq_len_kv, block_size,
                    device=None) -> tuple[Tensor, Tensor]:
    """(B, H, R, T) bool pair: some key of the tile precedes some query of the row (``visible``), and every key
    precedes every query (``full``: no mask needed), from original positions."""
    kmin, kmax = _key_block_bounds(key_perm, batch, heads, num_kv_heads, seq_len_kv, block_size, device)
    qmin, qmax = _query_row_bounds(query_perm, batch, heads, seq_len_q, seq_len_kv, block_size, device)
    return kmin[:, :, None, :] <= qmax[:, :, :, None], kmax[:, :, None, :] <= qmin[:, :, :, None]


def _key_block_bounds(key_perm, batch, heads, num_kv_heads, nk, bs, device):
    """(B, H, T) min and max original key position in each permuted key block."""
    nkb = num_blocks(nk, bs)
    if key_perm is None:
        start = torch.arange(nkb, device=device) * bs
        kmin = start.expand(batch, heads, nkb)
        kmax = torch.clamp(start + bs - 1, max=nk - 1).expand(batch, heads, nkb)
        return kmin, kmax
    pad = nkb * bs - nk
    perm = key_perm
    lo = torch.nn.functional.pad(perm, (0, pad), value=nk).view(*perm.shape[:2], nkb, bs).amin(-1)
    hi = torch.nn.functional.pad(perm, (0, pad), value=-1).view(*perm.shape[:2], nkb, bs).amax(-1)
    if perm.shape[1] != heads:
        group = heads // perm.shape[1]
        lo = lo.repeat_interleave(group, dim=1)
        hi = hi.repeat_interleave(group, dim=1)
    return lo, hi


def _query_row_bounds(query_perm, batch, heads, nq, nk, bs, device):
    """(B, H, R) min and max original query position in each plan row."""
    q_offset = nk - nq
    first = q_offset // bs
    rows = num_blocks(nk, bs) - first
    if query_perm is None:
        start = torch.arange(first, first + rows, device=device) * bs
        qmin = torch.clamp(start, min=q_offset).expand(batch, heads, rows)
        qmax = torch.clamp(start + bs - 1, max=nk - 1).expand(batch, heads, rows)
        return qmin, qmax
    pos = torch.arange(nq, device=device) + q_offset  # slot positions
    row_of_slot = pos // bs - first
    orig = query_perm + q_offset
    big = torch.iinfo(torch.int64).max
    qmin = torch.full((batch, heads, rows), big, dtype=torch.int64, device=device)
    qmax = torch.full((batch, heads, rows), -1, dtype=torch.int64, device=device)
    index = row_of_slot.expand(batch, heads, nq)
    qmin.scatter_reduce_(-1, index, orig.long(), reduce="amin")
    qmax.scatter_reduce_(-1, index, orig.long(), reduce="amax")
    return qmin, qmax


def _mask_to_indices(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(..., T) bool -> counts (...,) int32 and ascending indices (..., M) int32, zero-padded.

    One cumsum and one scatter (O(T)) rather than a sort: planning time matters at 128K (T = 1024).
    """
    counts = mask.sum(-1)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    slot = torch.where(mask, mask.cumsum(-1, dtype=torch.int32) - 1, width)  # unselected -> spill column
    out = torch.zeros(*mask.shape[:-1], width + 1, dtype=torch.int32, device=mask.device)
    index = torch.arange(mask.shape[-1], dtype=torch.int32, device=mask.device).expand_as(slot)
    out.scatter_(-1, slot.long(), index)
    out = out[..., :width]
    valid = torch.arange(width, device=mask.device) < counts[..., None]
    return counts.to(torch.int32), torch.where(valid, out, 0)


def _compact(values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Move the valid entries of each row to the front, in their original order."""
    counts = valid.sum(-1)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    order = torch.argsort((~valid).to(torch.int8), dim=-1, stable=True)[..., :width]
    picked = torch.gather(values, -1, order)
    keep = torch.arange(width, device=values.device) < counts[..., None]
    return counts.to(torch.int32), torch.where(keep, picked, 0).to(torch.int32)
