"""Block selection on hand-built score rows: ``select_cumulative`` and ``sink_blocks``.

Every expected set below is worked out by hand in the comments; nothing is copied from running the code.
"""

import pytest
import torch

from pbs.selection import select_cumulative, sink_blocks

PROBS = [0.5, 0.3, 0.15, 0.05]


def picked(mask):
    """Indices of True entries of a 1-D bool tensor, as a set."""
    return set(torch.nonzero(mask, as_tuple=True)[0].tolist())


def select_row(probs, threshold, candidates=None, credit=None):
    p = torch.tensor([probs], dtype=torch.float32)
    c = torch.ones_like(p, dtype=torch.bool) if candidates is None else torch.tensor([candidates])
    cr = None if credit is None else torch.tensor([credit], dtype=torch.float32)
    out = select_cumulative(p, c, threshold, cr)
    assert out.dtype == torch.bool and out.shape == p.shape
    return picked(out[0])


# ---------------------------------------------------------------- the crossing rule


@pytest.mark.parametrize(
    "threshold, expected",
    [
        # sorted mass 0.5, 0.3, 0.15, 0.05; mass taken *before* each tile: 0, 0.5, 0.8, 0.95.
        # A tile is taken while the mass before it is < threshold.
        # 0.7: before = 0 < 0.7 take 0; 0.5 < 0.7 take 1 (0.8 crosses 0.7); 0.8 >= 0.7 stop -> {0, 1}
        (0.7, {0, 1}),
        # 0.8: take 0; 0.5 < 0.8 take 1 (0.5 + 0.3 = 0.8 reaches it); 0.8 is not < 0.8 -> stop -> {0, 1}
        (0.8, {0, 1}),
        # 0.81: take 0, 1; 0.8 < 0.81 take 2 (0.95 crosses); 0.95 >= 0.81 stop -> {0, 1, 2}
        (0.81, {0, 1, 2}),
        # 0.3: only tile 0 (0.5 alone crosses 0.3); before tile 1 is 0.5 >= 0.3 -> {0}
        (0.3, {0}),
        # 0.5: tile 0 reaches exactly 0.5 -> {0}
        (0.5, {0}),
        # 0.96: 0, 1, 2 (before = 0.8 < 0.96), 3 (before = 0.95 < 0.96) -> everything
        (0.96, {0, 1, 2, 3}),
        # 1e-6: the largest tile alone crosses any tiny positive threshold -> {0}
        (1e-6, {0}),
    ],
)
def test_crossing_block_included(threshold, expected):
    assert select_row(PROBS, threshold) == expected


def test_unnormalized_row_uses_raw_mass():
    # probs need not sum to 1: [2, 1, 1] with threshold 0.9 -> the 2 alone crosses -> {0}
    assert select_row([2.0, 1.0, 1.0], 0.9) == {0}
    # [0.2, 0.2, 0.2] total 0.6 < 0.9: never reaches, every positive tile is taken -> {0, 1, 2}
    assert select_row([0.2, 0.2, 0.2], 0.9) == {0, 1, 2}


# ---------------------------------------------------------------- order independence


@pytest.mark.parametrize("threshold", [0.3, 0.7, 0.8, 0.81, 0.96])
def test_order_independence(threshold):
    # expected in the natural order, by the rule above
    base = {0.3: {0}, 0.7: {0, 1}, 0.8: {0, 1}, 0.81: {0, 1, 2}, 0.96: {0, 1, 2, 3}}[threshold]
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        perm = torch.randperm(4, generator=gen).tolist()  # new position j holds old tile perm[j]
        shuffled = [PROBS[i] for i in perm]
        got = select_row(shuffled, threshold)
        assert {perm[j] for j in got} == base


def test_order_independence_batched_rows():
    # the same 6 probabilities in 5 different orders in one (5, 6) batch: every row picks the same tiles
    values = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    # threshold 0.75: before = 0, 0.4, 0.65, 0.8 -> take 0.4, 0.25, 0.15 (the 0.15 crosses)
    expected_values = {0.4, 0.25, 0.15}
    gen = torch.Generator().manual_seed(2)
    perms = torch.stack([torch.randperm(6, generator=gen) for _ in range(5)])
    rows = values[perms]
    out = select_cumulative(rows, torch.ones(6, dtype=torch.bool), 0.75)
    for r in range(5):
        got = {round(float(rows[r, j]), 6) for j in picked(out[r])}
        assert got == {round(v, 6) for v in expected_values}


# ---------------------------------------------------------------- candidates, zeros, NaN


def test_non_candidates_never_picked():
    # tile 0 (0.5) is not a candidate: the remaining candidates 0.3, 0.15, 0.05 (total 0.5 < 0.7)
    # never reach 0.7, so all three positive candidates are taken, and tile 0 is not.
    assert select_row(PROBS, 0.7, candidates=[False, True, True, True]) == {1, 2, 3}
    # threshold 0.2 over candidates {1, 2, 3}: 0.3 alone crosses -> {1}
    assert select_row(PROBS, 0.2, candidates=[False, True, True, True]) == {1}
    # a huge non-candidate never counts toward the mass nor gets picked
    assert select_row([100.0, 0.3, 0.2], 0.5, candidates=[False, True, True]) == {1, 2}


def test_candidates_broadcast():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    cand = torch.tensor([True, False, True])  # broadcast over rows
    out = select_cumulative(probs, cand, 0.6)
    # row 0: candidates 0.5 (idx 0), 0.2 (idx 2); 0.5 < 0.6 so take idx 2 too -> {0, 2}
    # row 1: candidates 0.1 (idx 0), 0.8 (idx 2); 0.8 alone crosses -> {2}
    assert picked(out[0]) == {0, 2}
    assert picked(out[1]) == {2}


def test_zero_probability_never_picked():
    # total positive mass 0.6 never reaches 0.9: both positive tiles are taken, zeros are not
    assert select_row([0.0, 0.4, 0.0, 0.2, 0.0], 0.9) == {1, 3}


def test_all_zero_row_selects_nothing():
    assert select_row([0.0, 0.0, 0.0, 0.0], 0.9) == set()
    assert select_row([0.0, 0.0, 0.0, 0.0], 0.01) == set()


def test_a_row_with_a_non_finite_score_takes_every_candidate():
    """NaN/Inf scores cannot be ranked: the row takes every candidate (so a NaN reaches the output, as in SDPA)."""
    nan, inf = float("nan"), float("inf")
    assert select_row([nan, nan, nan, nan], 0.9) == {0, 1, 2, 3}
    assert select_row([nan, 0.6, 0.4], 0.5) == {0, 1, 2}  # one NaN is enough
    assert select_row([inf, 0.6, 0.0], 0.5) == {0, 1, 2}  # zero-mass tiles included
    # only candidates, and a NaN outside the candidates does not count
    assert select_row([nan, 0.6, 0.4], 0.5, candidates=[False, True, True]) == {1}
    assert select_row([0.1, nan, 0.9], 0.5, candidates=[True, True, False]) == {0, 1}
    # batched: a NaN row next to a normal row does not disturb it
    probs = torch.tensor([[nan, nan, nan], [0.7, 0.2, 0.1]])
    out = select_cumulative(probs, torch.ones(3, dtype=torch.bool), 0.8)
    assert picked(out[0]) == {0, 1, 2}
    assert picked(out[1]) == {0, 1}  # before = 0, 0.7 < 0.8, 0.9 -> {0, 1}


def test_budget_row_with_a_non_finite_score_takes_every_candidate():
    from pbs.selection import select_budget

    nan = float("nan")
    scores = torch.tensor([[[[0.5, nan, 0.1, 0.0], [0.5, 0.3, 0.1, 0.0]]]])  # (1, 1, 2 rows, 4 blocks)
    candidates = torch.ones(2, 4, dtype=torch.bool)
    forced = torch.zeros(2, 4, dtype=torch.bool)
    out = select_budget(scores, candidates, forced, budget=0.5, row_blocks=torch.tensor([1, 1]))
    assert picked(out[0, 0, 0]) == {0, 1, 2, 3}  # unrankable: everything
    assert picked(out[0, 0, 1]) == {0}  # round(0.5 * 2) = 1 tile: the best


@pytest.mark.parametrize("threshold", [1, 1.0, 1.5, 10])
def test_threshold_ge_one_returns_candidates(threshold):
    cand = [True, False, True, True]
    # exactly the candidates, zero-probability candidate (idx 3) included
    assert select_row([0.5, 0.5, 0.0, 0.0], threshold, candidates=cand) == {0, 2, 3}
    probs = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(0))
    cands = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(1)) > 0.5
    out = select_cumulative(probs, cands, threshold)
    assert torch.equal(out, cands)
    # returns a fresh tensor, not the candidates themselves
    out[...] = ~out
    assert not torch.equal(out, cands)


def test_credit_reduces_what_must_be_picked():
    # threshold 0.8, no credit -> {0, 1} (see above)
    assert select_row(PROBS, 0.8) == {0, 1}
    # credit 0.35: mass before tile i is 0.35 + (0, 0.5, 0.8): 0.35 < 0.8 take 0; 0.85 >= 0.8 stop -> {0}
    assert select_row(PROBS, 0.8, credit=0.35) == {0}
    # credit 0.8 already reaches 0.8: nothing more needed -> {}
    assert select_row(PROBS, 0.8, credit=0.8) == set()
    # credit 0.2, threshold 0.9: before = 0.2, 0.7, 1.0 -> take 0, 1 -> {0, 1} (without credit: {0, 1, 2})
    assert select_row(PROBS, 0.9) == {0, 1, 2}
    assert select_row(PROBS, 0.9, credit=0.2) == {0, 1}


def test_credit_per_row():
    probs = torch.tensor([PROBS, PROBS, PROBS])
    credit = torch.tensor([0.0, 0.35, 0.9])
    out = select_cumulative(probs, torch.ones(4, dtype=torch.bool), 0.8, credit)
    assert picked(out[0]) == {0, 1}
    assert picked(out[1]) == {0}
    assert picked(out[2]) == set()


def test_result_is_minimal_prefix_of_sorted_mass():
    # Property check against a float64 reference of the rule on random rows with distinct values.
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(50, 12, generator=gen, dtype=torch.float64) * 2, -1)
    cands = torch.rand(50, 12, generator=gen) > 0.3
    for tau in (0.5, 0.9):
        out = select_cumulative(probs.float(), cands, tau)
        for r in range(50):
            vals = [(float(probs[r, j]), j) for j in range(12) if cands[r, j]]
            vals.sort(reverse=True)
            expected, taken = set(), 0.0
            for p, j in vals:
                if taken >= tau:
                    break
                expected.add(j)
                taken += p
            # skip rows where a partial sum is within float32 noise of tau (none expected with this seed)
            sums = [sum(p for p, _ in vals[: i + 1]) for i in range(len(vals))]
            assert all(abs(s - tau) > 1e-5 for s in sums)
            assert picked(out[r]) == expected


# ---------------------------------------------------------------- sink blocks


def test_sink_blocks_identity_perm_block_zero():
    out = sink_blocks(None, rows=5, num_kv_blocks=7, heads=3, batch=2, block_size=16)
    assert out.shape == (2, 3, 5, 7) and out.dtype == torch.bool
    assert out[..., 0].all()
    assert not out[..., 1:].any()
    # an explicit identity permutation gives the same
    ident = torch.arange(100).expand(2, 3, 100)
    out2 = sink_blocks(ident, rows=5, num_kv_blocks=7, heads=3, batch=2, block_size=16)
    assert torch.equal(out, out2)


def test_sink_blocks_moved_token_zero():
    # original token 0 placed at slot 40 (swap with token 40): slot 40 // 16 = block 2
    n, bs = 64, 16
    perm = torch.arange(n)
    perm[0], perm[40] = 40, 0
    key_perm = perm.expand(1, 1, n).clone()
    out = sink_blocks(key_perm, rows=4, num_kv_blocks=4, heads=1, batch=1, block_size=bs)
    assert out[..., 2].all()
    assert out.sum() == 4  # exactly one block per row


def test_sink_blocks_per_head_and_gqa():
    # batch 2, 2 permutation heads (KV heads) serving 4 query heads (group 2); token 0 at different slots
    n, bs = 64, 16
    key_perm = torch.arange(n).repeat(2, 2, 1)
    slots = {(0, 0): 0, (0, 1): 17, (1, 0): 63, (1, 1): 33}  # -> blocks 0, 1, 3, 2
    for (b, h), s in slots.items():
        p = torch.arange(n)
        p[0], p[s] = s, 0
        key_perm[b, h] = p
    out = sink_blocks(key_perm, rows=3, num_kv_blocks=4, heads=4, batch=2, block_size=bs)
    assert out.shape == (2, 4, 3, 4)
    for b in range(2):
        for h in range(4):
            block = slots[(b, h // 2)] // bs
            expected = torch.zeros(4, dtype=torch.bool)
            expected[block] = True
            for r in range(3):
                assert torch.equal(out[b, h, r], expected), (b, h, r)
