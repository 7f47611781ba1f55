"""Segmented permutations (``pbs.permutation``) against float64 recomputations, and the attention lemmas.

References are written here in float64 without pbs; small shapes, CPU only.
"""

import math

import pytest
import torch

import pbs
from pbs.permutation import key_importance, key_permutation, pooled_keys, query_permutation, sort_within_segments
from pbs.plan import SparsePlan
from pbs.reference import attend


def randn(*shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def qkv(b, hq, hkv, nq, nk, d, seed, dtype=torch.float32):
    return randn(b, hq, nq, d, seed=seed, dtype=dtype), randn(b, hkv, nk, d, seed=seed + 1, dtype=dtype), randn(
        b, hkv, nk, d, seed=seed + 2, dtype=dtype
    )


def assert_within_segments(perm, seq_len, segment, offset=0):
    """perm (..., seq_len) maps slot -> original index: each complete segment of absolute positions ``offset + i``
    is a permutation of itself and the tail past the last complete segment is the identity."""
    flat = perm.reshape(-1, seq_len)
    n_abs = offset + seq_len
    complete = (n_abs // segment) * segment
    for row in flat.tolist():
        assert sorted(row) == list(range(seq_len))
        for i, orig in enumerate(row):
            pos, opos = offset + i, offset + orig
            if pos >= complete:
                assert orig == i, "tail must stay in place"
            else:
                assert opos // segment == pos // segment, "token left its segment"


def softmax_f64(x):
    x = x - x.max(dim=-1, keepdim=True).values
    e = x.exp()
    return e / e.sum(-1, keepdim=True)


def importance_f64(q, k, block_size, segment_size, scale):
    """(B, Hq, G*S) float64: softmax over complete-segment keys of q_last k^T scale, mean over last rows."""
    b, hq, nq, _d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    group = hq // hkv
    complete = (nk // segment_size) * segment_size
    m = min(block_size, nq)
    out = torch.zeros(b, hq, complete, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            ql = q[bi, h, nq - m :].double()
            kk = k[bi, h // group, :complete].double()
            out[bi, h] = softmax_f64(ql @ kk.T * scale).mean(0)
    return out


def causal_attention_f64(q, k, v, scale, key_pos=None):
    """Dense causal attention in float64, query i at position Nk - Nq + i; ``key_pos[j]`` is the original position
    of key row j (identity when None), so permuted K/V rows are masked by where they came from."""
    _b, hq, nq, _d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    group = hq // hkv
    kk = k.double().repeat_interleave(group, 1)
    vv = v.double().repeat_interleave(group, 1)
    s = q.double() @ kk.transpose(-1, -2) * scale
    kp = torch.arange(nk) if key_pos is None else key_pos
    qp = torch.arange(nq) + nk - nq
    s = s.masked_fill(kp[None, :] > qp[:, None], float("-inf"))
    return torch.softmax(s, -1) @ vv


def rel_err(out, ref):
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def random_within_segment_perm(shape, seq_len, segment, seed):
    gen = torch.Generator().manual_seed(seed)
    perm = torch.arange(seq_len).repeat(*shape, 1)
    flat = perm.view(-1, seq_len)
    for r in range(flat.shape[0]):
        for s0 in range(0, (seq_len // segment) * segment, segment):
            flat[r, s0 : s0 + segment] = s0 + torch.randperm(segment, generator=gen)
    return perm


# ---------------------------------------------------------------- sort_within_segments


def test_sort_within_segments_hand_case():
    # segment 4, seq_len 10: two complete segments (8 tokens) + tail of 2
    importance = torch.tensor([0.1, 0.9, 0.5, 0.3, 2.0, 2.0, 1.0, 3.0])
    # seg 0 by descending importance: 1 (0.9), 2 (0.5), 3 (0.3), 0 (0.1)
    # seg 1: 7 (3.0), 4 (2.0), 5 (2.0, tie -> natural order after 4), 6 (1.0)
    # tail: 8, 9 unchanged
    expected = [1, 2, 3, 0, 7, 4, 5, 6, 8, 9]
    perm = sort_within_segments(importance, 10, 4)
    assert perm.dtype == torch.int64
    assert perm.tolist() == expected


def test_sort_within_segments_ties_keep_natural_order():
    # constant importance -> identity; and a partial tie inside a segment
    assert sort_within_segments(torch.ones(12), 13, 4).tolist() == list(range(13))
    imp = torch.tensor([1.0, 5.0, 1.0, 5.0])
    # 1 and 3 tie at 5 (1 first), then 0 and 2 tie at 1 (0 first)
    assert sort_within_segments(imp, 4, 4).tolist() == [1, 3, 0, 2]


def test_sort_within_segments_many_ties_stable():
    # long segments with only three distinct values: the order must be (-importance, index), i.e. a stable sort
    seg, n = 256, 600  # 2 complete segments, tail 88
    imp = torch.randint(0, 3, (3, 512), generator=torch.Generator().manual_seed(4)).float()
    perm = sort_within_segments(imp, n, seg)
    for r in range(3):
        expected = []
        for s0 in (0, 256):
            expected += sorted(range(s0, s0 + seg), key=lambda i: (-float(imp[r, i]), i))
        expected += list(range(512, n))
        assert perm[r].tolist() == expected


def test_sort_within_segments_random_batched():
    seg, n = 8, 37  # 4 complete segments (32 tokens), tail 5
    imp = torch.rand(2, 3, 32, generator=torch.Generator().manual_seed(0))
    perm = sort_within_segments(imp, n, seg)
    assert perm.shape == (2, 3, n)
    assert_within_segments(perm, n, seg)
    for b in range(2):
        for h in range(3):
            p = perm[b, h]
            for s0 in range(0, 32, seg):
                vals = imp[b, h, p[s0 : s0 + seg]]
                assert (vals[:-1] >= vals[1:]).all(), "segment not sorted by descending importance"
            assert p[32:].tolist() == list(range(32, n))


# ---------------------------------------------------------------- key_importance


@pytest.mark.parametrize(
    "b, hq, hkv, nq, nk, bs, seg",
    [
        (1, 2, 2, 64, 64, 16, 32),  # MHA
        (2, 8, 2, 80, 80, 16, 32),  # GQA, 2 complete segments + tail 16
        (1, 8, 2, 50, 100, 16, 32),  # Nq < Nk
        (1, 4, 1, 10, 70, 16, 32),  # Nq < block_size: all query rows are used
    ],
)
def test_key_importance_matches_f64(b, hq, hkv, nq, nk, bs, seg):
    q, k, _ = qkv(b, hq, hkv, nq, nk, 16, seed=10)
    scale = 1 / math.sqrt(16) * 1.7
    got = key_importance(q, k, bs, seg, scale)
    ref = importance_f64(q, k, bs, seg, scale)
    assert got.shape == ref.shape == (b, hq, (nk // seg) * seg)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-7)


def test_key_importance_gqa_head_mapping():
    # q head h must use kv head h // 4: make kv heads very different and check each q head against both
    b, hq, hkv, n, d = 1, 8, 2, 64, 16
    q, k, _ = qkv(b, hq, hkv, n, n, d, seed=20)
    k[:, 1] *= 3.0
    got = key_importance(q, k, 16, 32, 0.25).double()
    for h in range(hq):
        own = importance_f64(q[:, h : h + 1], k[:, h // 4 : h // 4 + 1], 16, 32, 0.25)[0, 0]
        other = importance_f64(q[:, h : h + 1], k[:, 1 - h // 4 : 2 - h // 4], 16, 32, 0.25)[0, 0]
        torch.testing.assert_close(got[0, h], own, rtol=1e-5, atol=1e-7)
        assert (got[0, h] - other).abs().max() > 1e-3


# ---------------------------------------------------------------- key_permutation


def test_key_permutation_q_head_sorts_importance():
    b, hq, hkv, n, bs, seg = 1, 4, 2, 100, 16, 32
    q, k, _ = qkv(b, hq, hkv, n, n, 16, seed=30)
    scale = 0.25
    perm = key_permutation(q, k, bs, seg, scale, share="q_head")
    assert perm.shape == (b, hq, n) and perm.dtype == torch.int64
    assert_within_segments(perm, n, seg)
    imp = importance_f64(q, k, bs, seg, scale)
    for h in range(hq):
        for s0 in range(0, 96, seg):
            vals = imp[0, h, perm[0, h, s0 : s0 + seg]]
            assert (vals[:-1] >= vals[1:] - 1e-7).all()


def test_key_permutation_kv_head_one_perm_per_group():
    b, hq, hkv, n, bs, seg = 2, 8, 2, 100, 16, 32
    q, k, _ = qkv(b, hq, hkv, n, n, 16, seed=31)
    scale = 0.25
    perm = key_permutation(q, k, bs, seg, scale, share="kv_head")
    assert perm.shape == (b, hkv, n)
    assert_within_segments(perm, n, seg)
    imp = importance_f64(q, k, bs, seg, scale)  # (B, Hq, 96)
    group_imp = imp.view(b, hkv, hq // hkv, -1).mean(2)  # the group's averaged importance
    for bi in range(b):
        for g in range(hkv):
            p = perm[bi, g]
            for s0 in range(0, 96, seg):
                vals = group_imp[bi, g, p[s0 : s0 + seg]]
                assert (vals[:-1] >= vals[1:] - 1e-7).all(), "not sorted by group-averaged importance"
            assert p[96:].tolist() == list(range(96, n))
            # and it is the stable sort of that importance (no near-ties at this seed)
            expected = []
            for s0 in range(0, 96, seg):
                order = sorted(range(seg), key=lambda i: (-float(group_imp[bi, g, s0 + i]), i))
                expected += [s0 + i for i in order]
            assert p[:96].tolist() == expected


# ---------------------------------------------------------------- pooled_keys


def pooled_f64(k, perm, heads, bs):
    """Mean of each permuted key block by explicit gathering: (B, heads, T, D) float64."""
    b, hkv, nk, d = k.shape
    nkb = -(-nk // bs)
    out = torch.zeros(b, heads, nkb, d, dtype=torch.float64)
    for bi in range(b):
        for h in range(heads):
            kv = h // (heads // hkv)
            order = torch.arange(nk) if perm is None else perm[bi, h // (heads // perm.shape[1])]
            kp = k[bi, kv].double()[order]
            for t in range(nkb):
                out[bi, h, t] = kp[t * bs : (t + 1) * bs].mean(0)  # ragged last block: only real keys
    return out


@pytest.mark.parametrize("perm_heads", [None, "q", "kv"])
@pytest.mark.parametrize("nk", [96, 101])
def test_pooled_keys_matches_gather(perm_heads, nk):
    b, hq, hkv, bs, seg, d = 2, 4, 2, 16, 32, 8
    k = randn(b, hkv, nk, d, seed=40)
    perm = None
    if perm_heads is not None:
        perm = random_within_segment_perm((b, hq if perm_heads == "q" else hkv), nk, seg, seed=41)
        assert not torch.equal(perm, torch.arange(nk).expand_as(perm))
    got = pooled_keys(k, perm, hq, bs)
    ref = pooled_f64(k, perm, hq, bs)
    assert got.shape == (b, hq, -(-nk // bs), d)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


def test_pooled_keys_ragged_last_block_by_hand():
    # Nk = 5, bs = 16: one block holding 5 real keys; mean over 5, not 16
    k = torch.arange(5, dtype=torch.float32).view(1, 1, 5, 1)
    got = pooled_keys(k, None, 1, 16)
    assert got.shape == (1, 1, 1, 1)
    assert got.item() == pytest.approx((0 + 1 + 2 + 3 + 4) / 5)
    # Nk = 18, bs = 16: block 0 = mean(0..15) = 7.5, block 1 = mean(16, 17) = 16.5
    k = torch.arange(18, dtype=torch.float32).view(1, 1, 18, 1)
    assert pooled_keys(k, None, 1, 16).flatten().tolist() == pytest.approx([7.5, 16.5])


# ---------------------------------------------------------------- query_permutation


@pytest.mark.parametrize("nq, nk", [(100, 100), (70, 100), (68, 100), (60, 100), (20, 100), (40, 40)])
@pytest.mark.parametrize("with_key_perm", [False, True])
def test_query_permutation_only_moves_within_complete_segments(nq, nk, with_key_perm):
    b, hq, hkv, bs, seg, d = 2, 4, 2, 16, 32, 16
    q, k, _ = qkv(b, hq, hkv, nq, nk, d, seed=50)
    key_perm = random_within_segment_perm((b, hq), nk, seg, seed=51) if with_key_perm else None
    perm = query_permutation(q, k, key_perm, bs, seg)
    assert perm.shape == (b, hq, nq) and perm.dtype == torch.int64
    q_offset = nk - nq
    movable = [
        (lo, lo + seg) for lo in range(seg, (nk // seg) * seg, seg) if lo >= q_offset
    ]  # segment >= 1, fully inside the query range
    for row in perm.reshape(-1, nq).tolist():
        assert sorted(row) == list(range(nq))
        for i, orig in enumerate(row):
            pos, opos = q_offset + i, q_offset + orig
            seg_of = [s for s in movable if s[0] <= pos < s[1]]
            if seg_of:
                assert seg_of[0][0] <= opos < seg_of[0][1]
            else:
                assert orig == i, f"query at position {pos} outside a movable segment was moved"
    if movable:
        assert not torch.equal(perm, torch.arange(nq).expand_as(perm)), "expected some queries to move"


def test_query_permutation_groups_by_best_centroid():
    # Inside a movable segment, queries are ordered by their most cosine-similar earlier centroid (float64 here).
    b, hq, hkv, n, bs, seg, d = 1, 2, 1, 96, 16, 32, 16
    q, k, _ = qkv(b, hq, hkv, n, n, d, seed=60)
    perm = query_permutation(q, k, None, bs, seg)
    cent = pooled_f64(k, None, hq, bs)
    cent = cent / cent.norm(dim=-1, keepdim=True)
    for h in range(hq):
        for s in range(1, n // seg):
            lo = s * seg
            qs = q[0, h, perm[0, h, lo : lo + seg]].double()
            qs = qs / qs.norm(dim=-1, keepdim=True)
            sims = qs @ cent[0, h, : s * (seg // bs)].T
            best_sim, best = sims.max(-1)
            assert (best[:-1] <= best[1:]).all(), "queries not grouped by centroid"
            same = best[:-1] == best[1:]
            assert (best_sim[:-1][same] >= best_sim[1:][same] - 1e-6).all()


# ---------------------------------------------------------------- attention lemmas


def test_joint_kv_permutation_leaves_attention_unchanged():
    # float64 attention is a weighted sum over keys: permuting K and V rows together (and carrying each key's
    # original position for the causal mask) changes nothing.
    b, hq, hkv, nq, nk, d = 2, 4, 2, 40, 64, 16
    q, k, v = qkv(b, hq, hkv, nq, nk, d, seed=70, dtype=torch.float64)
    scale = 1 / math.sqrt(d)
    ref = causal_attention_f64(q, k, v, scale)
    perm = torch.randperm(nk, generator=torch.Generator().manual_seed(71))
    out = causal_attention_f64(q, k[:, :, perm], v[:, :, perm], scale, key_pos=perm)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # non-causal: the same without positions
    full = softmax_f64(q @ k.repeat_interleave(2, 1).transpose(-1, -2) * scale) @ v.repeat_interleave(2, 1)
    kp, vp = k[:, :, perm].repeat_interleave(2, 1), v[:, :, perm].repeat_interleave(2, 1)
    torch.testing.assert_close(softmax_f64(q @ kp.transpose(-1, -2) * scale) @ vp, full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nq, nk", [(100, 100), (70, 100), (83, 130)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attend_with_within_segment_key_perm_all_blocks_is_dense(nq, nk, dtype):
    # A hand-built plan: random within-segment key permutation, every tile selected.
    b, hq, hkv, bs, seg, d = 2, 4, 2, 16, 32, 16
    q, k, v = qkv(b, hq, hkv, nq, nk, d, seed=80, dtype=dtype)
    scale = 1 / math.sqrt(d)
    for perm_heads in (hq, hkv):
        key_perm = random_within_segment_perm((b, perm_heads), nk, seg, seed=81)
        rows = -(-nk // bs) - (nk - nq) // bs
        mask = torch.ones(b, hq, rows, -(-nk // bs), dtype=torch.bool)
        plan = SparsePlan.from_block_mask(
            mask, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=hkv, key_perm=key_perm
        )
        out = attend(q, k, v, plan, scale)
        assert out.dtype == dtype and out.shape == q.shape
        assert rel_err(out, causal_attention_f64(q, k, v, scale)) < 1e-5


@pytest.mark.parametrize("permute", ["key", "query", "key+query"])
@pytest.mark.parametrize("nq, nk", [(100, 100), (70, 100)])
@pytest.mark.parametrize("share", ["q_head", "kv_head"])
def test_pbs_threshold_one_equals_dense(permute, nq, nk, share):
    b, hq, hkv, d = 2, 4, 2, 16
    q, k, v = qkv(b, hq, hkv, nq, nk, d, seed=90)
    scale = 1 / math.sqrt(d)
    out, stats = pbs.sparse_attention(
        q, k, v, method="pbs", threshold=1, block_size=16, segment_size=32, permute=permute,
        share_permutation=share, return_stats=True,
    )
    assert out.shape == q.shape and out.dtype == q.dtype
    assert stats.dense_fallback is None and stats.plan is not None
    plan = stats.plan
    if "key" in permute:
        assert plan.key_perm is not None
        assert_within_segments(plan.key_perm, nk, 32)
        assert not torch.equal(plan.key_perm, torch.arange(nk).expand_as(plan.key_perm)), "perm is trivial"
    else:
        assert plan.key_perm is None
    if "query" in permute:
        assert plan.query_perm is not None
        assert not torch.equal(plan.query_perm, torch.arange(nq).expand_as(plan.query_perm)), "perm is trivial"
    else:
        assert plan.query_perm is None
    assert rel_err(out, causal_attention_f64(q, k, v, scale)) < 1e-5


def test_pbs_query_perm_output_in_original_rows():
    # Rows are scattered back to their original positions: each output row equals its own dense row.
    b, hq, hkv, n, d = 1, 2, 1, 96, 16
    q, k, v = qkv(b, hq, hkv, n, n, d, seed=95, dtype=torch.float64)
    out = pbs.sparse_attention(q, k, v, method="pbs", threshold=1, block_size=16, segment_size=32, permute="query")
    ref = causal_attention_f64(q, k, v, 1 / math.sqrt(d))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
