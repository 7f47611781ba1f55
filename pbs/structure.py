"""Where a head's attention mass goes: sinks, local window, vertical columns, slash diagonals (model analysis).

Sparse prefill methods bet on these structures (StreamingLLM's sink + local window, MInference's vertical + slash
lines, PBS's permutable key clusters); measuring their share of the causal softmax mass says how much of that bet a
model (e.g. the proxy) honours. Every (query, key) entry of the causal attention matrix goes to the first class it
belongs to, in this order:

* ``sink``: key position < ``sink_tokens``;
* ``local``: 0 <= query position - key position < ``local_window``;
* ``vertical``: key among the head's ``vertical_fraction`` * Nk columns with the most mass outside sink and local;
* ``slash``: offset (query - key) among the head's ``slash_fraction`` * Nk diagonals with the most mass outside
  sink, local and the vertical columns;
* ``other``: everything else.

A share is the mean over query rows of the row's mass in that class (each causal row sums to 1), so the five
shares of a head sum to 1. Exact (no estimation): the probabilities are recomputed per chunk of query rows in
float32, twice (once for the column and diagonal masses, once for the shares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

CLASSES = ("sink", "local", "vertical", "slash", "other")


@dataclass(frozen=True)
class StructureConfig:
    """How the classes are drawn. Counts of vertical columns / slash diagonals are fractions of Nk (at least 1)."""

    sink_tokens: int = 4
    local_window: int = 64
    vertical_fraction: float = 0.01
    slash_fraction: float = 0.01
    query_chunk: int = 512  # rows of probabilities held at once: query_chunk x Nk floats per head

    def __post_init__(self):
        for name in ("sink_tokens", "local_window", "query_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "query_chunk" else 0):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'query_chunk' else 0}, got "
                                 f"{name}={value!r}")
        for name in ("vertical_fraction", "slash_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {name}={value!r}")


def _row_probs(qh: Tensor, kh: Tensor, rows: Tensor, keys: Tensor, scale: float) -> Tensor:
    """Causal softmax probabilities (len(rows), Nk) of query rows at absolute positions ``rows``."""
    logits = (qh @ kh.T).float() * scale
    logits = logits.masked_fill(keys[None, :] > rows[:, None], float("-inf"))
    return torch.softmax(logits, dim=-1)


def attention_structure(q: Tensor, k: Tensor, config: StructureConfig | None = None, *,
                        scale: float | None = None) -> dict[str, Tensor]:
    """Share of causal attention mass per class, per head.

    Args:
        q: (B, Hq, Nq, D) queries at the last Nq positions of the Nk keys (prefill: Nq == Nk).
        k: (B, Hkv, Nk, D) keys; Hq a multiple of Hkv (GQA).
        config: the classes (:class:`StructureConfig`); scale: softmax scale, default 1/sqrt(D).

    Returns:
        ``{class: (B, Hq) float64 share}`` for every class of :data:`CLASSES` (they sum to 1 per head), plus
        ``"vertical_count"`` and ``"slash_count"`` (ints as 0-d tensors): the numbers of columns / diagonals used.
    """
    cfg = config or StructureConfig()
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be (B, H, N, D), got q.shape={tuple(q.shape)} and k.shape={tuple(k.shape)}")
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    if k.shape[0] != b or k.shape[3] != d or hkv == 0 or hq % hkv:
        raise ValueError(f"k must be (B, Hkv, Nk, D) with Hq a multiple of Hkv, got q.shape={tuple(q.shape)} and "
                         f"k.shape={tuple(k.shape)}")
    if not 0 < nq <= nk:
        raise ValueError(f"need 0 < Nq <= Nk, got Nq={nq} and Nk={nk}")
    scale = d**-0.5 if scale is None else scale
    n_vert = max(1, math.ceil(cfg.vertical_fraction * nk)) if cfg.vertical_fraction > 0 else 0
    n_slash = max(1, math.ceil(cfg.slash_fraction * nk)) if cfg.slash_fraction > 0 else 0
    device = q.device
    keys = torch.arange(nk, device=device)
    shares = {c: torch.zeros(b, hq, dtype=torch.float64) for c in CLASSES}
    chunks = [torch.arange(s, min(s + cfg.query_chunk, nq), device=device) + (nk - nq)
              for s in range(0, nq, cfg.query_chunk)]

    def base_classes(rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        offset = rows[:, None] - keys[None, :]
        sink = (keys < cfg.sink_tokens)[None, :].expand_as(offset)
        local = (offset >= 0) & (offset < cfg.local_window) & ~sink
        return sink, local, offset

    for bi in range(b):
        for h in range(hq):
            qh, kh = q[bi, h], k[bi, h // (hq // hkv)]
            # pass 1: column and diagonal masses outside sink and local
            col_mass = torch.zeros(nk, dtype=torch.float64, device=device)
            for rows in chunks:
                p = _row_probs(qh[rows - (nk - nq)], kh, rows, keys, scale)
                sink, local, _ = base_classes(rows)
                col_mass += p.masked_fill(sink | local, 0.0).sum(0, dtype=torch.float64)
            vertical = torch.zeros(nk, dtype=torch.bool, device=device)
            if n_vert:
                vertical[torch.topk(col_mass, min(n_vert, nk)).indices] = True
            diag_mass = torch.zeros(nk, dtype=torch.float64, device=device)
            for rows in chunks:
                p = _row_probs(qh[rows - (nk - nq)], kh, rows, keys, scale)
                sink, local, offset = base_classes(rows)
                rest = p.masked_fill(sink | local | vertical[None, :] | (offset < 0), 0.0)
                diag_mass.scatter_add_(0, offset.clamp(min=0).flatten(), rest.flatten().double())
            slash = torch.zeros(nk, dtype=torch.bool, device=device)
            if n_slash:
                slash[torch.topk(diag_mass, min(n_slash, nk)).indices] = True
            # pass 2: each entry's class, in order
            sums = dict.fromkeys(CLASSES, 0.0)
            for rows in chunks:
                p = _row_probs(qh[rows - (nk - nq)], kh, rows, keys, scale).double()
                sink, local, offset = base_classes(rows)
                vert = vertical[None, :] & ~sink & ~local
                sl = slash[offset.clamp(min=0)] & (offset >= 0) & ~sink & ~local & ~vert
                masses = {"sink": p[sink].sum(), "local": p[local].sum(), "vertical": p[vert].sum(),
                          "slash": p[sl].sum()}
                masses["other"] = p.sum() - sum(masses.values())
                for c in CLASSES:
                    sums[c] += float(masses[c])
            for c in CLASSES:
                shares[c][bi, h] = sums[c] / nq
    return {**shares, "vertical_count": torch.tensor(n_vert), "slash_count": torch.tensor(n_slash)}


def block_attention_mass(q: Tensor, k: Tensor, block_size: int, *, key_perm: Tensor | None = None,
                         scale: float | None = None, query_chunk: int = 512) -> Tensor:
    """Causal attention mass per (query block, key block) of one head: the picture behind a block mask.

    Args:
        q: (Nq, D) queries at the last Nq of the Nk key positions; k: (Nk, D); block_size: tile size in tokens.
        key_perm: (Nk,) optional permuted slot -> original key index (PBS's key permutation): key blocks are then
            blocks of permuted slots, as the kernel sees them.

    Returns:
        (ceil(Nq / block_size), ceil(Nk / block_size)) float64: the mean over a query block's rows of the mass in
        each key block (a row of the result sums to 1).
    """
    if q.dim() != 2 or k.dim() != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"q and k must be (N, D) with the same D, got q.shape={tuple(q.shape)} and "
                         f"k.shape={tuple(k.shape)}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got block_size={block_size!r}")
    nq, nk = q.shape[0], k.shape[0]
    if not 0 < nq <= nk:
        raise ValueError(f"need 0 < Nq <= Nk, got Nq={nq} and Nk={nk}")
    if key_perm is not None and tuple(key_perm.shape) != (nk,):
        raise ValueError(f"key_perm must be ({nk},), got key_perm.shape={tuple(key_perm.shape)}")
    scale = q.shape[1] ** -0.5 if scale is None else scale
    keys = torch.arange(nk, device=q.device)
    slot_of_key = torch.empty_like(keys)
    if key_perm is None:
        slot_of_key = keys
    else:
        slot_of_key[key_perm.long()] = keys
    nqb, nkb = -(-nq // block_size), -(-nk // block_size)
    out = torch.zeros(nqb, nkb, dtype=torch.float64, device=q.device)
    rows_per_block = torch.zeros(nqb, dtype=torch.float64, device=q.device)
    for s in range(0, nq, query_chunk):
        local_rows = torch.arange(s, min(s + query_chunk, nq), device=q.device)
        p = _row_probs(q[local_rows], k, local_rows + (nk - nq), keys, scale).double()
        per_key_block = torch.zeros(len(local_rows), nkb, dtype=torch.float64, device=q.device)
        per_key_block.index_add_(1, slot_of_key // block_size, p)
        qblock = local_rows // block_size
        out.index_add_(0, qblock, per_key_block)
        rows_per_block.index_add_(0, qblock, torch.ones_like(qblock, dtype=torch.float64))
    return out / rows_per_block[:, None]
