"""The results store: one folder per run, keyed by its run id, plus an index pandas reads.

    <results_dir>/runs/<run_id>/config.json      the resolved config and its identity (code, model, data, numerics)
    <results_dir>/runs/<run_id>/status.json      {"status": "running" | "ok" | "failed", "error", "execution",
                                                  "started_utc", "finished_utc", "host", "pid", "device", "dtype",
                                                  "provenance"}
    <results_dir>/runs/<run_id>/claim.json       while a process evaluates the run (pbs.eval.claims)
    <results_dir>/runs/<run_id>/metrics.json     per-task and per-length scores, the aggregate, density, prefill time
    <results_dir>/runs/<run_id>/generations.jsonl
    <results_dir>/index.csv                      rows per run (see :data:`LEVELS`), rebuilt from the run folders

A run is ``running`` from its start until its result is recorded; a run whose status says running but whose claim
is stale (its process was killed) is ``interrupted`` (:meth:`RunStore.state`). Every file is written to a temporary
name and renamed (a killed sweep never leaves a half-written file), readable as the umask allows (group-readable
under the usual 022/002).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .claims import read_claim

INDEX_COLUMNS = ["run_id", "status", "model", "method", "method_kwargs", "task_name", "level", "task", "length",
                 "metric", "score", "n_samples", "density", "prefill_ms", "device", "dtype", "date_utc", "git_commit",
                 "error"]

#: ``level`` of an index row: ``task`` (one lm-eval task, every length), ``length`` (one task at one RULER length,
#: ``length`` set), ``category`` (a LongBench category mean: ``task`` = its group, e.g. ``pbs_longbench_single``),
#: ``benchmark`` (``task`` = ``pbs_longbench``; ``metric`` = ``average``, the mean of the category means -- Table
#: 1's "Avg" -- or ``dataset_mean``), ``aggregate`` (the run's headline score, see
#: :func:`pbs.eval.summaries.aggregate_score`; with ``length`` set: the mean over tasks at that length)
LEVELS = ("task", "length", "category", "benchmark", "aggregate")


def summary_rows(metrics: dict) -> list[dict]:
    """The length / category / benchmark / aggregate rows of a run (see :data:`LEVELS`)."""
    from .longbench.scoring import CATEGORIES

    rows = []
    for task, lengths in (metrics.get("per_length") or {}).items():
        rows += [dict(level="length", task=task, length=int(n), metric="score", score=e["score"], n_samples=e["n"])
                 for n, e in sorted(lengths.items(), key=lambda kv: int(kv[0]))]
    summary = metrics.get("longbench") or {}
    n = summary.get("n_datasets")
    rows += [dict(level="category", task=f"pbs_longbench_{cat}", metric="category_mean", score=summary[cat],
                  n_samples=None) for cat in CATEGORIES if cat in summary]
    rows += [dict(level="benchmark", task="pbs_longbench", metric=key, score=summary[key], n_samples=n)
             for key in ("average", "dataset_mean") if key in summary]
    agg = metrics.get("aggregate") or {}
    if agg.get("score") is not None:
        rows.append(dict(level="aggregate", task=None, metric=agg.get("metric"), score=agg["score"],
                         n_samples=agg.get("n")))
    for n, e in sorted((agg.get("per_length") or {}).items(), key=lambda kv: int(kv[0])):
        rows.append(dict(level="aggregate", task=None, length=int(n), metric="mean_task_score", score=e["score"],
                         n_samples=e["n"]))
    return rows


def run_id(config: dict) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of the config (with its identity)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _file_mode() -> int:
    """0o666 minus the process umask: what ``open()`` would create (mkstemp makes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, rid: str) -> Path:
        return self.root / "runs" / rid

    def claim_path(self, rid: str) -> Path:
        return self.run_dir(rid) / "claim.json"

    def record(self, rid: str) -> dict | None:
        """The run's status.json, or None."""
        path = self.run_dir(rid) / "status.json"
        return json.loads(path.read_text()) if path.exists() else None

    def state(self, rid: str) -> str | None:
        """``ok``, ``failed``, ``running`` (a live process holds it), ``interrupted`` (its process was killed), or
        None (never started)."""
        rec = self.record(rid)
        if rec is None:
            return None
        if rec["status"] != "running":
            return rec["status"]
        held = read_claim(self.claim_path(rid))
        return "running" if held is not None and not held["stale"] else "interrupted"

    def status(self, rid: str) -> str | None:
        return self.state(rid)

    def is_finished(self, rid: str) -> bool:
        return self.state(rid) == "ok"

    def start(self, rid: str, config: dict, record: dict) -> None:
        """Mark the run started (status ``running``); a killed process leaves it so: ``interrupted``."""
        d = self.run_dir(rid)
        write_json(d / "config.json", config)
        for stale in ("metrics.json", "generations.jsonl"):  # a rerun's earlier result is replaced, not mixed
            (d / stale).unlink(missing_ok=True)
        write_json(d / "status.json", dict(record, status="running"))
        self.rebuild_index()

    def save(self, rid: str, config: dict, status: str, provenance: dict, metrics: dict | None = None,
             generations: list[dict] | None = None, error: str | None = None, record: dict | None = None) -> Path:
        d = self.run_dir(rid)
        write_json(d / "config.json", config)
        if metrics is not None:
            write_json(d / "metrics.json", metrics)
        if generations is not None:
            atomic_write(d / "generations.jsonl", "".join(json.dumps(g, default=str) + "\n" for g in generations))
        # status last: a run counts as finished only once everything else is on disk
        write_json(d / "status.json", dict(record or {}, status=status, error=error, provenance=provenance))
        self.rebuild_index()
        return d

    def rows(self, run_ids: set[str] | None = None) -> list[dict]:
        out = []
        for d in sorted((self.root / "runs").glob("*")):
            if not (d / "status.json").exists() or (run_ids is not None and d.name not in run_ids):
                continue
            status = json.loads((d / "status.json").read_text())
            config = json.loads((d / "config.json").read_text())
            metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else {}
            prov = status.get("provenance") or {}
            state = status["status"] if status["status"] != "running" else self.state(d.name)
            base = dict(run_id=d.name, status=state, model=config.get("model", {}).get("name"),
                        method=config.get("method_name"),
                        method_kwargs=json.dumps(config.get("method", {}), sort_keys=True),
                        task_name=config.get("task", {}).get("name"), length=None,
                        density=metrics.get("density", {}).get("mean"),
                        prefill_ms=metrics.get("prefill_ms", {}).get("mean"),
                        device=status.get("device") or prov.get("gpu"), dtype=status.get("dtype"),
                        date_utc=status.get("finished_utc") or prov.get("date_utc") or status.get("started_utc"),
                        git_commit=prov.get("git_commit") or (config.get("identity") or {}).get("code", {}).get(
                            "git_commit"),
                        error=(status.get("error") or "").split("\n")[0] or None)
            scores = metrics.get("scores", {})
            if not scores:
                out.append(dict(base, level=None, task=None, metric=None, score=None, n_samples=None))
            for task, entry in scores.items():
                out.append(dict(base, level="task", task=task, metric=entry.get("metric"), score=entry.get("score"),
                                n_samples=entry.get("n_samples")))
            out += [dict(base, **row) for row in summary_rows(metrics)]
        return out

    def rebuild_index(self) -> Path:
        """<results_dir>/index.csv from the run folders (the folders are the source of truth); writers take turns
        (a lock file), so the last rebuild sees every run."""
        path = self.root / "index.csv"
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / ".index.lock"):
            rows = self.rows()
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".index.", suffix=".tmp")
            with os.fdopen(fd, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            os.chmod(tmp, _file_mode())
            os.replace(tmp, path)
        return path


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock (fcntl) where the filesystem supports it; no lock elsewhere."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (not POSIX)
        yield
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
