"""Tables from the results index: per run, each benchmark scored as its source does, per length where there are
lengths.

    python -m pbs.eval.report [RESULTS_DIR] [--runs ID,ID] [--all]

One row per run and benchmark: LongBench v1 (``task`` longbench; the score is Table 1's "Avg", the mean of the six
category means, :func:`pbs.eval.longbench.scoring.summarize`), each LongBench v2 protocol (accuracy, %), and the
other tasks -- the RULER-style suite, any lm-eval task -- as the mean of their task scores (0-100), one row per
length evaluated (plus ``all``, their mean over tasks, when there are several). ``n`` is the samples behind a score.
Without ``--all``, only the latest run of each (model, method, settings, task) is shown (older code versions or
retries of the same config stay in the store).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
from collections import defaultdict
from pathlib import Path

from .longbench.scoring import DATASETS, summarize

_V1_PREFIX = "pbs_longbench_"
_V2_PREFIX = "pbs_longbench_v2"
CPU_NOTE = ("prefill_ms on a CPU is the PyTorch reference's wall time, not a speed figure "
            "(speed: python -m experiments.bench_kernels on a GPU)")


def _is_v1_task(task: str) -> bool:
    return task.startswith(_V1_PREFIX) and task[len(_V1_PREFIX):] in DATASETS


def _num(value) -> float | None:
    if value in ("", None):
        return None
    x = float(value)
    return None if math.isnan(x) else x


def _int(value) -> int | None:
    x = _num(value)
    return None if x is None else int(x)


def run_scores(rows: list[dict]) -> dict[str, float]:
    """One run's headline scores from its index rows: ``longbench`` (the official average of the v1 tasks, without
    LongBench-E), one entry per v2 task, ``other`` (mean of the remaining task scores). Missing ones are absent."""
    tasks = {r["task"]: float(r["score"]) for r in rows
             if r["task"] and _num(r["score"]) is not None and r.get("level") in (None, "", "task")}
    out: dict[str, float] = {}
    bench = [r for r in rows if r.get("level") == "benchmark" and r["metric"] == "average" and _num(r["score"])]
    v1 = {t[len(_V1_PREFIX):]: s for t, s in tasks.items() if _is_v1_task(t)}
    if bench:
        out["longbench"] = float(bench[0]["score"])
    elif v1:
        out["longbench"] = summarize(v1)["average"]
    for task in sorted(t for t in tasks if t.startswith(_V2_PREFIX)):
        out[task] = tasks[task]
    other = [s for t, s in tasks.items() if not t.startswith(_V1_PREFIX)]
    if other:
        out["other"] = sum(other) / len(other)
    return out


def _benchmark_rows(rows: list[dict]) -> list[dict]:
    """(task, length, n, score) rows of one run (see the module docstring)."""
    scores = run_scores(rows)
    task_rows = [r for r in rows if r.get("level") in (None, "", "task") and r["task"]]
    n_of = {r["task"]: _int(r.get("n_samples")) for r in task_rows}
    out = []
    if "longbench" in scores:
        n = sum(n or 0 for t, n in n_of.items() if _is_v1_task(t)) or None
        out.append(dict(task="longbench", length="", n=n, score=scores["longbench"]))
    for key in sorted(k for k in scores if k.startswith(_V2_PREFIX)):
        out.append(dict(task=key.removeprefix("pbs_"), length="", n=n_of.get(key), score=scores[key]))
    if "other" in scores:
        name = rows[0].get("task_name") or "other"
        lengths = [r for r in rows if r.get("level") == "aggregate" and r.get("length") not in ("", None)]
        for r in sorted(lengths, key=lambda r: int(r["length"])):
            out.append(dict(task=name, length=int(r["length"]), n=_int(r["n_samples"]), score=_num(r["score"])))
        if len(lengths) != 1:
            n = sum(n or 0 for t, n in n_of.items() if not t.startswith(_V1_PREFIX)) or None
            out.append(dict(task=name, length="all" if lengths else "", n=n, score=scores["other"]))
    return out or [dict(task=rows[0].get("task_name") or "", length="", n=None, score=None)]


def report_rows(results_dir: str | Path, run_ids: set[str] | None = None, latest_only: bool = True) -> list[dict]:
    """Rows (model, method, settings, task, length, n, score, density, prefill_ms, device, status, error, run_id,
    date_utc, git_commit) from ``<results_dir>/index.csv``."""
    from .results import RunStore

    with (Path(results_dir) / "index.csv").open() as f:
        index = list(csv.DictReader(f))
    store = RunStore(results_dir)
    for r in index:  # the index is a snapshot: a run it shows running may have been killed since
        if r["status"] == "running":
            r["status"] = store.state(r["run_id"]) or "running"
    return rows_from_index(index, run_ids, latest_only)


def rows_from_index(index: list[dict], run_ids: set[str] | None = None, latest_only: bool = True) -> list[dict]:
    """:func:`report_rows` from index rows (``csv.DictReader`` rows, or :meth:`RunStore.rows`)."""
    by_run: dict[str, list[dict]] = defaultdict(list)
    for r in index:
        if run_ids is None or r["run_id"] in run_ids:
            by_run[r["run_id"]].append(r)
    runs = list(by_run.items())
    if latest_only:
        latest: dict[tuple, tuple[str, list[dict]]] = {}
        for rid, rows in sorted(runs, key=lambda kv: kv[1][0].get("date_utc") or ""):
            r = rows[0]
            shape = tuple((b["task"], b["length"], b["n"]) for b in _benchmark_rows(rows))  # lengths, samples
            latest[(r.get("model"), r["method"], r["method_kwargs"], r.get("task_name"), shape)] = (rid, rows)
        runs = list(latest.values())
    out = []
    for rid, rows in runs:
        r = rows[0]
        kwargs = json.loads(r["method_kwargs"] or "{}")
        base = dict(run_id=rid, model=r.get("model") or "", method=r["method"] or "?",
                    settings=",".join(f"{k}={v}" for k, v in sorted(non_default_kwargs(r["method"], kwargs).items())),
                    kwargs=kwargs, density=_num(r["density"]), prefill_ms=_num(r["prefill_ms"]),
                    device=r.get("device") or "", status=r["status"], error=r.get("error") or "",
                    date_utc=r.get("date_utc") or "", git_commit=r.get("git_commit") or "")
        out += [dict(base, **b) for b in _benchmark_rows(rows)]
    return sorted(out, key=lambda x: (x["model"], x["task"], x["method"], x["settings"], str(x["length"]).zfill(8)))


def non_default_kwargs(method: str | None, kwargs: dict) -> dict:
    """The kwargs that differ from the method's config dataclass defaults (all of them if the method is unknown)."""
    from ..methods import get_method

    try:
        cls = get_method(method).config_cls
    except (ValueError, TypeError):
        return kwargs
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {k: v for k, v in kwargs.items() if k not in defaults or defaults[k] != v}


def _fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def format_table(rows: list[dict]) -> str:
    """Plain text; ``settings`` are the method's non-default kwargs. A failed run shows its one-line reason."""
    w = min(28, max([16] + [len(r["model"]) for r in rows]))  # model names up to 28 characters are never cut
    lines = [(f"{'model':<{w}} {'method':<11} {'settings':<36} {'task':<12} {'length':>6} {'n':>5} {'score':>7} "
             f"{'density':>8} {'prefill_ms':>10}  status")]
    for r in rows:
        cpu = "*" if r["device"].startswith("cpu") and r["prefill_ms"] is not None else " "
        error = f"  {r['error'][:100]}" if r["status"] not in ("ok", "running") and r["error"] else ""
        lines.append(f"{r['model'][:w]:<{w}} {r['method']:<11} {r['settings'][:36]:<36} {r['task'][:12]:<12} "
                     f"{r['length']!s:>6} {_fmt(r['n'], 'd'):>5} {_fmt(r['score'], '.2f'):>7} "
                     f"{_fmt(r['density'], '.3f'):>8} {_fmt(r['prefill_ms'], '.1f'):>9}{cpu}  {r['status']}{error}")
    if any(r["device"].startswith("cpu") and r["prefill_ms"] is not None for r in rows):
        lines.append(f"* {CPU_NOTE}")
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    """The same rows as a Markdown table (``results/tables/eval.md``), with the run ids."""
    out = ["| model | method | settings | task | length | n | score | density | prefill ms | run |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['method']} | {r['settings'] or '—'} | {r['task']} | {r['length'] or '—'} | "
                   f"{_fmt(r['n'], 'd')} | {_fmt(r['score'], '.2f')} | {_fmt(r['density'], '.3f')} | "
                   f"{_fmt(r['prefill_ms'], '.1f')} | {r['run_id']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The results of evaluation runs as a table.")
    ap.add_argument("results_dir", nargs="?", default="outputs/results")
    ap.add_argument("--runs", default=None, help="only these run ids (comma-separated)")
    ap.add_argument("--all", action="store_true", help="every run, not only the latest of each config")
    args = ap.parse_args(argv)
    index = Path(args.results_dir) / "index.csv"
    if not index.exists():
        print(f"no results in {args.results_dir} (no index.csv): run python -m experiments.eval first")
        return 1
    ids = set(args.runs.split(",")) if args.runs else None
    print(format_table(report_rows(args.results_dir, ids, latest_only=not args.all)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
