"""Segmented permutations (PBS-Attn §3.2): keys sorted by importance, queries grouped by their key blocks.

A permutation maps a permuted *slot* to an original index and only moves tokens inside their segment of
``segment_size`` tokens, so the order of segments (and with it causality across segments) is unchanged.
Tokens past the last complete segment keep their place.
"""

from __future__ import annotations

import torch
from torch import Tensor


def key_importance(q: Tensor, k: Tensor, block_size: int, segment_size: int, scale: float) -> Tensor:
    """Importance of each key from the last block of queries (Eq. 7): (B, Hq, G*S) float32.

    q: (B, Hq, Nq, D), k: (B, Hkv, Nk, D). Scores against the keys of the G = Nk // S complete segments, fp32
    softmax over those keys per query row (no causal mask, as in the paper), mean over the last
    ``min(block_size, Nq)`` query rows.
    """
    batch, heads, _, dim = q.shape
    kv_heads = k.shape[1]
    complete = (k.shape[2] // segment_size) * segment_size
    if complete == 0:
        return q.new_zeros(batch, heads, 0, dtype=torch.float32)
    group = heads // kv_heads
    q_last = q[:, :, -block_size:]  # (B, Hq, m, D)
    out = torch.empty(batch, heads, complete, dtype=torch.float32, device=q.device)
    # one KV head at a time: fp32 scores are (group·m) × complete per KV head (256 MiB at 128K, not 2 GiB)
    for h in range(kv_heads):
        qh = q_last[:, h * group : (h + 1) * group].reshape(batch, 1, -1, dim)  # (B, 1, G*m, D)
        # the matmul runs in the inputs' dtype (fp32 accumulation on GPUs); the softmax in fp32, as the paper
        logits = torch.matmul(qh, k[:, h : h + 1, :complete].transpose(-1, -2)).float()  # (B, 1, G*m, G*S)
        probs = torch.softmax(logits.mul_(scale), dim=-1).view(batch, group, -1, complete)
        out[:, h * group : (h + 1) * group] = probs.mean(dim=2)
    return out


def sort_within_segments(importance: Tensor, seq_len: int, segment_size: int) -> Tensor:
    """Key permutation (Eq. 8): (..., seq_len) int64, each complete segment sorted by importance, descending.

    importance: (..., G*S) for the complete segments; the tail ``seq_len - G*S`` stays in place.
    Ties keep their natural order (stable sort), so constant importance gives the identity.
    """
    complete = importance.shape[-1]
    lead = importance.shape[:-1]
    segs = complete // segment_size
    order = torch.argsort(-importance.reshape(*lead, segs, segment_size), dim=-1, stable=True)
    base = torch.arange(segs, device=importance.device)[:, None] * segment_size
    perm = (order + base).reshape(*lead, complete)
    tail = torch.arange(complete, seq_len, device=importance.device).expand(*lead, seq_len - complete)
    return torch.cat([perm, tail], dim=-1)


def key_permutation(
    q: Tensor, k: Tensor, block_size: int, segment_size: int, scale: float, share: str = "q_head"
) -> Tensor:
    """PBS key permutation: (B, Hq, Nk) for ``share="q_head"``, (B, Hkv, Nk) for ``share="kv_head"``.

    With ``kv_head`` the importance is averaged over the query heads of each GQA group (App. G), so one
    permutation serves the whole group. [Note] App. G describes averaging the group's queries; averaging their
    attention probabilities instead keeps each head's own softmax and estimates the group's mass directly.
    """
    importance = key_importance(q, k, block_size, segment_size, scale)
    if share == "kv_head":
        batch, heads, n = importance.shape
        kv_heads = k.shape[1]
        importance = importance.view(batch, kv_heads, heads // kv_heads, n).mean(dim=2)
    return sort_within_segments(importance, k.shape[2], segment_size)


def pooled_keys(k: Tensor, key_perm: Tensor | None, heads: int, block_size: int) -> Tensor:
    """Mean of each permuted key block: (B, heads, T, D) float32, T = ceil(Nk / block_size).

    k: (B, Hkv, Nk, D); key_perm: (B, Hp, Nk) or None. A partial last block is averaged over its real keys.
    """
    _batch, kv_heads, _nk, dim = k.shape
    hp = kv_heads if key_perm is None else key_perm.shape[1]
    if key_perm is None:
        pooled = block_means(k, block_size)
    else:  # gather permuted rows one KV head at a time: no atomics, and no copy of K for all heads at once
        per_kv = hp // kv_heads
        pooled = torch.cat(
            [
                block_means(
                    torch.gather(
                        k[:, h : h + 1].expand(-1, per_kv, -1, -1), 2,
                        key_perm[:, h * per_kv : (h + 1) * per_kv, :, None].expand(-1, -1, -1, dim),
                    ),
                    block_size,
                )
                for h in range(kv_heads)
            ],
            dim=1,
        )
    return pooled.repeat_interleave(heads // hp, dim=1) if hp != heads else pooled


def block_means(x: Tensor, block_size: int, front: int = 0) -> Tensor:
    """(B, H, N, D) -> (B, H, ceil((front + N) / block_size), D) float32 block means over real rows.

    ``front`` zero rows are placed before x so blocks align to absolute positions; padding is not averaged.
    """
    batch, heads, n, dim = x.shape
    nb = -(-(front + n) // block_size)
    back = nb * block_size - front - n
    if front or back:
        x = torch.nn.functional.pad(x, (0, 0, front, back))
    sums = x.view(batch, heads, nb, block_size, dim).sum(3, dtype=torch.float32)
    start = torch.arange(nb, device=x.device) * block_size
    counts = (torch.clamp(start + block_size, max=front + n) - torch.clamp(start, min=front)).clamp(min=1)
    return sums / counts[:, None].float()


def query_permutation(
    q: Tensor, k: Tensor, key_perm: Tensor | None, block_size: int, segment_size: int
) -> Tensor:
    """Key-aware query permutation (§4.3 ablation): (B, Hq, Nq) int64, permuted slot -> original query row.

    Centroids are the mean-pooled (permuted) key blocks. Inside each complete segment of absolute positions,
    each query takes the earlier-segment centroid it is most cosine-similar to; the segment's queries are then
    ordered greedily by that centroid (ties by decreasing similarity), so queries that want the same key
    blocks share a query block. Queries in the first segment, in a segment only partly inside the query
    range, or in the tail keep their place.
    """
    batch, heads, nq, _dim = q.shape
    nk = k.shape[2]
    q_offset = nk - nq
    centroids = torch.nn.functional.normalize(pooled_keys(k, key_perm, heads, block_size), dim=-1)  # (B,H,T,D)
    perm = torch.arange(nq, device=q.device).expand(batch, heads, nq).clone()
    blocks_per_seg = segment_size // block_size
    for seg in range(1, nk // segment_size):
        lo, hi = seg * segment_size, (seg + 1) * segment_size
        if lo < q_offset:
            continue
        qs = torch.nn.functional.normalize(q[:, :, lo - q_offset : hi - q_offset].float(), dim=-1)
        sims = torch.matmul(qs, centroids[:, :, : seg * blocks_per_seg].transpose(-1, -2))  # (B, H, S, seg*S/bs)
        best_sim, best = sims.max(dim=-1)
        # Group by centroid, most similar first; the key is exact since |best_sim| <= 1.
        key = best.double() * 4.0 - best_sim.double()
        order = torch.argsort(key, dim=-1, stable=True)
        perm[:, :, lo - q_offset : hi - q_offset] = order + (lo - q_offset)
    return perm
