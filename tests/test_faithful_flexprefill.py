"""FlexPrefill selects what its original (PBS-Attn's vendored copy / ByteDance's code) selects.

The original's rule, stated without its code: budgets count the sorted positions whose inclusive cumsum stays
<= gamma, plus one, then ``// 128 + 1`` blocks; slash offsets are grouped into diagonal blocks aligned to the
sequence *end* (offsets 0..r-1 form diagonal 0, r = Nk mod block_size); block 0 and diagonal 0 are forced
inside the budgets; a query-aware head adds the pooled block attention's tiles whose inclusive cumsum (over all
R·T entries, descending) stays <= gamma·R, so the tile crossing gamma is dropped. Hand-built cases feed the
planner chosen last-query probabilities and pooled vectors; a reference written from the rule checks the
planner on real inputs.
"""

import math

import pytest
import torch

import pbs.methods.flexprefill as flex_module
from pbs.config import FlexPrefillConfig
from pbs.methods.registry import Dense
from pbs.synthetic import Structure, structured_qkv

BS = 16


def _tiles(mask):
    return {(r, c) for r, c in torch.nonzero(mask).tolist()}


def _run(monkeypatch, n, last_probs, pq=None, pk=None, dim=8, **kwargs):
    """Planner on Nq = Nk = n with the last queries' probabilities (m, n) and pooled q/k (R, D)/(T, D) given."""
    m = last_probs.shape[0]
    monkeypatch.setattr(flex_module, "last_query_probs",
                        lambda *a, **k: (last_probs[None, None].float(), torch.arange(n - m, n)))
    if pq is not None:
        monkeypatch.setattr(flex_module, "pooled_queries", lambda *a, **k: pq[None, None].float())
        monkeypatch.setattr(flex_module, "pooled_keys", lambda *a, **k: pk[None, None].float())
    q = k = torch.zeros(1, 1, n, dim)
    cfg = FlexPrefillConfig(block_size=BS, **kwargs)
    return _tiles(flex_module.plan(q, k, cfg, 1.0).block_mask()[0, 0])


def _shifted_rows(n, m, weights):
    """Each of the last m queries p puts weights[o] on key p - o (o = 0 is the query itself)."""
    probs = torch.zeros(m, n)
    for i in range(m):
        p = n - m + i
        for o, w in weights.items():
            probs[i, p - o if o != "sink" else 0] += w
    return probs


def test_end_aligned_diagonals_and_forcing_inside_the_budget(monkeypatch):
    # N = 100, 16-blocks: T = 7, r = 100 mod 16 = 4. Each of the last 16 queries puts 0.6 at offset 20,
    # 0.3 at offset 40, 0.1 on the sink. Diagonal groups end-aligned: offsets 0-3 -> d0, 4-19 -> d1,
    # 20-35 -> d2, 36-51 -> d3 (aligned to 0 they would be d1 and d2). Slash mass: d2 0.6, d3 0.3.
    # Vertical: block 4 (keys 64-79) 0.6, block 3 (48-59) 0.225, block 0 0.1, block 2 (44-47) 0.075.
    # min_budget = max_budget = 32 tokens: exactly 2 blocks each; block 0 and d0 are forced *inside* them:
    # vertical {0, 4}, slash {d0, d2} -- not {0, 4, 3} / {d0, d2, d3}.
    probs = _shifted_rows(100, 16, {20: 0.6, 40: 0.3, "sink": 0.1})
    got = _run(monkeypatch, 100, probs, gamma=0.9, tau=0, min_budget=32, max_budget=32)
    expected = {(r, 0) for r in range(7)} | {(r, 4) for r in range(4, 7)}
    expected |= {(r, r) for r in range(7)} | {(r, r - 2) for r in range(2, 7)}
    assert got == expected


def test_budget_uses_the_literal_128(monkeypatch):
    # N = 400, T = 25. Each of the last 16 queries puts w_j = (200 - j) / 20100 on key j < 200. Vertical
    # count: the k largest reach sum (200k - k(k-1)/2) / 20100 <= 0.9 up to k = 137, + 1 = 138 positions.
    # 138 // 128 + 1 = 2 blocks: columns {0, 1} (block sums decrease with the index). The slash count is at
    # most 216 positions, so 2 diagonals: d0 and the heaviest (d23 -> column 1 in row 24): nothing in 2..8.
    # budget_unit=None: 138 // 16 + 1 = 9 blocks: columns 0..8.
    probs = torch.zeros(16, 400)
    probs[:, :200] = (200 - torch.arange(200)) / 20100
    last_row = {c for r, c in _run(monkeypatch, 400, probs, gamma=0.9, tau=0) if r == 24}
    assert {0, 1} <= last_row and not last_row & set(range(2, 9))
    last_row = {c for r, c in _run(monkeypatch, 400, probs, gamma=0.9, tau=0, budget_unit=None) if r == 24}
    assert set(range(9)) <= last_row


def _cover_case(monkeypatch, **kwargs):
    # N = 112: R = T = 7, no ragged block. D = 7, pooled keys = identity, pooled queries = log-weights, so the
    # pooled block attention of row r is the designed distribution: row 0 [1]; row 1 [1, ~0];
    # rows r = 2..6: 1 - w_r on block 0 and w_r on block r - 1, w = 0.45, 0.44, 0.43, 0.42, 0.41.
    # Descending: 1, 1, 0.59 .. 0.55, then 0.45 (2,1), 0.44 (3,2), 0.43 (4,3), 0.42 (5,4), 0.41 (6,5);
    # inclusive cumsum 1, 2, 2.59, 3.17, 3.74, 4.30, 4.85, 5.30, 5.74, 6.17, 6.59, 7.00. gamma·R = 6.3.
    weights = torch.full((7, 7), 1e-12)
    weights[0, 0] = weights[1, 0] = 1.0
    for r, w in zip(range(2, 7), (0.45, 0.44, 0.43, 0.42, 0.41)):
        weights[r, 0], weights[r, r - 1] = 1 - w, w
    probs = torch.zeros(16, 112)
    for i in range(16):  # uniform causal last-query attention: every vertical block has mass (finite divergence)
        probs[i, : 96 + i + 1] = 1 / (96 + i + 1)
    got = _run(monkeypatch, 112, probs, pq=weights.log(), pk=torch.eye(7), dim=7, gamma=0.9, tau=10, **kwargs)
    forced = {(r, 0) for r in range(7)} | {(r, r) for r in range(7)}  # budgets 1: block 0 and diagonal 0 only
    return got - forced


def test_query_aware_cover_drops_the_crossing_tile(monkeypatch):
    # inclusive cumsum <= 6.3 keeps through 6.17: (2,1), (3,2), (4,3); (5,4) crosses gamma (6.59) -> dropped
    assert _cover_case(monkeypatch) == {(2, 1), (3, 2), (4, 3)}


def test_include_crossing_tile_keeps_it(monkeypatch):
    # mass before (5,4) is 6.17 < 6.3 -> kept; before (6,5) 6.59 -> not
    assert _cover_case(monkeypatch, include_crossing_tile=True) == {(2, 1), (3, 2), (4, 3), (5, 4)}


def test_min_budget_is_in_tokens_and_decides_dense():
    q, k, _ = structured_qkv(1, 2, 1, 300, 32, seed=1)
    cfg = FlexPrefillConfig(block_size=BS, min_budget=300)  # ceil(300 / 16) = 19 blocks -> 304 >= 300: dense
    assert isinstance(flex_module.plan(q, k, cfg, 32**-0.5), Dense)
    assert not isinstance(flex_module.plan(q, k, FlexPrefillConfig(block_size=BS, min_budget=200), 32**-0.5), Dense)


def _reference(q, k, cfg, scale):
    """The original's rule written out per head with loops: (B, H, R, T) bool and the query-aware flags."""
    batch, heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    t = math.ceil(nk / bs)
    first = (nk - nq) // bs
    lo = math.ceil(cfg.min_budget / bs)
    hi = t if cfg.max_budget is None else min(math.ceil(cfg.max_budget / bs), t)
    unit = cfg.budget_unit or bs
    m = min(bs, nq)
    out = torch.zeros(batch, heads, t - first, t, dtype=torch.bool)
    aware = torch.zeros(batch, heads, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            kk = k[b, h // (heads // k.shape[1])].float()
            qs = q[b, h, nq - m :].float()
            pos = list(range(nk - m, nk))
            logits = qs @ kk.T * scale
            for i, p in enumerate(pos):
                logits[i, p + 1 :] = float("-inf")
            probs = torch.softmax(logits, -1)
            vertical = probs.mean(0)
            slash = torch.zeros(nk)
            for i, p in enumerate(pos):
                slash[: p + 1] += probs[i, : p + 1].flip(0)  # offset o <-> key p - o
            slash /= m

            def budget(x):
                count = int((torch.cumsum(torch.sort(x, descending=True).values, 0) <= cfg.gamma).sum()) + 1
                return min(max(count // unit + 1, lo), hi)

            n_v, n_s = budget(vertical), budget(slash)
            v_blocks = [float(vertical[j * bs : (j + 1) * bs].sum()) for j in range(t)]
            s_blocks = [0.0] * t
            for o in range(nk):
                s_blocks[t - 1 - (nk - 1 - o) // bs] += float(slash[o])
            kmean = torch.stack([kk[j * bs : (j + 1) * bs].mean(0) for j in range(t)])
            a = torch.softmax(qs.mean(0) * scale @ kmean.T, -1)
            vb = torch.tensor(v_blocks)
            mu = (a + vb) / 2
            js = math.sqrt(0.5 * float((a * (a / mu).log()).sum()) + 0.5 * float((vb * (vb / mu).log()).sum()))
            aware[b, h] = js < cfg.tau
            if aware[b, h]:
                n_v = n_s = lo
            top_v = sorted(range(t), key=lambda j: (-(math.inf if j == 0 else v_blocks[j]), j))[:n_v]
            top_s = sorted(range(t), key=lambda d: (-(math.inf if d == 0 else s_blocks[d]), d))[:n_s]
            for r in range(t - first):
                qb = first + r
                for j in top_v:
                    out[b, h, r, j] |= j <= qb
                for d in top_s:
                    if qb - d >= 0:
                        out[b, h, r, qb - d] = True
            if not aware[b, h]:
                continue
            entries = []
            for r in range(t - first):
                qb = first + r
                lo_pos, hi_pos = max(qb * bs, nk - nq), min((qb + 1) * bs, nk)
                rows = q[b, h, lo_pos - (nk - nq) : hi_pos - (nk - nq)].float()
                pq = rows.sum(0) / (bs if cfg.query_mean == "padded" else rows.shape[0])
                attn = torch.softmax(pq * scale @ kmean[: qb + 1].T, -1)
                entries += [(float(attn[j]) if j <= qb else 0.0, r * t + j) for j in range(t)]
            entries.sort(key=lambda e: (-e[0], e[1]))
            total = 0.0
            for value, flat in entries:
                before, total = total, total + value
                cut = cfg.gamma * (t - first)
                keep = before < cut if cfg.include_crossing_tile else total <= cut
                if keep and value > 0:
                    out[b, h, flat // t, flat % t] = True
    return out, aware


@pytest.mark.parametrize(
    "nq, nk, heads, kwargs",
    [
        (203, 203, (4, 2), dict(gamma=0.9, tau=0.1)),
        (256, 256, (2, 2), dict(gamma=0.95, tau=0.25)),
        (333, 333, (4, 1), dict(gamma=0.8, tau=10)),
        (333, 333, (2, 1), dict(gamma=0.9, tau=10, query_mean="real", include_crossing_tile=True)),
        (120, 333, (4, 2), dict(gamma=0.9, tau=10)),
        (301, 301, (2, 2), dict(gamma=0.95, tau=0.1, budget_unit=None, min_budget=40, max_budget=100)),
        (301, 301, (2, 1), dict(gamma=0.9, tau=0.1, block_size=32, budget_unit=8)),
    ],
)
def test_planner_matches_the_rule_on_real_inputs(nq, nk, heads, kwargs):
    kwargs = {"block_size": BS, **kwargs}
    q, k, _ = structured_qkv(1, heads[0], heads[1], nk, 32, seed=nq + nk,
                             structure=Structure(heavy_fraction=0.05, recency_logit=3.0))
    q = q[:, :, nk - nq :]
    cfg = FlexPrefillConfig(**kwargs)
    got = flex_module.plan(q, k, cfg, 32**-0.5).block_mask()
    expected, aware = _reference(q, k, cfg, 32**-0.5)
    assert torch.equal(got, expected)
    if cfg.tau == 10:
        assert aware.all()  # the query-aware branch was exercised


@pytest.mark.parametrize("bad, name", [(dict(budget_unit=0), "budget_unit"), (dict(query_mean="x"), "query_mean"),
                                       (dict(include_crossing_tile="yes"), "include_crossing_tile")])
def test_bad_settings_raise(bad, name):
    with pytest.raises(ValueError, match=name):
        FlexPrefillConfig(**bad)
