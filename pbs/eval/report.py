"""Tables from the results index: one row per method run, mean score, density and prefill time."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path


def method_table(results_dir: str | Path, run_ids: set[str] | None = None) -> list[dict]:
    """Rows (method, kwargs, mean score over tasks, per-task scores, density, prefill ms, status) per run."""
    index = Path(results_dir) / "index.csv"
    runs: dict[str, dict] = {}
    scores: dict[str, dict] = defaultdict(dict)
    with index.open() as f:
        for r in csv.DictReader(f):
            if run_ids is not None and r["run_id"] not in run_ids:
                continue
            runs.setdefault(r["run_id"], r)
            if r["task"] and r["score"] not in ("", None):
                scores[r["run_id"]][r["task"]] = float(r["score"])
    out = []
    for rid, r in runs.items():
        task_scores = scores.get(rid, {})
        out.append(dict(
            run_id=rid, method=r["method"], kwargs=json.loads(r["method_kwargs"] or "{}"), status=r["status"],
            score=sum(task_scores.values()) / len(task_scores) if task_scores else float("nan"),
            tasks=task_scores, density=float(r["density"]) if r["density"] else float("nan"),
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


def format_table(rows: list[dict]) -> str:
    """Plain-text table; ``kwargs`` shows only the settings that differ from the method's defaults."""
    lines = [f"{'method':<12} {'non-default kwargs':<38} {'score':>7} {'density':>8} {'prefill_ms':>10}  status"]
    for r in rows:
        kw = ",".join(f"{k}={v}" for k, v in sorted(_non_default(r["method"], r["kwargs"]).items()))[:38]
        lines.append(f"{r['method'] or '?':<12} {kw:<38} {r['score']:7.2f} {r['density']:8.3f} "
                     f"{r['prefill_ms']:10.2f}  {r['status']}{'  ' + r['error'].splitlines()[0] if r['error'] else ''}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(format_table(method_table(sys.argv[1] if len(sys.argv) > 1 else "results")))
