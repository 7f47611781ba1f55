"""MInference lays out its slashes as the original's index builder does: unaligned key windows, merged.

The original's rule (``convert_vertical_slash_indexes``), stated without its code: for the query block
[a, a + bs) with e = a + bs, each kept offset o < e (largest first) asks for keys ending at x = max(e - o, bs);
the first opens the range [x - bs, x); a later x more than bs past the range's end opens a new range, an x
within bs past it extends the range by a whole bs (overshooting up to bs - 1 keys), an x inside it does
nothing; ranges are cut into bs-wide windows from their start. A kept column is gathered when it lies in no
window and before the last range's end. Expected windows below are worked out by hand.
"""

import pytest
import torch

from pbs.config import MInferenceConfig
from pbs.methods import get_method
from pbs.synthetic import Structure, structured_qkv
from pbs.vertical_slash import columns_outside_windows, slash_windows


def _windows(e, offsets, bs=64):
    starts, valid = slash_windows(torch.tensor([e]), torch.tensor([[offsets]]), bs)
    return starts[0, 0, 0][valid[0, 0, 0]].tolist()


@pytest.mark.parametrize(
    "offsets, expected",
    [
        # e = 192. o=150: x = max(42, 64) = 64 -> open [0, 64). o=100: x = 92 in (64, 128] -> extend to 128
        # (window 64). o=70: x = 122 <= 128 -> nothing. o=20: x = 172 in (128, 192] -> extend to 192 (window 128).
        # o=0: x = 192 <= 192 -> nothing.
        ([150, 100, 70, 20, 0], [0, 64, 128]),
        # o=130: x = 62 -> 64 -> [0, 64). o=30: x = 162 > 64 + 64 -> new range [98, 162). o=0: x = 192 in
        # (162, 226] -> extend to 226 (window 162, 34 keys past the block: masked causally)
        ([130, 30, 0], [0, 98, 162]),
        # o=300 >= e: skipped. o=10: x = 182 -> [118, 182). o=0: x = 192 in (182, 246] -> extend (window 182)
        ([300, 10, 0], [118, 182]),
        # o=0 alone: the diagonal block itself
        ([0], [128]),
    ],
)
def test_windows_merge_as_the_original(offsets, expected):
    assert _windows(192, offsets) == expected


def test_windows_of_several_rows_at_once():
    # the same offsets [130, 30, 0] for the rows ending at 64, 128, 192:
    # e=64: o=130, 30 >= ... 130 skipped; o=30: x = max(34, 64) = 64 -> [0, 64); o=0: x = 64 -> nothing.
    # e=128: o=30: x = 98 -> [34, 98); o=0: x = 128 in (98, 162] -> extend (window 98).
    starts, valid = slash_windows(torch.tensor([64, 128, 192]), torch.tensor([[[130, 30, 0]]]), 64)
    rows = [starts[0, 0, r][valid[0, 0, r]].tolist() for r in range(3)]
    assert rows == [[0], [34, 98], [0, 98, 162]]


def test_columns_outside_windows_are_gathered():
    # windows [0, 64), [98, 162), [162, 226): 10 and 100, 170, 180 are inside; 70 and 95 fall in the gap;
    # 230 lies past the last window's end (never gathered)
    starts = torch.tensor([[[[0, 98, 162]]]])
    cols = torch.tensor([[[[10, 70, 95, 100, 170, 180, 230]]]])
    gathered = columns_outside_windows(cols, starts, torch.ones_like(starts, dtype=torch.bool), 64)
    assert cols[gathered].tolist() == [70, 95]


def _rule(columns, offsets, row_start, bs):
    """The original's per-row loop, written out: (window starts, gathered columns)."""
    e = row_start + bs
    ranges, cur = [], None
    for o in offsets:  # descending
        if o >= e:
            continue
        x = max(e - o, bs)
        if cur is None:
            cur = [x - bs, x]
        elif x > cur[1] + bs:
            ranges.append(cur)
            cur = [x - bs, x]
        elif x > cur[1]:
            cur[1] += bs
    ranges.append(cur)
    windows = [s for lo, hi in ranges for s in range(lo, hi, bs)]
    gathered = [c for c in columns if c < ranges[-1][1] and not any(lo <= c < hi for lo, hi in ranges)]
    return windows, gathered


def _estimate(q, k, cfg, scale):
    """Kept columns (ascending) and offsets (descending) per head, from the last queries, written out plainly."""
    nq, nk = q.shape[2], k.shape[2]
    m = min(cfg.last_q, nq)
    out = []
    for h in range(q.shape[1]):
        kk = k[0, h // (q.shape[1] // k.shape[1])].float()
        logits = q[0, h, nq - m :].float() @ kk.T * scale
        pos = torch.arange(nk - m, nk)
        logits[torch.arange(nk)[None, :] > pos[:, None]] = float("-inf")
        probs = torch.softmax(logits, -1)
        vertical = probs.sum(0)
        slash = torch.zeros(nk)
        for i, p in enumerate(pos.tolist()):
            slash[: p + 1] += probs[i, : p + 1].flip(0)
        vertical[: cfg.num_sink_columns] = float("inf")
        slash[: cfg.num_local_diagonals] = float("inf")
        n_v = min(max(cfg.vertical_size, cfg.num_sink_columns), nk)
        n_s = min(max(cfg.slash_size, 50), nk)
        cols = sorted(sorted(range(nk), key=lambda j: (-float(vertical[j]), j))[:n_v])
        offs = sorted(sorted(range(nk), key=lambda o: (-float(slash[o]), o))[:n_s], reverse=True)
        out.append((cols, offs))
    return out


@pytest.mark.parametrize(
    "nq, nk, heads, kwargs",
    [
        (333, 333, (4, 2), dict(block_size=16, vertical_size=40, slash_size=60)),
        (256, 256, (2, 2), dict(block_size=16, vertical_size=30, slash_size=120, num_local_diagonals=20)),
        (150, 333, (4, 1), dict(block_size=32, vertical_size=50, slash_size=80, last_q=32)),
        (401, 401, (2, 1), dict(block_size=64, vertical_size=100, slash_size=60, num_local_diagonals=10)),
    ],
)
def test_planner_matches_the_rule_on_real_inputs(nq, nk, heads, kwargs):
    q, k, _ = structured_qkv(1, heads[0], heads[1], nk, 32, seed=nq + nk,
                             structure=Structure(heavy_fraction=0.05, recency_logit=3.0))
    q = q[:, :, nk - nq :]
    cfg = MInferenceConfig(**kwargs)
    plan = get_method("minference").plan(q, k, cfg, 32**-0.5)
    bs, first = cfg.block_size, (nk - nq) // cfg.block_size
    assert plan.kv_num_blocks.sum() == 0 and plan.full_kv_num_blocks.sum() == 0  # windows only
    unaligned = 0
    for h, (cols, offs) in enumerate(_estimate(q, k, cfg, 32**-0.5)):
        for r in range(plan.num_rows):
            windows, gathered = _rule(cols, offs, (first + r) * bs, bs)
            windows = [s for s in windows if s < nk]
            got_w = plan.win_starts[0, h, r, : int(plan.win_num[0, h, r])].tolist()
            got_c = plan.col_indices[0, h, r, : int(plan.col_num[0, h, r])].tolist()
            assert (got_w, got_c) == (windows, gathered), (h, r)
            unaligned += sum(s % bs != 0 for s in windows)
    assert unaligned > 0  # the unaligned windows were exercised
    assert int(plan.key_counts().max()) == 1  # no key listed twice


@pytest.mark.parametrize("layout", ["windows", "aligned"])
def test_both_layouts_list_every_key_on_a_kept_diagonal_or_column(layout):
    q, k, _ = structured_qkv(1, 4, 2, 301, 32, seed=5, structure=Structure(heavy_fraction=0.05, recency_logit=3.0))
    cfg = MInferenceConfig(block_size=16, vertical_size=40, slash_size=60, num_local_diagonals=10, slash_layout=layout)
    plan = get_method("minference").plan(q, k, cfg, 32**-0.5)
    counts = plan.key_counts()[0]  # (H, R, Nk)
    assert int(counts.max()) == 1
    assert (plan.win_starts is not None) == (layout == "windows")
    for h, (cols, offs) in enumerate(_estimate(q, k, cfg, 32**-0.5)):
        for r in range(plan.num_rows):
            queries = range(r * 16, min(r * 16 + 16, 301))
            needed = {p - o for p in queries for o in offs if p - o >= 0} | {c for c in cols if c <= r * 16}
            assert all(counts[h, r, j] == 1 for j in needed), (h, r)


def test_bad_layout_raises():
    with pytest.raises(ValueError, match="slash_layout"):
        MInferenceConfig(slash_layout="unaligned")
