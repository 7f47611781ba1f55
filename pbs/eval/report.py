"""Tables from the results index: one row per method run, each benchmark aggregated as its source does.

- LongBench v1: Table 1's "Avg", the mean of the six category means
  (:func:`pbs.eval.longbench.scoring.summarize`), from the index's ``benchmark`` rows (recomputed from the task rows
  for an index written before they existed);
- LongBench v2: the accuracy of each ``pbs_longbench_v2*`` protocol, never mixed with anything else;
- any other task (the RULER-style suite, lm-eval tasks): the plain mean of their scores.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from .longbench.scoring import DATASETS, summarize

_V1_PREFIX = "pbs_longbench_"
_V2_PREFIX = "pbs_longbench_v2"


def _is_v1_task(task: str) -> bool:
    return task.startswith(_V1_PREFIX) and task[len(_V1_PREFIX):] in DATASETS


def run_scores(rows: list[dict]) -> dict[str, float]:
    """One run's headline scores from its index rows: ``longbench`` (the official average of the v1 tasks, without
    LongBench-E), one entry per v2 task, ``other`` (mean of the remaining task scores). Missing ones are absent."""
    tasks = {r["task"]: float(r["score"]) for r in rows
             if r["task"] and r["score"] not in ("", None) and r.get("level") in (None, "", "task")}
    out: dict[str, float] = {}
    bench = [r for r in rows if r.get("level") == "benchmark" and r["metric"] == "average" and r["score"]]
    v1 = {t[len(_V1_PREFIX):]: s for t, s in tasks.items() if _is_v1_task(t)}
    if bench:
        out["longbench"] = float(bench[0]["score"])
    elif v1:
        out["longbench"] = summarize(v1)["average"]
    for task in sorted(t for t in tasks if t.startswith(_V2_PREFIX)):
        out[task] = tasks[task]
    other = [s for t, s in tasks.items() if not _is_v1_task(t) and not t.startswith(_V2_PREFIX)
             and not t.startswith(_V1_PREFIX)]
    if other:
        out["other"] = sum(other) / len(other)
    return out


def method_table(results_dir: str | Path, run_ids: set[str] | None = None) -> list[dict]:
    """Rows (method, kwargs, headline scores, per-task scores, density, prefill ms, status) per run."""
    index = Path(results_dir) / "index.csv"
    runs: dict[str, dict] = {}
    by_run: dict[str, list[dict]] = defaultdict(list)
    with index.open() as f:
        for r in csv.DictReader(f):
            if run_ids is not None and r["run_id"] not in run_ids:
                continue
            runs.setdefault(r["run_id"], r)
            by_run[r["run_id"]].append(r)
    out = []
    for rid, r in runs.items():
        rows = by_run[rid]
        out.append(dict(
            run_id=rid, method=r["method"], kwargs=json.loads(r["method_kwargs"] or "{}"), status=r["status"],
            scores=run_scores(rows),
            tasks={x["task"]: float(x["score"]) for x in rows if x["task"] and x["score"] not in ("", None)
                   and x.get("level") in (None, "", "task")},
            density=float(r["density"]) if r["density"] else float("nan"),
            prefill_ms=float(r["prefill_ms"]) if r["prefill_ms"] else float("nan"), error=r["error"],
        ))
    return sorted(out, key=lambda row: (row["method"] or "", json.dumps(row["kwargs"], sort_keys=True)))


def _non_default(method: str | None, kwargs: dict) -> dict:
    """The kwargs that differ from the method's config dataclass defaults (all of them if the method is unknown)."""
    import dataclasses

    from ..methods import get_method

    try:
        cls = get_method(method).config_cls
    except (ValueError, TypeError):
        return kwargs
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {k: v for k, v in kwargs.items() if k not in defaults or defaults[k] != v}


def _column_title(key: str) -> str:
    if key == "longbench":
        return "LongBench"
    if key.startswith(_V2_PREFIX):
        return "v2" + key[len(_V2_PREFIX):]
    return "score"


def format_table(rows: list[dict]) -> str:
    """Plain-text table; ``kwargs`` shows only the settings that differ from the method's defaults; one score column
    per benchmark present (LongBench = the mean of the category means, v2* = accuracy, score = mean of other tasks)."""
    order = ["longbench"] + sorted({k for r in rows for k in r["scores"] if k.startswith(_V2_PREFIX)}) + ["other"]
    keys = [k for k in order if any(k in r["scores"] for r in rows)]
    head = "".join(f" {_column_title(k):>16}" for k in keys)
    lines = [f"{'method':<12} {'non-default kwargs':<38}{head} {'density':>8} {'prefill_ms':>10}  status"]
    for r in rows:
        kw = ",".join(f"{k}={v}" for k, v in sorted(_non_default(r["method"], r["kwargs"]).items()))[:38]
        cells = "".join(f" {r['scores'].get(k, math.nan):16.2f}" for k in keys)
        lines.append(f"{r['method'] or '?':<12} {kw:<38}{cells} {r['density']:8.3f} "
                     f"{r['prefill_ms']:10.2f}  {r['status']}{'  ' + r['error'].splitlines()[0] if r['error'] else ''}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(format_table(method_table(sys.argv[1] if len(sys.argv) > 1 else "results")))
