"""The speed benchmark's report, rebuilt from its CSV alone (the app writes it after every run; ``make
reproduce-tables`` rebuilds it): ``<gpu>.md`` beside the CSV, the plots ``<gpu>-ttft.png`` / ``<gpu>-speedup.png``,
and the paper's Table 7 layout from the kernel benchmark's CSV (``table7_markdown``, ``table7_plot``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from . import paper
from .config import SDPA_VARIANTS
from .results import finite, read_csv

REGIME_TEXT = {
    "fixed": "**fixed densities** (random bf16 weights; every method through `budget=` at the paper's measured "
             "Llama-3.1-8B densities at τ 0.9, planning included): speed at equal density, not the methods' own "
             "choice",
    "adaptive": "**adaptive densities** (the trained proxy model on a RULER-style prompt; every method at its own "
                "threshold): the densities the methods really choose, on a 11 M-parameter model whose TTFT is a "
                "different regime from the 8B models' (fixed per-call costs weigh far more)",
}
TARGET_TEXT = ("Targets (issue 14): at 128K on the Llama-3.1-8B architecture at the paper's density, PBS's TTFT ≥ 2.0× "
               "the fastest dense SDPA on the same GPU; PBS ahead of every other method at equal density from 32K.")


def _k(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _f(x, digits: int = 3) -> str:
    """``digits`` significant digits, never an exponent (12345.6 -> 12346)."""
    if not finite(x):
        return "—"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"


def _short_commit(commit: str) -> str:
    return re.sub(r"\b([0-9a-f]{7})[0-9a-f]{5,33}\b", r"\1", commit)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in body]]


def _ok(rows, **match) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and all(r[k] == v for k, v in match.items())]


def _get(rows, **match) -> dict | None:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return found[0] if found else None


def _variants(rows) -> list[str]:
    seen = list(dict.fromkeys(r["variant"] for r in rows))
    return [v for v in SDPA_VARIANTS if v in seen] + [v for v in seen if v not in SDPA_VARIANTS]


def speed_markdown(rows: list[dict]) -> str:
    """The whole report as Markdown (see the module docstring)."""
    gpu = rows[0]["gpu"] if rows else "unknown GPU"
    out = [f"# End-to-end prefill speed (time to first token): {gpu}", "",
           "Two density regimes, never compared with each other: " + "; ".join(
               f"{REGIME_TEXT[g]}" for g in ("fixed", "adaptive") if any(r["regime"] == g for r in rows)) + ".", ""]
    out += _provenance(rows) + _protocol()
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = [r for r in rows if r["model"] == model and r["protocol"] == "forward"]
        if mrows:
            out += _model_section(model, mrows)
    out += _protocol_check(rows) + _targets(rows) + _failures(rows)
    return "\n".join(out) + "\n"


def _provenance(rows) -> list[str]:
    out = ["## Provenance", ""]
    runs: dict[tuple, list[dict]] = {}
    for r in rows:
        runs.setdefault((r["command"], r["git_commit"], r["gpu"], r["torch"], r["triton"], r["transformers"],
                         r["cuda"]), []).append(r)
    body = [[f"`{cmd}`", _short_commit(commit), gpu, f"torch {t}, triton {tr}, transformers {tf}, CUDA {cu}",
             min(r["date_utc"] for r in rs), len(rs)]
            for (cmd, commit, gpu, t, tr, tf, cu), rs in runs.items()]
    return out + _table(["command", "commit", "GPU", "versions", "date (UTC)", "runs"], body) + [""]


def provenance_footer(rows) -> str:
    """The figure's provenance: per GPU, versions and commit, the dates and the commands that measured the rows."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["gpu"], r["torch"], r["triton"], r["transformers"], r["cuda"],
                           _short_commit(r["git_commit"])), []).append(r)
    parts = []
    for (gpu, t, tr, tf, cu, commit), rs in groups.items():
        dates = sorted({r["date_utc"][:10] for r in rs})
        commands = " | ".join(dict.fromkeys(r["command"] for r in rs))
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        parts.append(f"{gpu}, torch {t}, triton {tr}, transformers {tf}, CUDA {cu}; {when}; commit {commit}; {commands}")
    return " // ".join(parts)


def _protocol() -> list[str]:
    return ["## Protocol", "",
            ("- TTFT = one forward over the prompt, batch 1, `model(ids, logits_to_keep=1, use_cache=True)` (the "
            "prefill: the KV cache is written, only the last position's logits computed); CUDA events (perf_counter "
            "on a CPU), median (p10/p90 in the CSV) of ≥ 5 timed forwards after warm-up (compilation, autotuning excluded)."),
            ("- Dense: transformers' `sdpa` attention forced to one backend (`sdpa_cudnn`, `sdpa_flash`, "
            "`sdpa_efficient`); the fastest per model and length is the baseline of every speedup (named in "
            "`baseline`). Methods: `pbs.hf.enable` with the fused GPU planners, the short-sequence policy off."),
            ("- Attention = the summed time of the attention calls of one forward (CUDA events inside the forward, "
            "planning included); planning = the `pbs.plan` calls inside them; kernel = attention − planning; "
            "rest = TTFT − attention (projections, MLP, norms, RoPE, cache writes). Medians over the timed forwards."),
            ("- Density = the method's stats over the timed forwards (mean over layers and heads; min/max over layers "
            "in the CSV), beside the target. Peak memory = the first forward's maximum allocated (weights "
            "included)."), ""]


def _model_section(model: str, rows: list[dict]) -> list[str]:
    regime = rows[0]["regime"]
    lengths = sorted({r["seq_len"] for r in rows})
    variants = _variants(rows)
    out = [f"## {model} ({regime} densities)", "", f"Regime: {REGIME_TEXT[regime]}.", "",
           "### TTFT ms (speedup over the fastest SDPA backend)", ""]
    body = []
    for v in variants:
        cells = []
        for n in lengths:
            r = _get(rows, variant=v, seq_len=n)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(r["status"])
            else:
                cells.append(f"{_f(r['ttft_ms'], 4)} ({_f(r['speedup'])}×)")
        body.append([v, *cells])
    out += _table(["variant", *map(_k, lengths)], body) + [""]
    base = {n: (_get(rows, seq_len=n, status="ok") or {}).get("baseline", "") for n in lengths}
    out += ["Baseline per length: " + ", ".join(f"{_k(n)} {b or '—'}" for n, b in base.items()) + ".", ""]
    out += ["### Density: measured (target)", ""]
    body = [[v, *[("" if (r := _get(rows, variant=v, seq_len=n)) is None or r["status"] != "ok"
                   else f"{_f(r['density'])} ({_f(r['target_density'])})") for n in lengths]]
            for v in variants if v not in SDPA_VARIANTS]
    out += _table(["method", *map(_k, lengths)], body) + [""]
    out += ["### Where the time goes", ""]
    body = [[r["variant"], _k(r["seq_len"]), _f(r["ttft_ms"], 4), f"{_f(r['attention_ms'], 4)} ({_f(r['attention_pct'])}%)",
             _f(r["plan_ms"]), _f(r["kernel_ms"], 4), _f(r["rest_ms"], 4), _f(r["attention_speedup"]),
             _f(r["peak_mem_gib"]), r["planner"][:60]]
            for r in sorted(_ok(rows), key=lambda r: (r["seq_len"], variants.index(r["variant"])))]
    out += _table(["variant", "N", "TTFT ms", "attention ms (share)", "planning ms", "kernel ms", "rest ms",
                   "attention speedup", "peak GiB", "planner"], body) + [""]
    if model.startswith("llama3.1-8b"):
        out += _paper_llama(rows)
    if model.startswith("qwen3-8b"):
        out += _paper_table9(rows)
    return out


def _paper_llama(rows) -> list[str]:
    r = _get(rows, variant="pbs", seq_len=131072, status="ok")
    ours = f"ours {_f(r['speedup'])}× at 128K (density {_f(r['density'])})" if r else "ours not measured at 128K"
    return [f"Paper, Fig. 4 ({paper.HARDWARE}; only curves are published): "
            + "; ".join(paper.FIG4_FACTS) + f". PBS: {ours} vs the paper's ≈{paper.FIG4_PBS_128K}× (read off the "
            "curve, against FlashAttention-2; our baseline is the fastest SDPA, cuDNN on the H200, which is ~1.7× "
            "faster than FlashAttention-2 there).", ""]


def _paper_table9(rows) -> list[str]:
    body = []
    for n, (full, pbs_ms, speed) in paper.TABLE9.items():
        base = next((r for r in rows if r["seq_len"] == n and r["status"] == "ok" and r["variant"] == r["baseline"]),
                    None)
        ours = _get(rows, variant="pbs", seq_len=n, status="ok")
        body.append([_k(n), _f(base["ttft_ms"], 5) if base else "—", _f(ours["ttft_ms"], 5) if ours else "—",
                     f"{_f(ours['speedup'])}×" if ours else "—", full, pbs_ms, f"{speed}×"])
    return (["### Table 9 layout: Qwen3-8B TTFT ms (ours beside the paper's)", "",
             (f"Paper columns: {paper.HARDWARE} (256K/512K on 4/8 GPUs; we run one GPU up to 128K). Ours: the fastest "
             "SDPA backend and PBS at the paper's Llama densities (Qwen3's own are not published)."), ""]
            + _table(["N", "full, ours", "PBS, ours", "speedup, ours", "full, paper", "PBS, paper", "speedup, paper"],
                     body) + [""])


def _protocol_check(rows) -> list[str]:
    gen = [r for r in rows if r["protocol"] == "generate" and r["status"] == "ok"]
    if not gen:
        return []
    body = []
    for g in gen:
        f = _get(rows, model=g["model"], protocol="forward", seq_len=g["seq_len"], variant=g["variant"], status="ok")
        ratio = g["ttft_ms"] / f["ttft_ms"] if f else math.nan
        body.append([g["model"], _k(g["seq_len"]), g["variant"], _f(f["ttft_ms"], 5) if f else "—",
                     _f(g["ttft_ms"], 5), _f(ratio)])
    return (["## TTFT protocol check: forward vs generate(max_new_tokens=1)", "",
             "The paper times `generate(max_new_tokens=1)`; we time the forward. Both, at one length per model:", ""]
            + _table(["model", "N", "variant", "forward ms", "generate ms", "generate / forward"], body) + [""])


def _targets(rows) -> list[str]:
    out = ["## Targets", "", TARGET_TEXT, ""]
    llama = [r for r in rows if r["model"].startswith("llama3.1-8b") and r["protocol"] == "forward"]
    p = _get(llama, variant="pbs", seq_len=131072, status="ok")
    if p is None:
        out.append("- **not measured**: PBS at 128K on Llama-3.1-8B.")
    else:
        met = finite(p["speedup"]) and p["speedup"] >= 2.0
        base = _get(llama, variant=p["baseline"], seq_len=131072)
        line = (f"- **{'met' if met else 'missed'}**: PBS {_f(p['speedup'])}× the fastest SDPA ({p['baseline']}) at "
                f"128K, density {_f(p['density'])} (target {_f(p['target_density'])}).")
        if not met and base is not None:
            ceiling = base["ttft_ms"] / base["rest_ms"] if finite(base["rest_ms"]) and base["rest_ms"] > 0 else math.nan
            line += (f" Breakdown: the rest of the model takes {_f(base['rest_ms'], 4)} ms of the baseline's "
                     f"{_f(base['ttft_ms'], 4)} ms (attention {_f(base['attention_pct'])}%), so even free attention "
                     f"gives at most {_f(ceiling)}×; PBS's attention is {_f(p['attention_ms'], 4)} ms (planning "
                     f"{_f(p['plan_ms'], 4)} ms, kernel {_f(p['kernel_ms'], 4)} ms) against the baseline's "
                     f"{_f(base['attention_ms'], 4)} ms ({_f(p['attention_speedup'])}×).")
        out.append(line)
    for n in sorted({r["seq_len"] for r in llama if r["seq_len"] >= 32768}):
        p = _get(llama, variant="pbs", seq_len=n, status="ok")
        others = [r for r in _ok(llama, seq_len=n) if r["variant"] not in SDPA_VARIANTS and r["variant"] != "pbs"
                  and _same_density(r, p)]
        if p is None or not others:
            continue
        faster = [f"{r['variant']} {_f(r['ttft_ms'], 4)} ms (planning {_f(r['plan_ms'], 4)}, kernel "
                  f"{_f(r['kernel_ms'], 4)})" for r in others if r["ttft_ms"] < p["ttft_ms"]]
        out.append(f"- **{'missed' if faster else 'met'}** at {_k(n)}: PBS {_f(p['ttft_ms'], 4)} ms (planning "
                   f"{_f(p['plan_ms'], 4)} ms, kernel {_f(p['kernel_ms'], 4)} ms)"
                   + (f"; faster: {'; '.join(faster)}" if faster else f"; ahead of {len(others)} other methods"))
    if any(line.startswith("- **missed** at") for line in out):
        out.append("- At equal density the methods differ only in planning and in the kernel's tile order; PBS pays "
                   "for its permutation in both (the segment sort in planning; the permuted K/V copy and the "
                   "permuted tiles in the kernel's time): the lines above give each part.")
    return out + [""] + _permutation_end_to_end(llama)


def _same_density(a: dict, b: dict | None) -> bool:
    return b is not None and finite(a["target_density"]) and finite(b["target_density"]) \
        and abs(a["target_density"] - b["target_density"]) < 1e-9


def _permutation_end_to_end(llama: list[dict]) -> list[str]:
    """PBS at its density vs no permutation at the (higher) density it needs for the same τ (Table 5)."""
    body = []
    for n in sorted({r["seq_len"] for r in llama}):
        p = _get(llama, variant="pbs", seq_len=n, status="ok")
        q = _get(llama, variant="pbs_permute_none_paper_density", seq_len=n, status="ok")
        if p is not None and q is not None:
            body.append([_k(n), f"{_f(p['density'])} / {_f(q['density'])}", _f(p["ttft_ms"], 4), _f(q["ttft_ms"], 4),
                         f"{_f(q['ttft_ms'] / p['ttft_ms'])}×"])
    if not body:
        return []
    return (["## What the permutation buys end to end", "",
             ("At τ 0.9 the paper's Llama-3.1-8B selects fewer blocks with the key permutation than without (Table 5: "
             "21.9% vs 25.6% at 128K) at comparable accuracy. Below: PBS at the permuted density against "
             "`permute=none` at the unpermuted one (`pbs_permute_none_paper_density`), both with their real planning "
             "costs."), ""]
            + _table(["N", "density PBS / none", "PBS ms", "none ms", "PBS speedup over none"], body) + [""])


def _failures(rows) -> list[str]:
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return []
    return (["## Failed and unavailable runs", ""]
            + _table(["model", "protocol", "N", "variant", "status", "error"],
                     [[r["model"], r["protocol"], _k(r["seq_len"]), r["variant"], r["status"], r["error"][:200]]
                      for r in bad]) + [""])


def speed_plots(rows: list[dict], prefix: Path) -> list[Path]:
    """``<prefix>-ttft.png`` and ``<prefix>-speedup.png``: per model (forward protocol), TTFT and speedup vs N per
    variant, log-x; the paper's Qwen3-8B (Table 9) and Llama (Fig. 4, read off) PBS speedups as marked points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows if r["protocol"] == "forward"))
    if not models:
        return []
    written = []
    for kind in ("ttft", "speedup"):
        fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
        for ax, model in zip(axes[0], models):
            mrows = _ok(rows, model=model, protocol="forward")
            lengths = sorted({int(r["seq_len"]) for r in mrows})
            for v in _variants(mrows):
                pts = sorted((r["seq_len"], r["ttft_ms"] if kind == "ttft" else r["speedup"])
                             for r in mrows if r["variant"] == v)
                if kind == "speedup" and v in SDPA_VARIANTS:
                    continue
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=v,
                        ls="--" if v in SDPA_VARIANTS else "-")
            if kind == "speedup":
                ax.axhline(1.0, color="grey", lw=0.8)
                if model.startswith("qwen3-8b"):
                    pts = [(n, s) for n, (_, _, s) in paper.TABLE9.items() if n <= 131072]
                    ax.plot(*zip(*pts), "k^", label="paper PBS (H100, FA2)")
                if model.startswith("llama3.1-8b"):
                    ax.plot([131072], [paper.FIG4_PBS_128K], "k^", label="paper PBS ≈ (Fig. 4, H100, FA2)")
            else:
                ax.set_yscale("log")
            ax.set_xscale("log", base=2)
            if lengths:  # the measured lengths only (axhline's data are axes fractions, not lengths)
                ax.set_xticks(lengths, [_k(n) for n in lengths])
                ax.set_xlim(lengths[0] / 1.25, lengths[-1] * 1.25)
            ax.minorticks_off()
            ax.set_xlabel("prompt tokens")
            ax.set_ylabel("TTFT ms" if kind == "ttft" else "speedup over fastest SDPA")
            regime = mrows[0]["regime"] if mrows else ""
            ax.set_title(f"{model} ({regime})", fontsize=9)
            ax.legend(fontsize=6)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.text(0.005, 0.005, provenance_footer(rows), fontsize=6, ha="left", va="bottom", wrap=True)
        path = Path(f"{prefix}-{kind}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def write_report(csv_path: Path, plots: bool = True) -> list[Path]:
    """Rebuild ``<csv>.md`` (and the plots) from the CSV; returns the files written."""
    csv_path = Path(csv_path)
    rows = read_csv(csv_path)
    md = csv_path.with_suffix(".md")
    md.write_text(speed_markdown(rows))
    written = [md]
    if plots:
        written += speed_plots(rows, csv_path.with_suffix(""))
    return written


# ------------------------------------------------------------------------ Table 7 from the kernel benchmark's CSV


def table7_rows(kernel_rows: list[dict]) -> dict[int, tuple]:
    """Per N, in paper.TABLE7_COLUMNS order, from the kernel benchmark's rows (``benchmarks.report.read_csv``): the
    fastest dense SDPA and the ``pbs`` methods row (permutation, selection, attention, total, overhead, speedup)."""
    out = {}
    for n in sorted({r["seq_len"] for r in kernel_rows}):
        dense = [r["median_ms"] for r in kernel_rows if r["section"] == "dense" and r["seq_len"] == n
                 and r["variant"].startswith("sdpa_") and finite(r["median_ms"]) and not r["error"]]
        p = next((r for r in kernel_rows if r["section"] == "methods" and r["variant"] == "pbs" and r["seq_len"] == n
                  and finite(r["total_ms"])), None)
        if dense and p is not None:
            out[n] = (min(dense), p["permutation_ms"], p["selection_ms"], p["attention_ms"], p["total_ms"],
                      p["overhead_pct"], min(dense) / p["total_ms"], p["density"])
    return out


def table7_markdown(kernel_rows: list[dict], gpu: str, source: str) -> str:
    ours = table7_rows(kernel_rows)
    body = []
    for n in sorted(set(ours) | set(paper.TABLE7)):
        o, pp = ours.get(n), paper.TABLE7.get(n)
        body.append([_k(n), *([_f(x) for x in o[:5]] + [f"{_f(o[5])}%", f"{_f(o[6])}×", _f(o[7])] if o else ["—"] * 8),
                     *([*map(str, pp[:5]), f"{pp[5]}%", f"{pp[6]}×"] if pp else ["—"] * 7)])
    header = ["N", "dense ms", "permutation", "selection", "sparse attention", "total", "overhead", "speedup",
              "density", "paper dense (FA2)", "paper perm", "paper sel", "paper attn", "paper total",
              "paper overhead", "paper speedup"]
    return "\n".join([
        f"# Table 7 layout: PBS-Attn's kernel-level breakdown, ours ({gpu}) beside the paper's", "",
        (f"Ours: from `{source}` (one attention call, Llama-3.1-8B heads, bf16; dense = the fastest SDPA backend; "
        "PBS at its default threshold on the benchmark's structured synthetic inputs, so at its own density, "
        f"not the paper's; fused planner). Paper: Table 7 ({paper.HARDWARE}), key permutation. Overhead = "
        "(permutation + selection) / total. Times in ms."), "", *_table(header, body), ""])


def table7_plot(kernel_rows: list[dict], path: Path, gpu: str) -> Path:
    """Stacked bars per N: permutation, selection and sparse attention as fractions of the dense attention time
    (the bar's height is 1 / speedup), ours and the paper's side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = table7_rows(kernel_rows)
    lengths = sorted(set(ours) | {n for n in paper.TABLE7 if n <= max(ours, default=0)})
    fig, ax = plt.subplots(figsize=(1.0 + 1.1 * len(lengths), 4.0))
    colors = {"permutation": "#d95f02", "selection": "#7570b3", "sparse attention": "#1b9e77"}
    for i, n in enumerate(lengths):
        for offset, source, hatch in ((-0.2, ours.get(n), ""), (0.2, paper.TABLE7.get(n), "//")):
            if source is None:
                continue
            bottom = 0.0
            for (label, color), value in zip(colors.items(), source[1:4]):
                h = value / source[0]
                ax.bar(i + offset, h, width=0.38, bottom=bottom, color=color, hatch=hatch, edgecolor="white",
                       label=label if i == 0 and offset < 0 else None)
                bottom += h
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(lengths)), [_k(n) for n in lengths])
    ax.set_ylabel("time / dense attention time")
    ax.set_title(f"PBS breakdown: {gpu} (plain, left) vs paper H100 (hatched, right)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
