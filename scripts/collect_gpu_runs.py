"""Bring the finished runs of a device evaluation into a results folder.

    python scripts/collect_gpu_runs.py /work/.device/N/eval.tar.xz --into results/proxy/v2/eval

The archive is what ``scripts/eval_proxy_gpu.sh`` returns (``eval/runs/<id>/``, ``eval/logs/*.log``,
``eval/index.csv``). Runs whose ``status.json`` says ``"ok"`` are copied into ``<into>/runs/`` (a run id already there
must hold the same ``status.json``: ids name the code, config and data, so a different one means two results for
one id and stops the copy); the logs of finished jobs into ``<into>/logs/`` (a name already taken by another log gets
``-2``, ``-3``, ...); ``<into>/index.csv`` is rebuilt from the run folders. Failed and unfinished runs are listed,
not copied. Commit the runs before ``make reproduce-tables``: it reads committed runs only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pbs.eval.results import RunStore

_FINISHED_LOG = "1 job: 1 ok"  # the summary line of a job whose one run finished


def _free_name(logs: Path, name: str) -> str:
    stem, suffix, k = Path(name).stem, Path(name).suffix, 2
    while (logs / name).exists():
        name, k = f"{stem}-{k}{suffix}", k + 1
    return name


def collect(source: Path, into: Path) -> dict[str, list[str]]:
    """Copy ``source``'s finished runs and their logs into ``into`` (both results folders with ``runs/``, ``logs/``)
    and rebuild ``into/index.csv``; returns run ids by outcome (``copied``, ``present``; ``failed`` with its error line,
    ``unfinished`` with its state) and the log names copied (``logs``). Raises ValueError, copying nothing, where a
    finished run's id is in ``into`` with another ``status.json``."""
    out: dict[str, list[str]] = {k: [] for k in ("copied", "present", "failed", "unfinished", "logs")}
    found, have = RunStore(source), RunStore(into)
    states = {p.parent.name: found.state(p.parent.name) for p in sorted(source.glob("runs/*/status.json"))}
    clashes = [rid for rid, st in states.items() if st == "ok" and have.record(rid) not in (None, found.record(rid))]
    if clashes:  # checked before anything is copied: a refused collect leaves ``into`` as it was
        raise ValueError(f"run {', '.join(clashes)} already in {into} with another status.json: two results for one "
                         "run id; compare them before copying")
    for rid, state in states.items():
        if state == "failed":
            out["failed"].append(f"{rid}: {(found.record(rid).get('error') or 'no error recorded').splitlines()[0]}")
        elif state != "ok":
            out["unfinished"].append(f"{rid} ({state})")
        elif have.record(rid) is not None:
            out["present"].append(rid)
        else:
            shutil.copytree(found.run_dir(rid), have.run_dir(rid))
            out["copied"].append(rid)
    (into / "logs").mkdir(parents=True, exist_ok=True)
    for log in sorted(source.glob("logs/*.log")):
        text = log.read_bytes()
        if _FINISHED_LOG.encode() not in text:
            continue
        taken = [into / "logs" / log.name, *(into / "logs").glob(f"{log.stem}-*{log.suffix}")]
        if any(t.exists() and t.read_bytes() == text for t in taken):  # brought in before
            continue
        name = _free_name(into / "logs", log.name)
        shutil.copyfile(log, into / "logs" / name)
        out["logs"].append(name)
    have.rebuild_index()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("archive", type=Path, help="eval.tar.xz from scripts/eval_proxy_gpu.sh, or its unpacked eval/")
    p.add_argument("--into", type=Path, default=ROOT / "results/proxy/v2/eval")
    a = p.parse_args(argv)
    if not a.archive.exists():
        p.error(f"archive={str(a.archive)!r} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        source = a.archive
        if a.archive.is_file():
            with tarfile.open(a.archive) as tar:
                tar.extractall(tmp, filter="data")
            source = Path(tmp) / "eval"
        if not (source / "runs").is_dir():
            p.error(f"archive={str(a.archive)!r} holds no eval/runs/ folder")
        try:
            out = collect(source, a.into)
        except ValueError as e:
            p.error(str(e))
    print(f"{len(out['copied'])} runs copied, {len(out['present'])} already there, {len(out['logs'])} logs; "
          f"{len(out['failed'])} failed, {len(out['unfinished'])} unfinished (not copied)")
    for line in out["failed"]:
        print(f"  failed  {line}")
    for line in out["unfinished"]:
        print(f"  unfinished  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
