"""The speed targets of the kernel work (issue: Triton kernels + benchmark), evaluated from the benchmark rows."""

from __future__ import annotations

import torch

from .rows import finite, find, is_ok

TARGET_LONG = (32768, 65536, 131072)  # "32K–128K" in the targets
TARGET_MAX = 131072  # "at 128K"


def evaluate_targets(rows: list[dict]) -> list[dict]:
    """Each target as {target, status: met | missed | incomplete | not measured, measured}."""
    out = []

    def add(target, values, ok, need, info=()):
        """values: list of (label, number or None); ok(number) -> bool; need: labels that must be measured."""
        got = [(lbl, x) for lbl, x in values if x is not None and finite(x)]
        if not got:
            status = "not measured"
        elif not all(ok(x) for _, x in got):
            status = "missed"
        elif len(got) < need:
            status = "incomplete"
        else:
            status = "met"
        measured = "; ".join(f"{lbl}: {x:.3g}" if x is not None and finite(x) else f"{lbl}: not measured"
                             for lbl, x in values)
        measured = "; ".join([measured, *info])
        out.append({"target": target, "status": status, "measured": measured})

    def speedup(section, variant, n):
        r = find(rows, section, variant, n)
        return r["speedup_vs_fastest_dense"] if r and is_ok(r) else None

    add("ours (all causal tiles) >= 0.75x the fastest dense SDPA at 32K-128K",
        [(f"N={n} ours/fastest", speedup("dense", "ours_dense", n)) for n in TARGET_LONG], lambda x: x >= 0.75,
        len(TARGET_LONG))
    add("PBS end to end at 128K >= 3.0x the fastest dense SDPA",
        [(f"N={TARGET_MAX} speedup", speedup("methods", "pbs", TARGET_MAX))], lambda x: x >= 3.0, 1)
    ratios = []
    for n in TARGET_LONG:
        ours = find(rows, "block_sparse", "ours_sparse_d0.22", n)
        flex = [r for v in ("flex_sparse_d0.22", "flexmask_sparse_d0.22")
                if (r := find(rows, "block_sparse", v, n)) is not None and is_ok(r)]
        ratio = min(r["median_ms"] for r in flex) / ours["median_ms"] if ours and is_ok(ours) and flex else None
        ratios.append((f"N={n} fastest flex ms / ours ms", ratio))
    add("ours >= 1.2x FlexAttention on the same block mask (density 0.22; the faster of flex_sparse and "
        "flexmask_sparse), 32K-128K", ratios, lambda x: x >= 1.2, len(TARGET_LONG))
    pbs_row = find(rows, "methods", "pbs", TARGET_MAX)
    overhead = pbs_row["overhead_pct"] if pbs_row and is_ok(pbs_row) else None
    add("PBS planning overhead (permutation + selection) <= 5% of total at 128K",
        [(f"N={TARGET_MAX} overhead %", overhead)], lambda x: x <= 5.0, 1)
    info = []
    for variant in ("ours_dense",):  # the kernel alone (plan prebuilt): shows whether K/V are ever copied
        kr = find(rows, "dense", variant, TARGET_MAX)
        if kr and is_ok(kr) and finite(kr["peak_mem_gib"]):
            info.append(f"info, {variant} kernel alone: {extra_mem_pct(kr):.3g}")
    add("extra peak memory at 128K (PBS end to end, beyond the output) <= 10% of the K+V bytes",
        [(f"N={TARGET_MAX} (peak - output) / (K+V) %",
          extra_mem_pct(pbs_row) if pbs_row and is_ok(pbs_row) and finite(pbs_row["peak_mem_gib"]) else None)],
        lambda x: x <= 10.0, 1, info)
    return out


def extra_mem_pct(r: dict) -> float:
    """(peak memory − output bytes) as a percentage of the K+V bytes, for one row."""
    item = torch.empty((), dtype=getattr(torch, r["dtype"])).element_size()
    kv = 2 * r["batch"] * r["kv_heads"] * r["seq_len"] * r["head_dim"] * item
    out_bytes = r["batch"] * r["q_heads"] * r["seq_len"] * r["head_dim"] * item
    return (r["peak_mem_gib"] * 2**30 - out_bytes) / kv * 100
