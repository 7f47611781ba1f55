"""Accuracy and density of every method on the proxy model, from the runs of scripts/run_proxy_eval.py.

    python scripts/proxy_report.py [--runs results/proxy/eval] [--out results/proxy] [--sweep-lengths 16384,32768]

Reads every finished run's config.json + generations.jsonl (one line per sample: task, prompt length, RULER
score, density over layers and heads) and writes:

- ``<out>/scores.csv``: one row per (method setting, length, task): samples, score (0-100), mean density;
- ``<out>/table.md``: the paper-settings table: score per task and mean, density, per length;
- ``<out>/curves.csv`` + ``<out>/accuracy_vs_density.png``: mean score (± standard error over samples) vs density
  at each sweep length, one curve per method family (threshold / gamma / budget sweeps plus the paper-setting point);
  ``<out>/ablations.png``: PBS's curve beside the ablations' (one PBS setting changed: permute key+query, segment
  size, block size, one permutation per KV head), when such runs exist;
- ``<out>/density_table.md``: the paper's Table 5 layout: PBS's density at τ 0.9 with and without the key
  permutation per length (absolute and relative reduction), the oracle's at the same τ, the scores beside them;
- ``<out>/permutation_front.md``: at each sweep length, every PBS threshold point with and without the key
  permutation against PBS without it at τ 0.9 on the same prompts (paired score change and density saved ± SE):
  whether the permutation reaches equal accuracy at lower density;
- ``<out>/ablations.md`` and ``ablations.csv``: at each sweep length, every ablation point against the paper's PBS
  on the same prompts, at the same τ (paired score change and density change ± SE) and at the same density (paired
  against the paper's front interpolated prompt by prompt).

The first sweep length's files are named as above; another length's carry it (``ablations-32k.md``,
``accuracy_vs_density-32k.png``); curves.csv holds every length.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the paper's settings; for pbs every permutation mode at the paper's tau (key is the paper's PBS-Attn)
PAPER = {"pbs": {"threshold": 0.9}, "meanpool": {"threshold": 0.9},
         "xattention": {"threshold": 0.9}, "oracle": {"threshold": 0.9}, "flexprefill": {"gamma": 0.95},
         "minference": {"vertical_size": 1000, "slash_size": 6096}}
SWEPT = {"pbs": "threshold", "meanpool": "threshold", "xattention": "threshold", "oracle": "threshold",
         "flexprefill": "gamma", "minference": "vertical_size"}
TASK_ORDER = ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey", "niah_multivalue",
              "niah_multiquery", "vt", "kv_retrieval"]


# PBS's settings that the ablations change (the paper's values); permute "key+query" is an ablation too
PBS_DEFAULTS = {"block_size": 128, "segment_size": 256, "share_permutation": "q_head"}
_ABLATION_LABELS = {"block_size": "B={}", "segment_size": "S={}", "share_permutation": "one perm. per {}"}


def family(method: str, kw: dict) -> str:
    if method == "pbs":
        changed = [_ABLATION_LABELS[k].format(kw[k]) for k, v in PBS_DEFAULTS.items() if kw.get(k, v) != v]
        return f"pbs ({', '.join([kw.get('permute', 'key') + ' perm.', *changed])})"
    return method


def is_ablation(method: str, kw: dict) -> bool:
    return method == "pbs" and (kw.get("permute") == "key+query"
                                or any(kw.get(k, v) != v for k, v in PBS_DEFAULTS.items()))


def setting(method: str, kw: dict) -> str:
    if method == "full":
        return "dense"
    if method == "minference":
        return f"v={kw.get('vertical_size')},s={kw.get('slash_size')}"
    key = SWEPT.get(method)
    return f"{key}={kw.get(key)}" if key else ""


def is_paper(method: str, kw: dict) -> bool:
    if method == "full":
        return True
    if method not in PAPER:
        raise ValueError(f"method={method!r} has no paper setting in PAPER")
    return not is_ablation(method, kw) and all(kw.get(k) == v for k, v in PAPER[method].items())


def load_rows(runs: Path, run_ids: set[str] | None = None) -> list[dict]:
    """One row per (run, length bucket, task) with n, score (0-100) and mean density (``run_ids``: only these)."""
    out = []
    for d in sorted(runs.glob("runs/*")):
        if run_ids is not None and d.name not in run_ids:
            continue
        status = d / "status.json"
        gens = d / "generations.jsonl"
        state = json.loads(status.read_text()) if status.exists() else {}
        if state.get("status") != "ok" or not gens.exists():
            continue
        prov = state.get("provenance") or {}
        cfg = json.loads((d / "config.json").read_text())
        method, kw = cfg["method_name"], cfg.get("method", {})
        lengths = [int(n) for n in cfg["task"]["lengths"]]
        acc: dict[tuple, list] = defaultdict(list)
        for line in gens.read_text().splitlines():
            g = json.loads(line)
            bucket = min(lengths, key=lambda n: abs(n - int(g["length"])))
            acc[(bucket, g["task"].removeprefix("pbs_ruler_"))].append(g)
        for (length, task), gs in sorted(acc.items()):
            dens = [g["density"] for g in gs if g.get("density") is not None]
            out.append({
                "run_id": d.name, "model": cfg.get("model", {}).get("name", ""), "method": method,
                "family": family(method, kw), "setting": setting(method, kw),
                "paper_setting": is_paper(method, kw), "ablation": is_ablation(method, kw),
                "samples_per_task": int(cfg["task"]["samples"]),
                "length": length, "task": task, "n": len(gs),
                "score": round(100 * sum(float(g["score"]) for g in gs) / len(gs), 2),
                "density": round(sum(dens) / len(dens), 4) if dens else 1.0,
                "_sample_scores": [100 * float(g["score"]) for g in gs],
                # a prompt's identity: the sample set (lengths, samples per task) and its place in it
                "_samples": {(tuple(lengths), int(cfg["task"]["samples"]), task, g.get("doc_id", i)):
                             (100 * float(g["score"]), g.get("density")) for i, g in enumerate(gs)},
                "_provenance": prov,
            })
    return out


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def _se(xs) -> float:
    """Standard error of the mean of ``xs`` (sample standard deviation / sqrt(n)); 0 for fewer than 2."""
    xs = list(xs)
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) ** 0.5


def paired_difference(a: dict, b: dict) -> tuple[float, float, int]:
    """``(mean, standard error, n)`` of ``a[s] - b[s]`` over the keys ``s`` both hold (the same prompts run
    twice): the spread of the differences, not of each side, so prompt difficulty cancels."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b), key=str)]
    return _mean(diffs), _se(diffs), len(diffs)


def _paired_effect(row: dict, ref: dict) -> tuple[tuple, tuple]:
    """Paired (score change = row − ref, density saved = ref − row in points) over the prompts both ``_samples``
    maps hold: each a ``paired_difference`` result."""
    change = paired_difference({s: v[0] for s, v in row.items()}, {s: v[0] for s, v in ref.items()})
    saved = paired_difference({s: 100 * v[1] for s, v in ref.items() if v[1] is not None},
                              {s: 100 * v[1] for s, v in row.items() if v[1] is not None})
    return change, saved


def table_md(rows: list[dict], title: str) -> str:
    paper = [r for r in rows if r["paper_setting"]]
    per_task = max(r["samples_per_task"] for r in paper)  # the table's sample set (sweeps may use a smaller one)
    paper = [r for r in paper if r["samples_per_task"] == per_task]
    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in paper)]
    lines = [title, ""]
    for length in sorted({r["length"] for r in paper}):
        sub = [r for r in paper if r["length"] == length]
        fams = sorted({r["family"] for r in sub}, key=lambda f: (f != "full", f))
        lines += [f"### {length:,} tokens", "",
                  "| method | " + " | ".join(tasks) + " | mean | density |",
                  "|---" * (len(tasks) + 3) + "|"]
        for f in fams:
            by = {r["task"]: r for r in sub if r["family"] == f}
            cells = [f"{by[t]['score']:.0f}" if t in by else "" for t in tasks]
            scores = [x for r in by.values() for x in r["_sample_scores"]]
            lines.append(f"| {f} | " + " | ".join(cells) + f" | {_mean(r['score'] for r in by.values()):.1f} "
                         f"± {_se(scores):.1f} | {_mean(r['density'] for r in by.values()):.3f} |")
        n = sorted({r["n"] for r in sub})
        note = (f"Samples per task: {', '.join(map(str, n))}. Score: RULER string_match_all x 100 (mean ± its standard "
                "error over the samples); density: computed blocks / causal blocks, mean over layers, heads and "
                "samples.")
        lines += ["", note, ""]
    return "\n".join(lines)


def density_table_md(rows: list[dict], title: str) -> str:
    """Table 5's layout at τ 0.9 per length: PBS's density without / with the key permutation, the absolute and
    relative reduction, the oracle's; mean scores beside them (the table runs' paper settings); and the paired
    differences (same prompts) with their standard errors: density saved and score changed by the permutation."""
    pick = {"none": "pbs (none perm.)", "key": "pbs (key perm.)", "oracle": "oracle"}
    paper = [r for r in rows if r["paper_setting"]]
    if not any(r["family"] in pick.values() for r in paper):
        return ""
    per_task = max(r["samples_per_task"] for r in paper)
    header = ("| N | density without perm. (score) | with key perm. (score) | abs. Δ | rel. reduction | "
              "density saved, paired ± SE | score change, paired ± SE | oracle density (score) |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|---|"]
    for length in sorted({r["length"] for r in paper}):
        got, samples = {}, {}
        for name, fam in pick.items():
            rs = [r for r in paper if r["family"] == fam and r["length"] == length
                  and r["samples_per_task"] == per_task]
            if rs:
                got[name] = (_mean(r["density"] for r in rs), _mean(r["score"] for r in rs))
                samples[name] = {k: v for r in rs for k, v in r["_samples"].items()}
        if "none" not in got or "key" not in got:
            continue
        (dn, sn), (dk, sk) = got["none"], got["key"]
        oracle = f"{got['oracle'][0]:.3f} ({got['oracle'][1]:.1f})" if "oracle" in got else "—"
        change, saved = _paired_effect(samples["key"], samples["none"])
        lines.append(f"| {length:,} | {dn:.3f} ({sn:.1f}) | {dk:.3f} ({sk:.1f}) | {100 * (dn - dk):+.1f} pt | "
                     f"{100 * (dn - dk) / dn:+.1f}% | {saved[0]:+.1f} ± {saved[1]:.1f} pt | "
                     f"{change[0]:+.1f} ± {change[1]:.1f} | {oracle} |")
    lines += ["", (f"Density: computed / causal blocks at τ 0.9 (B 128, S 256), mean over layers, heads and samples "
                  f"({per_task} per task); a positive Δ means the permutation selects fewer blocks. Score: the mean "
                  "RULER score (0-100) over the tasks. Paired: the same prompts with and without the permutation, "
                  "mean of the per-prompt differences ± their standard error (density saved = without − with, in "
                  "points of density; score change = with − without). The paper (Llama-3.1-8B, Table 5): 7.0 / 5.5 / "
                  "5.5 / 4.1 / 3.7 pt at 8K-128K."), ""]
    return "\n".join(lines)


def curves(rows: list[dict], length: int) -> list[dict]:
    pts: dict[tuple, list] = defaultdict(list)
    for r in rows:
        if r["length"] == length:
            pts[(r["family"], r["setting"], r["paper_setting"], r["ablation"], r["samples_per_task"])].append(r)
    out = []
    for (fam, sett, paper, ablation, per_task), rs in sorted(pts.items()):
        xs = [x for r in rs for x in r["_sample_scores"]]  # equal samples per task: the mean over tasks
        out.append({"family": fam, "setting": sett, "paper_setting": paper, "ablation": ablation,
                    "samples_per_task": per_task, "length": length,
                    "tasks": len(rs), "n": len(xs), "score": round(_mean(xs), 2),
                    "score_se": round(_se(xs), 2), "density": round(_mean(r["density"] for r in rs), 4)})
    return out


def _threshold_points(rows: list[dict], length: int, keep) -> dict[tuple[str, float], dict]:
    """(family, τ) -> the ``_samples`` of PBS's threshold runs at ``length`` whose rows ``keep`` accepts."""
    pts: dict[tuple, dict] = defaultdict(dict)
    for r in rows:
        if r["length"] == length and r["method"] == "pbs" and r["setting"].startswith("threshold=") and keep(r):
            pts[(r["family"], float(r["setting"].removeprefix("threshold=")))].update(r["_samples"])
    return pts


def _point_cells(fam: str, tau: float, samples: dict) -> str:
    """A threshold point's first table cells: its family without "pbs (…)", τ, score ± SE, density."""
    scores = [v[0] for v in samples.values()]
    return _cells(_short(fam), tau, _mean(scores), _se(scores), _density(samples))


def _short(fam: str) -> str:
    return fam.removeprefix("pbs (").removesuffix(")")


def _cells(label: str, tau: float, score: float, score_se: float, density: float) -> str:
    return f"| {label} | {tau:g} | {score:.1f} ± {score_se:.1f} | {density:.3f}"


def permutation_front_md(rows: list[dict], length: int, title: str) -> str:
    """PBS's threshold points with and without the key permutation at ``length``, each against PBS without
    permutation at τ 0.9 on the same prompts: paired score change and density saved, ± their standard errors."""
    fams = ("pbs (key perm.)", "pbs (none perm.)")
    pts = _threshold_points(rows, length, lambda r: r["family"] in fams)
    ref = pts.get(("pbs (none perm.)", 0.9))
    if not ref or not any(f == fams[0] for f, _ in pts):
        return ""
    header = ("| PBS | τ | score ± SE | density | score change vs none τ 0.9, paired ± SE | "
              "density saved vs none τ 0.9, paired ± SE | score change vs none at the same τ, paired ± SE |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|"]
    for (fam, tau), samples in sorted(pts.items(), key=lambda kv: (kv[0][0] != fams[0], kv[0][1])):
        change, saved = _paired_effect(samples, ref)
        paired = (f"{change[0]:+.1f} ± {change[1]:.1f} | {saved[0]:+.1f} ± {saved[1]:.1f} pt" if change[2]
                  else "— (other prompts) | —")
        same_tau = pts.get((fams[1], tau)) if fam == fams[0] else None
        fixed = _paired_effect(samples, same_tau)[0] if same_tau else (0.0, 0.0, 0)
        fixed_cell = f"{fixed[0]:+.1f} ± {fixed[1]:.1f}" if fixed[2] else "—"
        lines.append(f"{_point_cells(fam, tau, samples)} | {paired} | {fixed_cell} |")
    lines += ["", (f"{length:,} tokens, B 128, S 256; {len(ref)} prompts in the reference. Paired: per-prompt "
                   "differences against PBS without permutation at τ 0.9 (score change = row − reference; density "
                   "saved = reference − row, in points of density), mean ± standard error over the prompts both ran "
                   "(— where a row ran other prompts). A key-permutation row whose score change is within about one "
                   "standard error of 0 and whose density saved is positive reaches the reference's accuracy with "
                   "fewer blocks. The last column pairs a key-permutation row with PBS without permutation at its own "
                   "τ (— where that did not run on the same prompts)."), ""]
    return "\n".join(lines)


def _density(samples: dict) -> float:
    """Mean density of a threshold point's ``_samples`` (NaN where none was recorded)."""
    return _mean(v[1] for v in samples.values() if v[1] is not None)


def front_at(front: list[dict], density: float) -> dict | None:
    """Per-prompt scores of the front through the threshold points ``front`` (``_samples`` maps) at ``density``:
    linear between the two points whose mean densities enclose it, prompt by prompt (so a point can be paired with
    it); None outside their range or where a density is NaN."""
    pts = sorted(((d, f) for d, f in ((_density(f), f) for f in front) if not math.isnan(d)), key=lambda t: t[0])
    for (d0, f0), (d1, f1) in pairwise(pts):
        if d0 <= density <= d1:
            w = (density - d0) / (d1 - d0) if d1 > d0 else 0.0
            return {s: (1 - w) * f0[s][0] + w * f1[s][0] for s in f0.keys() & f1.keys()}
    if len(pts) == 1 and pts[0][0] == density:
        return {s: v[0] for s, v in pts[0][1].items()}
    return None


def ablation_comparisons(rows: list[dict], length: int) -> list[dict]:
    """Each PBS ablation point at ``length`` (one dict: ablation, τ, n, score ± SE, density) paired on the same
    prompts with the paper's PBS (key permutation, B 128, S 256) at the same τ (``score_change``, ``density_change``
    in points, each ``*_se``) and with the paper's front at the point's density (``vs_front``: per-prompt scores
    interpolated between the two τ points whose densities enclose it); None where it cannot be paired, and
    ``vs_front_note`` says why."""
    pts = _threshold_points(rows, length, lambda r: r["ablation"] or r["family"] == "pbs (key perm.)")
    paper_front = [v for (fam, _), v in pts.items() if fam == "pbs (key perm.)"]
    out = []
    for fam, tau in sorted(k for k in pts if k[0] != "pbs (key perm.)"):
        samples = pts[(fam, tau)]
        scores = [v[0] for v in samples.values()]
        ref = pts.get(("pbs (key perm.)", tau))
        change, saved = _paired_effect(samples, ref) if ref else ((None, None, 0), (None, None, 0))
        at = front_at(paper_front, _density(samples))
        vs_front = paired_difference({s: v[0] for s, v in samples.items()}, at) if at else (None, None, 0)
        out.append({"ablation": _short(fam), "threshold": tau, "length": length,
                    "n": len(samples), "score": _mean(scores), "score_se": _se(scores), "density": _density(samples),
                    "score_change": change[0] if change[2] else None, "score_change_se": change[1] if change[2] else None,
                    "density_change": -saved[0] if saved[2] else None, "density_change_se": saved[1] if saved[2] else None,
                    "vs_front": vs_front[0] if vs_front[2] else None, "vs_front_se": vs_front[1] if vs_front[2] else None,
                    "vs_front_note": "" if vs_front[2] else "outside its τ range" if at is None else "other prompts"})
    return out


def ablations_md(comparisons: list[dict], title: str, csv_name: str = "ablations.csv") -> str:
    """``ablation_comparisons`` as a markdown table with its reading (``csv_name``: the same numbers as CSV)."""
    if not comparisons:
        return ""
    header = ("| ablation | τ | score ± SE | density | score change, paired ± SE | density change, paired ± SE | "
              "score vs the paper's front at this density, paired ± SE |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        paired = (f"{c['score_change']:+.1f} ± {c['score_change_se']:.1f} | "
                  f"{c['density_change']:+.1f} ± {c['density_change_se']:.1f} pt" if c["score_change"] is not None
                  else "— | —")
        front = (f"{c['vs_front']:+.1f} ± {c['vs_front_se']:.1f}" if c["vs_front"] is not None
                 else f"— ({c['vs_front_note']})")
        lines.append(f"{_cells(c['ablation'], c['threshold'], c['score'], c['score_se'], c['density'])} | {paired} | "
                     f"{front} |")
    lines += ["", (f"{comparisons[0]['length']:,} tokens. Paired: per-prompt differences against PBS at the paper's "
                   "setting (key permutation per query head, B 128, S 256) at the same τ, mean ± standard error over "
                   "the prompts both ran (score change and density change = ablation − paper's setting; — where the "
                   "paper's setting did not run at that τ on the same prompts). Last column: the ablation's score − "
                   "the paper's setting's front at the ablation's density (each prompt's score interpolated linearly "
                   "between the two τ points of the paper's setting whose densities enclose it), mean ± standard "
                   "error over the prompts; — where the density lies outside the paper's τ points or they ran other "
                   f"prompts. Negative: below the paper's front. The same numbers: `{csv_name}`."), ""]
    return "\n".join(lines)


def provenance_footer(rows: list[dict]) -> str:
    """The runs' GPUs, versions, dates and commits, and the command that ran them (one line for the figure)."""
    provs = [r["_provenance"] for r in rows if r["_provenance"]]
    if not provs:
        return "provenance: not recorded in the runs' status.json"

    def values(key, short=False):
        return ", ".join(sorted({str(p.get(key, "?"))[:7] if short else str(p.get(key, "?")) for p in provs}))

    dates = sorted(p.get("date_utc", "?")[:10] for p in provs)
    return (f"{values('gpu')}; torch {values('torch')}, triton {values('triton')}, transformers "
            f"{values('transformers')}; {dates[0]} to {dates[-1]}; commit {values('git_commit', short=True)}; "
            f"python scripts/run_proxy_eval.py (one python -m experiments.eval run per point; commands in each "
            f"run's status.json)")


def plot(points: list[dict], path: Path, title: str, footer: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = plt.get_cmap("tab10").colors
    for i, fam in enumerate(sorted({p["family"] for p in points})):
        ps = sorted((p for p in points if p["family"] == fam), key=lambda p: p["density"])
        style = "*" if fam == "full" else "o-"
        ax.errorbar([p["density"] for p in ps], [p["score"] for p in ps], yerr=[p["score_se"] for p in ps],
                    fmt=style, color=colors[i % len(colors)], label=fam, markersize=9 if fam == "full" else 5,
                    capsize=2, lw=1)
        for p in ps:
            if fam == "full":
                ax.annotate(f"{p['samples_per_task']}/task", (p["density"], p["score"]), fontsize=7,
                            textcoords="offset points", xytext=(-30, 6))
            elif p["paper_setting"]:
                ax.plot(p["density"], p["score"], "s", color="k", mfc="none", markersize=9)
    ax.set_xlabel("density (computed / causal blocks)")
    ax.set_ylabel("mean RULER score (8 tasks), ± 1 s.e.")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.plot([], [], "s", color="k", mfc="none", label="paper's setting")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout(rect=(0, 0.06 if footer else 0, 1, 1))
    if footer:
        fig.text(0.005, 0.005, footer, fontsize=6, ha="left", va="bottom", wrap=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _write_sweep_reports(rows: list[dict], out: Path, model: str, length: int, suffix: str) -> list[dict]:
    """The permutation front, the ablations and the plots at one sweep ``length``, files named with ``suffix``;
    returns the curve points (rows of curves.csv)."""
    front = permutation_front_md(rows, length, f"## {model}: PBS with and without key permutation at "
                                 f"equal accuracy ({length:,} tokens)")
    if front:
        (out / f"permutation_front{suffix}.md").write_text(front)
    comparisons = ablation_comparisons(rows, length)
    if comparisons:
        write_csv(out / f"ablations{suffix}.csv", [{k: round(v, 4 if k == "density" else 2)
                                                    if isinstance(v, float) else v for k, v in c.items()}
                                                   for c in comparisons])
        (out / f"ablations{suffix}.md").write_text(ablations_md(comparisons, f"## {model}: PBS ablations against "
                                                                f"the paper's setting ({length:,} tokens)",
                                                                f"ablations{suffix}.csv"))
    pts = curves(rows, length)
    if pts:
        footer = provenance_footer([r for r in rows if r["length"] == length])
        plot([p for p in pts if not p["ablation"]], out / f"accuracy_vs_density{suffix}.png",
             f"{model}, RULER suite at {length:,} tokens", footer)
        ablations = [p for p in pts if p["ablation"] or p["family"] == "pbs (key perm.)"]
        if any(p["ablation"] for p in ablations):
            plot(ablations, out / f"ablations{suffix}.png", f"{model}: PBS ablations at {length:,} tokens", footer)
    return pts


def main(argv: list[str] | None = None, run_ids: set[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=str(ROOT / "results" / "proxy" / "eval"))
    p.add_argument("--out", default=str(ROOT / "results" / "proxy"))
    p.add_argument("--sweep-lengths", default="16384",
                   help="comma separated; the fronts, permutation front and ablations per length (the first one's "
                        "files unsuffixed, the others' named by length, e.g. ablations-32k.md, ablations-5000.md)")
    a = p.parse_args(argv)
    rows = load_rows(Path(a.runs), run_ids)
    if not rows:
        raise SystemExit(f"no finished runs under {a.runs}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "scores.csv", [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    (out / "table.md").write_text(table_md(rows, "## Proxy model: RULER score per task at the paper's settings") + "\n")
    model = ", ".join(sorted({r["model"] for r in rows}))
    density = density_table_md(rows, f"## {model}: PBS density with and without permutation (Table 5's layout)")
    if density:
        (out / "density_table.md").write_text(density)
    lengths = [int(n) for n in a.sweep_lengths.split(",")]
    all_pts = []
    for i, length in enumerate(lengths):
        suffix = "" if i == 0 else f"-{length // 1024}k" if length % 1024 == 0 else f"-{length}"
        all_pts += _write_sweep_reports(rows, out, model, length, suffix)
    if all_pts:
        write_csv(out / "curves.csv", all_pts)
    print(f"wrote {out / 'scores.csv'}, {out / 'table.md'}" + (f", {out / 'curves.csv'}, plots" if all_pts else ""))


if __name__ == "__main__":
    main()
