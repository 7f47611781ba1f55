"""NaN/Inf in q or k propagate exactly as in SDPA, for every method and both planners.

The rule (README, ``pbs.sparse_attention``): a row whose estimated scores are not finite (a head, for MInference's
and FlexPrefill's last-query estimate) cannot be ranked and computes every causal tile. So a non-finite key
reaches every later query, as in SDPA, and nothing is turned into zeros: the output's NaN pattern is SDPA's, element
for element. Shapes are small: the fused planners run under Triton's CPU interpreter.
"""

import pytest
import torch

import pbs

# the CPU interpreter's numpy reports the NaNs these tests feed it
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:All-NaN slice encountered:RuntimeWarning")

N, D = 100, 16
KWARGS = {
    "full": {},
    "pbs": {"block_size": 16, "segment_size": 32},
    "oracle": {"block_size": 16, "segment_size": 32},
    "meanpool": {"block_size": 16},
    "xattention": {"block_size": 16, "stride": 4},
    "minference": {"block_size": 16, "vertical_size": 8, "slash_size": 16, "last_q": 16},
    "flexprefill": {"block_size": 16},
}
VARIANTS = {  # settings with their own selection code
    "pbs+": ("pbs", {"block_size": 16, "segment_size": 32, "scoring": "antidiagonal", "stride": 4}),
    "pbs-budget": ("pbs", {"block_size": 16, "segment_size": 32, "budget": 0.3}),
    "xattention-budget": ("xattention", {"block_size": 16, "stride": 4, "budget": 0.3}),
    "minference-aligned": ("minference", {**KWARGS["minference"], "slash_layout": "aligned"}),
    "minference-budget": ("minference", {**KWARGS["minference"], "budget": 0.3}),
    "flexprefill-budget": ("flexprefill", {"block_size": 16, "budget": 0.3}),
    "flexprefill-query-aware": ("flexprefill", {"block_size": 16, "tau": 1.0}),  # every head query-aware
}


def _inputs(case: str):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, h, N, D, generator=g) for h in (2, 1, 1))
    if case == "nan_key":
        k[0, 0, 41] = float("nan")  # every query from position 41 on sees it
    elif case == "inf_key":
        k[0, 0, 70] = float("inf")  # q·k = +inf - inf: NaN scores, as a NaN
    elif case == "nan_query":
        q[0, 1, 37] = float("nan")  # one query row, away from the last queries the estimators use
    elif case == "nan_last_query":
        q[0, 0, N - 2] = float("nan")  # inside the estimators' last queries
    elif case == "all_nan_keys":
        k.fill_(float("nan"))
    return q, k, v


def _sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


CASES = ["nan_key", "inf_key", "nan_query", "nan_last_query", "all_nan_keys"]


@pytest.mark.parametrize("planner", ["torch", "triton"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", sorted(KWARGS))
def test_non_finite_inputs_propagate_as_in_sdpa(method, case, planner):
    q, k, v = _inputs(case)
    expected = torch.isnan(_sdpa(q, k, v))
    assert expected.any() and (case == "all_nan_keys" or not expected.all())
    out, stats = pbs.sparse_attention(q, k, v, method, planner=planner, backend="torch", return_stats=True,
                                      **KWARGS[method])
    assert torch.equal(torch.isnan(out), expected), f"NaN rows {int(torch.isnan(out).any(-1).sum())} vs SDPA's " \
                                                   f"{int(expected.any(-1).sum())}"
    assert not (out == 0).all(-1).any()  # no row turned into zeros
    if method != "full":
        assert stats.planner == ("torch" if method == "oracle" else planner)  # the fused planner did run


# slash_layout="aligned" has no fused planner: its torch run covers it
VARIANT_RUNS = [(v, p) for v in sorted(VARIANTS) for p in ("torch", "triton") if (v, p) != ("minference-aligned", "triton")]


@pytest.mark.parametrize("case", ["nan_key", "nan_query", "nan_last_query"])
@pytest.mark.parametrize(("variant", "planner"), VARIANT_RUNS)
def test_non_finite_inputs_propagate_in_every_selection_mode(variant, planner, case):
    method, kwargs = VARIANTS[variant]
    q, k, v = _inputs(case)
    out = pbs.sparse_attention(q, k, v, method, planner=planner, backend="torch", **kwargs)
    assert torch.equal(torch.isnan(out), torch.isnan(_sdpa(q, k, v)))


def test_a_non_finite_row_is_planned_whole_and_clean_rows_are_not():
    """The mechanism: with a NaN key at position 41 (block 2), MeanPooling's rows from block 2 on list every causal
    tile; the rows before keep their sparse selection (the same as without the NaN)."""
    q, k, _ = _inputs("nan_key")
    clean_k = _inputs("none")[1]
    plan = pbs.plan(q, k, "meanpool", planner="torch", block_size=16, threshold=0.3)
    clean = pbs.plan(q, clean_k, "meanpool", planner="torch", block_size=16, threshold=0.3)
    mask, clean_mask = plan.block_mask()[0, 0], clean.block_mask()[0, 0]
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    assert torch.equal(mask[2:], causal[2:])
    assert torch.equal(mask[:2], clean_mask[:2])
    assert not torch.equal(clean_mask[2:], causal[2:])  # the clean plan is sparse there: the test can fail
