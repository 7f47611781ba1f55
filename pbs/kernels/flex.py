"""A SparsePlan run through PyTorch FlexAttention: a second implementation and a speed baseline (``backend="flex"``).

The plan maps onto a ``BlockMask`` almost one to one (``BlockMask.from_kv_blocks``, ``BLOCK_SIZE =
plan.block_size``): the plan's ``full_kv_*`` tiles become FlexAttention's full blocks (no ``mask_mod``), its
``kv_*`` tiles the partial blocks, where ``mask_mod`` applies the token causal test on *original* positions,
``key_perm[slot] <= query_perm[slot] + q_offset``. What FlexAttention cannot express directly is adapted:

* Key permutation. FlexAttention reads K/V rows by their index and cannot gather them through ``key_perm``, so
  a permuted copy of K and V is made first (one gather, O(B·H·Nk·D) memory and bandwidth per call): per KV head
  when ``key_perm`` has Hkv heads (GQA stays native, ``enable_gqa=True``), per query head otherwise, which
  expands K/V to Hq heads (Hq/Hkv times the K/V memory). Our Triton kernel gathers inside the kernel instead;
  the copy is part of this baseline's cost.
* Query permutation. Q rows are gathered by ``query_perm`` and the output is scattered back to natural order.
* Alignment. Plan row ``r`` is absolute query block ``first_q_block + r`` while FlexAttention's ``q_idx``
  counts from 0, so ``q_offset % block_size`` zero rows are put in front of Q: q block ``r`` is then plan row
  ``r``. The padding rows see nothing (``mask_mod`` gives them original position -1; full tiles of row 0, which
  skip ``mask_mod``, are demoted to partial tiles when there is padding) and are dropped from the output. Nq
  and Nk need not be multiples of the block size (``seq_lengths`` gives the true lengths).
* Gathered columns (MInference's ``col_*``). The key blocks holding the columns are added as partial tiles, and
  ``mask_mod`` admits a key of a partial tile only if it is causal and (its tile is listed in the plan, or it
  is a listed column of the row), through a per-(b, h, row, key slot) bool lookup of B·H·R·T·block_size
  elements. Above 2**31 elements this raises ValueError: use ``backend="triton"``.
* Key windows (MInference's ``win_*``: unaligned runs of block_size keys). Each window's keys are admitted
  exactly as gathered columns are (the one or two key blocks it straddles become partial tiles, the lookup
  admits its keys), so the plan runs exactly, within the same lookup limit.

Execution. On CUDA the call goes through one module-level ``torch.compile(flex_attention, dynamic=False,
fullgraph=True)``, created on first use: the fused Triton kernel that honours the block mask, i.e. what a user
would benchmark (kernel options: see ``_kernel_options``). ``fullgraph=True`` turns dynamo's recompile limit
into an error instead of a silent fallback to eager (whose math path ignores block sparsity, which would give
wrong results here), and the call raises that limit locally to ``_RECOMPILE_LIMIT``, since every new (shape,
dtype, mask variant) is a recompile under ``dynamic=False`` (1-15 s each on an H200).
On CPU the call runs *eager* FlexAttention: inductor's CPU FlexAttention compiles and is correct (torch 2.13),
but took 15-46 s per new shape on 2 cores (eager: 0.04-0.5 s a call), far too slow for tests. Eager
FlexAttention is a math path that ignores the block structure and applies only ``mask_mod`` to a materialized
(B, H, Lq, Nk) score matrix, so on that path ``mask_mod`` also emulates the block mask exactly as the kernel
uses it (full tile: visible, partial tile: ``mask_mod``, unlisted tile: hidden), built from the BlockMask's own
index lists. ``compiled=`` overrides the choice.

Rows that see no key are 0 (as in ``pbs.reference``); the output has q's dtype. Forward only.
"""

from __future__ import annotations

import inspect
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, FlexKernelOptions, flex_attention

from ..plan import SparsePlan

_MAX_LOOKUP_ELEMENTS = 2**31  # per-(b, h, row, key) bool lookup for gathered columns
_RECOMPILE_LIMIT = 256  # dynamo recompiles allowed for the compiled flex_attention (default 8)
_FAR = 2**30  # original position of padding key slots: after every query

_compiled_flex = None
_HAS_COMPUTE_Q_BLOCKS = "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters


def _get_compiled():
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False, fullgraph=True)
    return _compiled_flex


def flex_attend(q: Tensor, k: Tensor, v: Tensor, plan: SparsePlan, scale: float, *,
                compiled: bool | None = None) -> Tensor:
    """Run the plan with FlexAttention: q (B, Hq, Nq, D), k, v (B, Hkv, Nk, D) -> (B, Hq, Nq, D), natural order.

    ``compiled``: None = compiled on CUDA, eager elsewhere (see the module docstring).
    """
    batch, heads, nq, dim = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    if plan.seq_len_q != nq or plan.seq_len_kv != nk or tuple(plan.kv_num_blocks.shape[:2]) != (batch, heads):
        raise ValueError(
            f"plan does not match the inputs: plan (Nq={plan.seq_len_q}, Nk={plan.seq_len_kv}, "
            f"B,H={tuple(plan.kv_num_blocks.shape[:2])}) vs q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if compiled is None:
        compiled = q.is_cuda
    group = heads // kv_heads
    bs, first, q_offset = plan.block_size, plan.first_q_block, plan.q_offset
    nkb = plan.num_kv_blocks
    pad = q_offset - first * bs  # zero rows in front of Q so that q block r is plan row r
    device = q.device

    # -- keys: FlexAttention cannot gather through key_perm, so permute K/V physically --
    key_perm = plan.key_perm
    if key_perm is None:
        k_in, v_in = k, v
    elif key_perm.shape[1] == kv_heads:  # one permutation per KV head: GQA stays native
        index = key_perm[..., None].expand(-1, -1, -1, dim)
        k_in, v_in = torch.gather(k, 2, index), torch.gather(v, 2, index)
    else:  # one permutation per query head: K/V expanded to Hq heads
        b_idx = torch.arange(batch, device=device)[:, None, None]
        h_idx = torch.arange(heads, device=device)[None, :, None] // group
        k_in, v_in = k[b_idx, h_idx, key_perm], v[b_idx, h_idx, key_perm]
    enable_gqa = k_in.shape[1] != heads

    # -- queries: gather by query_perm, then pad in front to align q blocks with plan rows --
    q_in = q if plan.query_perm is None else torch.gather(q, 2, plan.query_perm[..., None].expand(-1, -1, -1, dim))
    if pad:
        q_in = F.pad(q_in, (0, 0, pad, 0))
    q_len = pad + nq

    # -- tiles --
    partial = _dense_tiles(plan.kv_num_blocks, plan.kv_indices, nkb)  # (B, H, R, T) bool
    full = _dense_tiles(plan.full_kv_num_blocks, plan.full_kv_indices, nkb)
    if pad:  # full tiles skip mask_mod: demote row 0's so that its padding rows see nothing
        partial[:, :, 0] |= full[:, :, 0]
        full[:, :, 0] = False
    allow = None
    if plan.col_indices is not None or plan.win_starts is not None:
        allow, col_tiles = _column_lookup(plan, partial | full, heads, device)
        partial |= col_tiles & ~full

    kv_num, kv_idx = _tile_indices(partial)
    full_num, full_idx = _tile_indices(full)
    mask_mod = _make_mask_mod(plan, heads, q_len, bs, first, pad, allow, device)
    if not compiled:  # emulate from the very index lists that the BlockMask carries
        mask_mod = _emulate_block_mask(mask_mod, _dense_tiles(kv_num, kv_idx, nkb),
                                       _dense_tiles(full_num, full_idx, nkb), bs)
    extra = {"compute_q_blocks": False} if _HAS_COMPUTE_Q_BLOCKS else {}  # forward only
    block_mask = BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=bs, mask_mod=mask_mod, seq_lengths=(q_len, nk), **extra
    )

    if compiled:
        options = _kernel_options(bs, q.dtype) if q.is_cuda else None
        with torch._dynamo.config.patch(recompile_limit=max(_RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)):
            out = _get_compiled()(q_in, k_in, v_in, block_mask=block_mask, scale=scale, enable_gqa=enable_gqa,
                                  kernel_options=options)
    else:
        with warnings.catch_warnings():  # eager is deliberate here (see the module docstring)
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            out = flex_attention(q_in, k_in, v_in, block_mask=block_mask, scale=scale, enable_gqa=enable_gqa)

    out = out[:, :, pad:]
    if plan.query_perm is None:
        return out.to(q.dtype).contiguous()
    natural = torch.empty(batch, heads, nq, out.shape[-1], dtype=q.dtype, device=device)
    return natural.scatter_(2, plan.query_perm[..., None].expand(-1, -1, -1, out.shape[-1]), out.to(q.dtype))


def _kernel_options(bs: int, dtype: torch.dtype) -> dict:
    """Triton options for the fused kernel.

    * ``BACKEND="TRITON"`` (``FORCE_USE_FLEX_ATTENTION`` before it existed): the main kernel. For Lq < 128
      inductor would pick its decoding kernel, which needs next_pow2(Lq · group) to divide the sparse q block
      and fails ("No choices to select") on multi-row plans.
    * BLOCK_M / BLOCK_N must divide the sparse block size. Inductor's defaults (H100: up to 128 x 128) do for
      block_size >= 128 and are kept; smaller plan blocks get BLOCK_M = block_size, BLOCK_N = min(block_size, 64)
      (32 in fp32).
    """
    if "BACKEND" in FlexKernelOptions.__annotations__:
        options: dict = {"BACKEND": "TRITON"}
    else:  # older torch: the legacy knob
        options = {"FORCE_USE_FLEX_ATTENTION": True}
    if bs % 128:
        pow2 = bs & -bs  # largest power of two dividing bs
        options["BLOCK_M"] = min(pow2, 128)
        options["BLOCK_N"] = min(pow2, 32 if dtype == torch.float32 else 64)
    return options


def _make_mask_mod(plan: SparsePlan, heads: int, q_len: int, bs: int, first: int, pad: int,
                   allow: Tensor | None, device):
    """Token causal test on original positions (+ the gathered-column lookup), indexed by FlexAttention's q_idx."""
    nkb = plan.num_kv_blocks
    shift = first * bs  # original position of q_idx without query permutation (q_idx - pad + q_offset)
    kpos = qpos = None
    hdiv = 1
    if plan.key_perm is not None:  # original key position per slot; padding slots (if ever read) are hidden
        kpos = F.pad(plan.key_perm.to(torch.int32), (0, nkb * bs - plan.seq_len_kv), value=_FAR)
        hdiv = heads // plan.key_perm.shape[1]
    if plan.query_perm is not None:  # original position per q_idx; -1 for the padding rows (front and back)
        qpos = torch.full((*plan.query_perm.shape[:2], plan.num_rows * bs), -1, dtype=torch.int32, device=device)
        qpos[:, :, pad:q_len] = (plan.query_perm + plan.q_offset).to(torch.int32)

    if kpos is None and qpos is None:
        if pad:
            def causal(b, h, q_idx, kv_idx):
                return (kv_idx <= q_idx + shift) & (q_idx >= pad)
        else:
            def causal(b, h, q_idx, kv_idx):
                return kv_idx <= q_idx + shift
    elif qpos is None:
        if pad:
            def causal(b, h, q_idx, kv_idx):
                return (kpos[b, h // hdiv, kv_idx] <= q_idx + shift) & (q_idx >= pad)
        else:
            def causal(b, h, q_idx, kv_idx):
                return kpos[b, h // hdiv, kv_idx] <= q_idx + shift
    elif kpos is None:
        def causal(b, h, q_idx, kv_idx):
            return kv_idx <= qpos[b, h, q_idx]
    else:
        def causal(b, h, q_idx, kv_idx):
            return kpos[b, h // hdiv, kv_idx] <= qpos[b, h, q_idx]

    if allow is None:
        return causal

    def causal_listed(b, h, q_idx, kv_idx):
        return causal(b, h, q_idx, kv_idx) & allow[b, h, q_idx // bs, kv_idx]

    return causal_listed


def _emulate_block_mask(mask_mod, partial: Tensor, full: Tensor, bs: int):
    """For eager FlexAttention (a math path that ignores the BlockMask): what the fused kernel computes."""

    def emulated(b, h, q_idx, kv_idx):
        qb, kb = q_idx // bs, kv_idx // bs
        return full[b, h, qb, kb] | (partial[b, h, qb, kb] & mask_mod(b, h, q_idx, kv_idx))

    return emulated


def _listed_keys(plan: SparsePlan) -> tuple[Tensor, Tensor]:
    """Original key positions (B, H, R, M) listed one by one (gathered columns, then window keys) and validity."""
    parts, valids = [], []
    if plan.col_indices is not None:
        parts.append(plan.col_indices.long())
        width = plan.col_indices.shape[-1]
        valids.append(torch.arange(width, device=plan.col_indices.device) < plan.col_num[..., None])
    if plan.win_starts is not None:
        bs, starts = plan.block_size, plan.win_starts.long()
        keys = (starts[..., None] + torch.arange(bs, device=starts.device)).flatten(-2)
        listed = torch.arange(starts.shape[-1], device=starts.device) < plan.win_num[..., None]
        valids.append(listed.repeat_interleave(bs, -1) & (keys < plan.seq_len_kv))
        parts.append(keys)
    return torch.cat(parts, -1), torch.cat(valids, -1)


def _column_lookup(plan: SparsePlan, listed: Tensor, heads: int, device) -> tuple[Tensor, Tensor]:
    """allow (B, H, R, T*bs) bool: key slots a partial tile may admit; col_tiles (B, H, R, T) bool.

    A slot is admitted if its tile is listed in the plan (``listed``) or it holds a gathered column or a window
    key of the row.
    """
    batch, _, rows, nkb = listed.shape
    bs = plan.block_size
    elements = batch * heads * rows * nkb * bs
    if elements > _MAX_LOOKUP_ELEMENTS:
        raise ValueError(
            f"flex cannot run this MInference plan at this size: its gathered columns/windows need a per-(batch, head, "
            f"row, key) lookup of {batch}*{heads}*{rows}*{nkb * bs} = {elements} elements (> 2**31); "
            f'use backend="triton"'
        )
    cols, valid = _listed_keys(plan)  # (B, H, R, M) original key positions
    cols = torch.where(valid, cols, 0)
    if plan.key_perm is None:
        slots = cols
    else:  # original position -> permuted slot
        inv = torch.argsort(plan.key_perm, dim=-1)
        if inv.shape[1] != heads:
            inv = inv.repeat_interleave(heads // inv.shape[1], dim=1)
        slots = torch.gather(inv, -1, cols.flatten(2)).view_as(cols)
    col_tiles = torch.zeros(*listed.shape[:3], nkb + 1, dtype=torch.bool, device=device)
    col_tiles.scatter_(-1, torch.where(valid, slots // bs, nkb), True)
    allow = listed.repeat_interleave(bs, dim=-1)  # (B, H, R, T*bs)
    b, h, r, m = torch.nonzero(valid, as_tuple=True)
    allow[b, h, r, slots[b, h, r, m]] = True
    return allow, col_tiles[..., :nkb]


def _dense_tiles(num: Tensor, idx: Tensor, nkb: int) -> Tensor:
    """Counts (B, H, R) and indices (B, H, R, M) -> (B, H, R, T) bool."""
    valid = torch.arange(idx.shape[-1], device=idx.device) < num[..., None]
    out = torch.zeros(*num.shape, nkb + 1, dtype=torch.bool, device=idx.device)
    out.scatter_(-1, torch.where(valid, idx.long(), nkb), True)
    return out[..., :nkb]


def _tile_indices(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(B, H, R, T) bool -> counts (B, H, R) int32 and ascending indices (B, H, R, T) int32.

    FlexAttention expects kv_indices as wide as the number of KV blocks.
    """
    counts = mask.sum(-1, dtype=torch.int32)
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)
    return counts.contiguous(), order.to(torch.int32).contiguous()


# ---------------------------------------------------------------------------------------------------------------
# A plan's BlockMask built once, and FlexAttention on a prebuilt BlockMask: FlexAttention's kernel alone, as
# benchmarks/ times it (flex_attend above builds the BlockMask inside every call).


def plan_block_mask(plan: SparsePlan, *, compiled: bool = True) -> BlockMask:
    """The ``BlockMask`` of a plan that FlexAttention can run on q, k, v as they are.

    The plan must have no key or query permutation, no gathered columns or key windows, and its first query block
    must start at a multiple of ``block_size`` (``q_offset % block_size == 0``; Nq == Nk always does). Full tiles
    become full blocks, partial tiles partial blocks under the token causal test (query i at position q_offset + i).
    ``compiled=False``: for eager FlexAttention, which ignores the block structure, ``mask_mod`` also applies it
    (as in :func:`flex_attend`). Use with :func:`attend_block_mask`.
    """
    if any(t is not None for t in (plan.key_perm, plan.query_perm, plan.col_indices, plan.win_starts)):
        raise ValueError("plan_block_mask needs a plan without permutations, gathered columns or key windows; "
                         "flex_attend runs any plan")
    bs, first = plan.block_size, plan.first_q_block
    if plan.q_offset != first * bs:
        raise ValueError(f"plan_block_mask needs q_offset to be a multiple of block_size ({bs}), got "
                         f"q_offset={plan.q_offset}; flex_attend runs any plan")
    heads, nkb = plan.kv_num_blocks.shape[1], plan.num_kv_blocks
    partial = _dense_tiles(plan.kv_num_blocks, plan.kv_indices, nkb)  # (B, H, R, T) bool
    full = _dense_tiles(plan.full_kv_num_blocks, plan.full_kv_indices, nkb)
    kv_num, kv_idx = _tile_indices(partial)
    full_num, full_idx = _tile_indices(full)
    mask_mod = _make_mask_mod(plan, heads, plan.seq_len_q, bs, first, 0, None, plan.kv_indices.device)
    if not compiled:
        mask_mod = _emulate_block_mask(mask_mod, partial, full, bs)
    extra = {"compute_q_blocks": False} if _HAS_COMPUTE_Q_BLOCKS else {}  # forward only
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=bs, mask_mod=mask_mod,
                                    seq_lengths=(plan.seq_len_q, plan.seq_len_kv), **extra)


def attend_block_mask(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask, scale: float | None = None, *,
                      compiled: bool | None = None) -> Tensor:
    """FlexAttention of q (B, Hq, Nq, D) over k, v (B, Hkv, Nk, D) under a prebuilt ``block_mask`` -> (B, Hq, Nq, D).

    The same execution as :func:`flex_attend`: on CUDA the module's compiled ``flex_attention`` with its kernel
    options and recompile limit, eager elsewhere (``compiled`` overrides); GQA-native.
    """
    from math import gcd

    if compiled is None:
        compiled = q.is_cuda
    enable_gqa = k.shape[1] != q.shape[1]
    if compiled:
        options = _kernel_options(gcd(*block_mask.BLOCK_SIZE), q.dtype) if q.is_cuda else None
        with torch._dynamo.config.patch(recompile_limit=max(_RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)):
            return _get_compiled()(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=enable_gqa,
                                   kernel_options=options)
    with warnings.catch_warnings():  # eager is deliberate here (see the module docstring)
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=enable_gqa)
