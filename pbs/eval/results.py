"""The results store: one folder per run, keyed by a hash of the resolved config, plus an index pandas reads.

    results/runs/<run_id>/config.json      the resolved config (method, model, task, ...)
    results/runs/<run_id>/status.json      {"status": "ok" | "failed", "error": ..., "provenance": ...}
    results/runs/<run_id>/metrics.json     per-task scores, density (mean, per layer, per head), prefill time
    results/runs/<run_id>/generations.jsonl
    results/index.csv                      one row per run × task, plus LongBench's category means and averages
                                           (rebuilt from the run folders)

Every file is written to a temporary name and renamed, so a killed sweep never leaves a half-written file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from pathlib import Path

INDEX_COLUMNS = ["run_id", "status", "model", "method", "method_kwargs", "level", "task", "metric", "score",
                 "density", "prefill_ms", "n_samples", "date_utc", "git_commit", "error"]

#: ``level`` of an index row: one lm-eval task, a LongBench category (``task`` = its group, e.g.
#: ``pbs_longbench_single``, ``metric`` = ``category_mean``), or the LongBench benchmark (``task`` =
#: ``pbs_longbench``; ``metric`` = ``average``, the mean of the category means -- Table 1's "Avg" -- or
#: ``dataset_mean``, the mean over the datasets)
LEVELS = ("task", "category", "benchmark")


def summary_rows(metrics: dict) -> list[dict]:
    """The category / benchmark rows of a run from ``metrics["longbench"]`` (see :data:`LEVELS`)."""
    from .longbench.scoring import CATEGORIES

    summary = metrics.get("longbench") or {}
    n = summary.get("n_datasets")
    rows = [dict(level="category", task=f"pbs_longbench_{cat}", metric="category_mean", score=summary[cat],
                 n_samples=None) for cat in CATEGORIES if cat in summary]
    rows += [dict(level="benchmark", task="pbs_longbench", metric=key, score=summary[key], n_samples=n)
             for key in ("average", "dataset_mean") if key in summary]
    return rows


def run_id(config: dict) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of the config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, rid: str) -> Path:
        return self.root / "runs" / rid

    def status(self, rid: str) -> str | None:
        path = self.run_dir(rid) / "status.json"
        return json.loads(path.read_text())["status"] if path.exists() else None

    def is_finished(self, rid: str) -> bool:
        return self.status(rid) == "ok"

    def save(self, rid: str, config: dict, status: str, provenance: dict, metrics: dict | None = None,
             generations: list[dict] | None = None, error: str | None = None) -> Path:
        d = self.run_dir(rid)
        write_json(d / "config.json", config)
        if metrics is not None:
            write_json(d / "metrics.json", metrics)
        if generations is not None:
            atomic_write(d / "generations.jsonl", "".join(json.dumps(g, default=str) + "\n" for g in generations))
        # status last: a run counts as finished only once everything else is on disk
        write_json(d / "status.json", {"status": status, "error": error, "provenance": provenance})
        self.rebuild_index()
        return d

    def rows(self) -> list[dict]:
        out = []
        for d in sorted((self.root / "runs").glob("*")):
            if not (d / "status.json").exists():
                continue
            status = json.loads((d / "status.json").read_text())
            config = json.loads((d / "config.json").read_text())
            metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else {}
            prov = status.get("provenance") or {}
            base = dict(run_id=d.name, status=status["status"], model=config.get("model", {}).get("name"),
                        method=config.get("method_name"), method_kwargs=json.dumps(config.get("method", {}),
                                                                                  sort_keys=True),
                        density=metrics.get("density", {}).get("mean"),
                        prefill_ms=metrics.get("prefill_ms", {}).get("mean"), date_utc=prov.get("date_utc"),
                        git_commit=prov.get("git_commit"), error=status.get("error"))
            scores = metrics.get("scores", {})
            if not scores:
                out.append(dict(base, level=None, task=None, metric=None, score=None, n_samples=None))
            for task, entry in scores.items():
                out.append(dict(base, level="task", task=task, metric=entry.get("metric"), score=entry.get("score"),
                                n_samples=entry.get("n_samples")))
            out += [dict(base, **row) for row in summary_rows(metrics)]
        return out

    def rebuild_index(self) -> Path:
        """results/index.csv from the run folders (the folders are the source of truth)."""
        path = self.root / "index.csv"
        rows = self.rows()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".index.", suffix=".tmp")
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        return path
