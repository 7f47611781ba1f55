"""XAttention selects what x-attention's ``find_blocks_chunked`` selects.

The original's rule, stated here without its code (README "Faithfulness notes"): per query-block row qb,
the diagonal is forced and credited; the sink (key block 0) is credited too except in the rows of the first
estimation chunk; the other causal tiles are taken in decreasing score while the credited mass plus the mass of
the tiles taken before them is below the threshold -- except that first-chunk rows take their best tile for free
and then lag one tile behind; finally the sink and the diagonal are computed in every row.
Hand-built scores are fed to the planner through its scorer, so each case below is decided by one of those rules.
"""

import pytest
import torch

import pbs.methods.xattention as xattention_module
from pbs.config import XAttentionConfig
from pbs.methods.xattention import default_chunk_size
from pbs.scoring import antidiagonal_block_probs, causal_blocks
from pbs.synthetic import Structure, structured_qkv

BS = 16


def _plan_with_scores(monkeypatch, rows, threshold, **kwargs):
    """Run the planner on N = 16·len(rows) with the scorer replaced by the hand-built rows; tiles per row."""
    t = len(rows)
    probs = torch.zeros(1, 1, t, t)
    for r, row in enumerate(rows):
        probs[0, 0, r, : len(row)] = torch.tensor(row)
    monkeypatch.setattr(xattention_module, "antidiagonal_block_probs", lambda *a, **k: probs)
    q = k = torch.zeros(1, 1, BS * t, 16)
    cfg = XAttentionConfig(block_size=BS, stride=4, threshold=threshold, **kwargs)
    mask = xattention_module.plan(q, k, cfg, 0.25).block_mask()[0, 0]
    return [set(torch.nonzero(mask[r]).flatten().tolist()) for r in range(t)]


ROWS = [
    [1.0],
    [0.9, 0.1],
    [0.3, 0.6, 0.1],
    [0.001, 0.7, 0.2, 0.099],
]


def test_first_chunk_takes_one_tile_more_and_forces_the_sink(monkeypatch):
    # N = 64 < the default chunk (2048): every row is in the first chunk, only the diagonal is credited.
    # row 3, τ = 0.5: credit 0.099 (diagonal). Others by score: block 1 (0.7), block 2 (0.2), block 0 (0.001).
    #   block 1: free (first of the row) -> taken; block 2: credit 0.099 alone (lagging) < 0.5 -> taken;
    #   block 0: 0.099 + 0.7 >= 0.5 -> not taken by the rule, but the sink is computed anyway.
    # row 2: credit 0.1; block 1 free; block 0: 0.1 < 0.5 -> taken.  row 1: block 0 free.
    got = _plan_with_scores(monkeypatch, ROWS, 0.5)
    assert got == [{0}, {0, 1}, {0, 1, 2}, {0, 1, 2, 3}]


def test_rows_after_the_first_chunk_credit_sink_and_diagonal(monkeypatch):
    # chunk_size = 32: rows 0-1 are the first chunk, rows 2-3 later chunks.
    # row 3: credit 0.001 + 0.099 = 0.1; block 1: 0.1 < 0.5 -> taken; block 2: 0.1 + 0.7 >= 0.5 -> not.
    # row 2: credit 0.3 + 0.1 = 0.4; block 1: 0.4 < 0.5 -> taken.
    got = _plan_with_scores(monkeypatch, ROWS, 0.5, chunk_size=32)
    assert got == [{0}, {0, 1}, {0, 1, 2}, {0, 1, 3}]


def test_corrected_accounting_treats_every_row_like_a_later_chunk(monkeypatch):
    got = _plan_with_scores(monkeypatch, ROWS, 0.5, accounting="corrected")
    assert got == [{0}, {0, 1}, {0, 1, 2}, {0, 1, 3}]


def test_diagonal_without_mass_is_still_computed(monkeypatch):
    # row 3, τ = 0.3, first chunk: credit 0 (diagonal mass 0); block 1 free; block 2: 0 < 0.3 -> taken (the
    # extra tile); block 0: 0.6 >= 0.3 -> not taken, forced as the sink; diagonal 3 forced with no mass.
    # corrected: credit 0.05; block 1: 0.05 < 0.3 -> taken; block 2: 0.65 -> not.
    rows = [[1.0], [0.5, 0.5], [0.2, 0.7, 0.1], [0.05, 0.6, 0.35, 0.0]]
    assert _plan_with_scores(monkeypatch, rows, 0.3)[3] == {0, 1, 2, 3}
    assert _plan_with_scores(monkeypatch, rows, 0.3, accounting="corrected")[3] == {0, 1, 3}


@pytest.mark.parametrize(
    "n, chunk", [(1000, 2048), (2048, 2048), (16384, 16384), (16385, 8192), (32768, 8192), (65536, 4096),
                 (131072, 2048), (200000, 2048)],
)
def test_default_chunk_size_is_the_originals(n, chunk):
    # next_pow2(N) clipped to [2048, 2**28 / next_pow2(N)]
    assert default_chunk_size(n) == chunk


def _rule(probs_row, qb, threshold, first_chunk):
    """The original's rule for one row, written out with Python lists. probs_row: scores of blocks 0..qb."""
    p = [float(x) for x in probs_row[: qb + 1]]
    forced = {qb} if first_chunk else {0, qb}
    credit = sum(p[i] for i in forced)
    others = sorted((i for i in range(qb + 1) if i not in forced), key=lambda i: (-p[i], i))
    taken = set()
    for j, i in enumerate(others):
        if first_chunk:
            before = -1.0 if j == 0 else credit + sum(p[o] for o in others[: j - 1])
        else:
            before = credit + sum(p[o] for o in others[:j])
        if before < threshold and p[i] > 0:
            taken.add(i)
    return taken | {0, qb}


@pytest.mark.parametrize(
    "nq, nk, heads, threshold, chunk, accounting",
    [
        (203, 203, (4, 2), 0.9, None, "original"),
        (256, 256, (2, 2), 0.8, None, "original"),
        (301, 301, (4, 1), 0.95, 64, "original"),
        (120, 301, (4, 2), 0.85, 256, "original"),
        (301, 301, (2, 1), 0.9, 64, "corrected"),
    ],
)
def test_planner_matches_the_rule_on_real_scores(nq, nk, heads, threshold, chunk, accounting):
    q, k, _ = structured_qkv(1, heads[0], heads[1], nk, 32, seed=nk + nq,
                             structure=Structure(heavy_fraction=0.05, recency_logit=3.0))
    q = q[:, :, nk - nq :]
    cfg = XAttentionConfig(block_size=BS, stride=4, threshold=threshold, chunk_size=chunk, accounting=accounting)
    mask = xattention_module.plan(q, k, cfg, 32**-0.5).block_mask()
    probs = antidiagonal_block_probs(q, k, causal_blocks(nq, nk, BS), BS, 4, 32**-0.5)
    first = (nk - nq) // BS
    chunk_blocks = (chunk or default_chunk_size(nk)) // BS
    lagged_rows = 0
    for h in range(heads[0]):
        for r in range(mask.shape[2]):
            qb = first + r
            lagged = accounting == "original" and qb < chunk_blocks
            lagged_rows += lagged
            expected = _rule(probs[0, h, r].double(), qb, threshold, lagged)
            assert set(torch.nonzero(mask[0, h, r]).flatten().tolist()) == expected, (h, r)
    if accounting == "original" and chunk is not None:
        assert 0 < lagged_rows < heads[0] * mask.shape[2]  # both kinds of row were exercised


@pytest.mark.parametrize("bad, name", [(dict(chunk_size=100), "chunk_size"), (dict(chunk_size=0), "chunk_size"),
                                       (dict(accounting="x"), "accounting")])
def test_bad_settings_raise(bad, name):
    with pytest.raises(ValueError, match=name):
        XAttentionConfig(**bad)
