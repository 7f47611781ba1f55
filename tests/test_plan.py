"""``SparsePlan.from_block_mask``: full / partial / dropped tiles, density, and the block-mask round trip.

Expected classifications are recomputed here by brute force from token positions.
"""

import pytest
import torch

from pbs.plan import SparsePlan


def ceil_div(a, b):
    return -(-a // b)


def listed(num, idx):
    """(B, H, R) counts + (B, H, R, M) indices -> dict (b, h, r) -> list of listed blocks (in order)."""
    out = {}
    b_, h_, r_ = num.shape
    for b in range(b_):
        for h in range(h_):
            for r in range(r_):
                out[(b, h, r)] = idx[b, h, r, : int(num[b, h, r])].tolist()
    return out


def brute_force_tiles(mask, nq, nk, bs, key_perm=None, query_perm=None, kv_heads=1):
    """Classify every selected tile from the original positions it holds: 'full' if every key <= every query of
    the row, 'partial' if some key <= some query, else dropped. Returns dicts (b, h, r) -> sorted block lists."""
    b_, h_, rows, nkb = mask.shape
    q_offset = nk - nq
    first = q_offset // bs
    full, partial = {}, {}
    for b in range(b_):
        for h in range(h_):
            for r in range(rows):
                qb = first + r
                slots = [s for s in range(qb * bs, (qb + 1) * bs) if q_offset <= s < nk]
                qpos = [q_offset + (int(query_perm[b, h, s - q_offset]) if query_perm is not None else s - q_offset)
                        for s in slots]
                f, p = [], []
                for kb in range(nkb):
                    if not mask[b, h, r, kb]:
                        continue
                    kslots = range(kb * bs, min((kb + 1) * bs, nk))
                    if key_perm is None:
                        kpos = list(kslots)
                    else:
                        hp = h // (h_ // key_perm.shape[1])
                        kpos = [int(key_perm[b, hp, s]) for s in kslots]
                    if max(kpos) <= min(qpos):
                        f.append(kb)
                    elif min(kpos) <= max(qpos):
                        p.append(kb)
                full[(b, h, r)] = f
                partial[(b, h, r)] = p
    return full, partial


def random_mask(b, h, rows, nkb, seed, p=0.5):
    return torch.rand(b, h, rows, nkb, generator=torch.Generator().manual_seed(seed)) < p


@pytest.mark.parametrize("nk, bs", [(64, 16), (100, 16), (33, 32), (40, 32)])
def test_classification_no_perm_square(nk, bs):
    # Nq == Nk: row r is query block r. kb < r -> full, kb == r -> partial, kb > r -> dropped.
    b, h = 2, 3
    t = ceil_div(nk, bs)
    mask = random_mask(b, h, t, t, seed=nk)
    mask[0, 0] = True  # one head with everything selected
    plan = SparsePlan.from_block_mask(mask, block_size=bs, seq_len_q=nk, seq_len_kv=nk, num_kv_heads=1)
    assert plan.num_rows == t and plan.num_kv_blocks == t
    assert plan.kv_num_blocks.dtype == torch.int32 and plan.kv_indices.dtype == torch.int32
    full = listed(plan.full_kv_num_blocks, plan.full_kv_indices)
    part = listed(plan.kv_num_blocks, plan.kv_indices)
    # Degenerate case: a ragged last block holding a single token (Nk % bs == 1) has one query and one key at the
    # same position, so its diagonal tile needs no mask and is "full".
    single = nk % bs == 1
    for (bi, hi, r), blocks in full.items():
        diag_full = single and r == t - 1
        expected_full = [kb for kb in range(t) if mask[bi, hi, r, kb] and (kb < r or (kb == r and diag_full))]
        expected_part = [kb for kb in range(t) if mask[bi, hi, r, kb] and kb == r and not diag_full]
        assert blocks == expected_full  # ascending, strictly below the diagonal
        assert part[(bi, hi, r)] == expected_part  # the diagonal tile only
    # the all-selected head: every causal tile, r full + 1 partial per row
    for r in range(t if not single else t - 1):
        assert full[(0, 0, r)] == list(range(r))
        assert part[(0, 0, r)] == [r]
    # and the brute-force classification from token positions agrees everywhere
    assert (full, part) == brute_force_tiles(mask, nk, nk, bs)


@pytest.mark.parametrize("nq, nk, bs", [(64, 64, 16), (50, 100, 16), (40, 100, 16), (1, 100, 16), (70, 77, 16)])
def test_density_recount(nq, nk, bs):
    b, h = 2, 2
    t = ceil_div(nk, bs)
    first = (nk - nq) // bs
    rows = t - (nk - nq) // bs  # ceil(Nk/bs) - (Nk-Nq)//bs
    mask = random_mask(b, h, rows, t, seed=nq + nk, p=0.6)
    plan = SparsePlan.from_block_mask(mask, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=1)
    assert plan.num_rows == rows
    assert plan.kv_num_blocks.shape == (b, h, rows)
    causal_total = sum(first + r + 1 for r in range(rows))
    if nq == nk:
        assert causal_total == t * (t + 1) // 2
    assert plan.causal_tiles() == causal_total
    per_head = torch.zeros(b, h, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            n = sum(1 for r in range(rows) for kb in range(t) if mask[bi, hi, r, kb] and kb <= first + r)
            per_head[bi, hi] = n / causal_total
    torch.testing.assert_close(plan.density_per_head(), per_head, rtol=0, atol=1e-12)
    assert plan.density() == pytest.approx(float(per_head.mean()), abs=1e-12)


@pytest.mark.parametrize("nq, nk, bs", [(50, 100, 16), (40, 100, 16), (70, 77, 16), (1, 100, 16)])
def test_classification_nq_lt_nk(nq, nk, bs):
    b, h = 1, 2
    t = ceil_div(nk, bs)
    first = (nk - nq) // bs
    rows = t - first
    mask = random_mask(b, h, rows, t, seed=3 * nk + nq)
    mask[0, 1] = True
    plan = SparsePlan.from_block_mask(mask, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=1)
    full = listed(plan.full_kv_num_blocks, plan.full_kv_indices)
    part = listed(plan.kv_num_blocks, plan.kv_indices)
    bf_full, bf_part = brute_force_tiles(mask, nq, nk, bs)
    assert full == bf_full and part == bf_part
    # block-index rule: row r is query block first + r; its diagonal tile is partial unless every real key of it
    # precedes every query of the row (only possible in the ragged last row: e.g. Nq = 1 at position 99 and key
    # block 6 = keys 96..99, all visible -> full)
    for r in range(rows):
        qb = first + r
        q_min = max(qb * bs, nk - nq)
        diag_full = min((qb + 1) * bs, nk) - 1 <= q_min
        assert full[(0, 1, r)] == list(range(qb)) + ([qb] if diag_full else [])
        assert part[(0, 1, r)] == ([] if diag_full else [qb])
    if nq == 1:
        assert full[(0, 1, 0)] == list(range(t)) and part[(0, 1, 0)] == []


@pytest.mark.parametrize("nq, nk", [(64, 64), (50, 100), (70, 77)])
def test_block_mask_round_trip(nq, nk):
    bs, b, h = 16, 2, 3
    t = ceil_div(nk, bs)
    first = (nk - nq) // bs
    rows = t - first
    mask = random_mask(b, h, rows, t, seed=7 * nq)
    plan = SparsePlan.from_block_mask(mask, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=1)
    causal = torch.arange(t)[None, :] <= (torch.arange(rows) + first)[:, None]
    assert torch.equal(plan.block_mask(), mask & causal)
    # nothing listed twice: full and partial tiles are disjoint
    full = listed(plan.full_kv_num_blocks, plan.full_kv_indices)
    part = listed(plan.kv_num_blocks, plan.kv_indices)
    for key in full:
        assert not set(full[key]) & set(part[key])


def test_empty_mask():
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    plan = SparsePlan.from_block_mask(mask, block_size=16, seq_len_q=64, seq_len_kv=64, num_kv_heads=1)
    assert plan.density() == 0.0
    assert int(plan.kv_num_blocks.sum()) == 0 and int(plan.full_kv_num_blocks.sum()) == 0
    assert not plan.block_mask().any()


def test_key_perm_hand_case_tile_above_diagonal_kept():
    # Nk = Nq = 64, bs = 16, segment 32. Swap original keys 0 and 16: slot 0 holds key 16, slot 16 holds key 0.
    # Key block 0 = originals {16, 1..15}; key block 1 = {0, 17..31}; blocks 2, 3 unchanged.
    n, bs = 64, 16
    perm = torch.arange(n)
    perm[0], perm[16] = 16, 0
    key_perm = perm.view(1, 1, n)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    plan = SparsePlan.from_block_mask(mask, block_size=bs, seq_len_q=n, seq_len_kv=n, num_kv_heads=1,
                                      key_perm=key_perm)
    full = listed(plan.full_kv_num_blocks, plan.full_kv_indices)
    part = listed(plan.kv_num_blocks, plan.kv_indices)
    # row 0 (queries 0..15): block 0 has key 16 > query 0..15 and keys <= 15 -> partial;
    #   block 1 is above the block diagonal but holds key 0 (visible to every query) -> partial, kept
    assert full[(0, 0, 0)] == [] and part[(0, 0, 0)] == [0, 1]
    # row 1 (queries 16..31): block 0 keys 1..16 all <= 16 -> full; block 1 keys 0, 17..31 -> partial
    assert full[(0, 0, 1)] == [0] and part[(0, 0, 1)] == [1]
    # row 2 (queries 32..47): blocks 0, 1 full, block 2 partial, block 3 dropped
    assert full[(0, 0, 2)] == [0, 1] and part[(0, 0, 2)] == [2]
    assert full[(0, 0, 3)] == [0, 1, 2] and part[(0, 0, 3)] == [3]
    # density counts the extra tile: 1+... = (2 + 2 + 3 + 4) / 10
    assert plan.density() == pytest.approx(11 / 10)


@pytest.mark.parametrize("nq", [100, 75])
def test_key_perm_random_within_segment_matches_brute_force(nq):
    n, bs, seg = 100, 16, 32
    b, hq, hkv = 2, 4, 2
    gen = torch.Generator().manual_seed(11)
    for perm_heads in (hq, hkv):
        key_perm = torch.arange(n).repeat(b, perm_heads, 1)
        for bi in range(b):
            for hp in range(perm_heads):
                for s0 in range(0, 96, seg):
                    key_perm[bi, hp, s0 : s0 + seg] = s0 + torch.randperm(seg, generator=gen)
        t = ceil_div(n, bs)
        rows = t - (n - nq) // bs
        mask = random_mask(b, hq, rows, t, seed=12, p=0.7)
        plan = SparsePlan.from_block_mask(mask, block_size=bs, seq_len_q=nq, seq_len_kv=n, num_kv_heads=hkv,
                                          key_perm=key_perm)
        full = listed(plan.full_kv_num_blocks, plan.full_kv_indices)
        part = listed(plan.kv_num_blocks, plan.kv_indices)
        bf_full, bf_part = brute_force_tiles(mask, nq, n, bs, key_perm=key_perm)
        assert full == bf_full and part == bf_part
        # tiles in the diagonal segment above the block diagonal (kb = r + 1 with r even) are kept when selected:
        # a within-segment permutation of 32 keys puts, with overwhelming probability, a key of the first half
        # into the second block, which every query of the first block can see; brute force confirms which.
        first = (n - nq) // bs
        kept_above = sum(1 for (bi, hi, r), blocks in part.items() for kb in blocks if kb > first + r)
        assert kept_above > 0
        for (bi, hi, r), blocks in part.items():
            for kb in blocks:
                if kb > first + r:
                    qb = first + r
                    assert kb // 2 == qb // 2, "a kept tile above the diagonal must be in the diagonal segment"


@pytest.mark.parametrize("nq", [96, 70])
def test_query_perm_bounds_match_brute_force(nq):
    n, bs, seg = 96, 16, 32
    b, h = 1, 2
    q_offset = n - nq
    gen = torch.Generator().manual_seed(13)
    query_perm = torch.arange(nq).repeat(b, h, 1)
    for hi in range(h):
        for s0 in (32, 64):  # absolute segments fully inside the query range are shuffled
            if s0 >= q_offset:
                query_perm[0, hi, s0 - q_offset : s0 - q_offset + seg] = s0 - q_offset + torch.randperm(seg, generator=gen)
    t = n // bs
    rows = t - q_offset // bs
    mask = torch.ones(b, h, rows, t, dtype=torch.bool)
    plan = SparsePlan.from_block_mask(mask, block_size=bs, seq_len_q=nq, seq_len_kv=n, num_kv_heads=1,
                                      query_perm=query_perm)
    full = listed(plan.full_kv_num_blocks, plan.full_kv_indices)
    part = listed(plan.kv_num_blocks, plan.kv_indices)
    bf_full, bf_part = brute_force_tiles(mask, nq, n, bs, query_perm=query_perm)
    assert full == bf_full and part == bf_part
    # a shuffled segment's first query block holds queries from the whole segment (positions up to 95), so the
    # key tile above the block diagonal inside that segment (keys 80..95) becomes visible: kept as partial
    first = q_offset // bs
    for hi in range(h):
        r = 64 // bs - first  # first query block of the segment 64..95
        assert 64 // bs + 1 in part[(0, hi, r)]
