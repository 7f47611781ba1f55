"""What determines a run's result besides its settings: the code, the model and the data (part of the run id).

- :func:`code_version`: ``{"git_commit", "git_dirty"}`` of the checkout (``git_dirty`` a hash of the uncommitted
  changes to the code, None when clean), or ``{"package": <pbs version>}`` outside a git checkout
  (``PBS_GIT_COMMIT`` / ``PBS_GIT_DIRTY`` name a copy whose ``.git`` is missing or stale, as for provenance).
- :func:`model_identity`: a local folder's content hash (weights, config, tokenizer; README, logs and images left
  out), or ``hub:<id>@<revision>`` for a snapshot in the Hugging Face cache.
- :func:`data_identity`: the content hash of the local data a task reads, the shipped fixtures', or
  ``hub:<dataset>`` for hub data (its revision when cached); the RULER suite is generated from its settings and the
  haystack corpus, hashed here.

File hashes are cached by (path, size, mtime) in ``$PBS_CACHE/file-hashes.json`` (default ``~/.cache/pbs``), so a
16 GB checkpoint is read once, not per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: the paths whose uncommitted changes make a checkout "dirty" for a run id (results/ and notes are not code)
CODE_PATHS = ("pbs", "experiments", "conf", "pyproject.toml")
#: files of a model folder that do not change what it computes
_NOT_MODEL = (".md", ".csv", ".png", ".jpg", ".jpeg", ".gif", ".log")


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.decode(errors="replace") if res.returncode == 0 else None


@lru_cache(maxsize=1)
def code_version() -> dict:
    """The code a run executes: git commit and a hash of the uncommitted changes to :data:`CODE_PATHS`."""
    if os.environ.get("PBS_GIT_COMMIT"):
        dirty = os.environ.get("PBS_GIT_DIRTY")
        return {"git_commit": os.environ["PBS_GIT_COMMIT"],
                "git_dirty": dirty if dirty not in (None, "", "0", "false", "False") else None}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        from .. import __version__

        return {"package": __version__}
    diff = _git("diff", "HEAD", "--", *CODE_PATHS) or ""
    untracked = (_git("ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS) or "").split()
    if not diff and not untracked:
        return {"git_commit": commit.strip(), "git_dirty": None}
    h = hashlib.sha256(diff.encode())
    for name in sorted(untracked):
        h.update(name.encode() + b"\0" + file_hash(PROJECT_ROOT / name).encode())
    return {"git_commit": commit.strip(), "git_dirty": h.hexdigest()[:12]}


def model_identity(path: str) -> str:
    """A local model folder's content hash, or ``hub:<id>@<revision>`` for a hub snapshot."""
    folder = Path(path)
    snapshot = folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--")
    if snapshot:  # a hub snapshot: its folder is named after the revision
        repo = folder.parent.parent.name.removeprefix("models--").replace("--", "/")
        return f"hub:{repo}@{folder.name}"
    if not folder.is_dir():
        return f"hub:{path}"
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() not in _NOT_MODEL]
    return "sha256:" + _combined(folder, files)


def data_identity(task) -> str:
    """Where a task's records come from, with a content hash of local ones (``task``: a LongBenchTask or RulerTask)."""
    if not hasattr(task, "data"):  # the RULER suite: generated from its settings and the haystack corpus
        from .ruler import generate

        corpus = Path(generate.__file__).parent / "data"
        return "generated:sha256:" + _combined(corpus, sorted(p for p in corpus.rglob("*") if p.is_file()))
    source = str(task.data)
    if source == "fixtures":
        from .longbench.data import FIXTURES_DIR

        return "fixtures:sha256:" + _combined(FIXTURES_DIR, sorted(p for p in FIXTURES_DIR.rglob("*") if p.is_file()))
    if source == "hub" or source.startswith("hub:"):
        return source if source.startswith("hub:") else "hub:THUDM/LongBench(-v2)"
    path = Path(source).expanduser()
    if path.is_file():
        return "sha256:" + file_hash(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".parquet"))
    return "sha256:" + _combined(path, files)


def _combined(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0" + file_hash(p).encode() + b"\n")
    return h.hexdigest()[:16]


def file_hash(path: Path) -> str:
    """SHA-256 of a file's content, cached by (resolved path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = _load_cache()
    if key not in cache:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        cache[key] = h.hexdigest()
        if st.st_size >= 1 << 20:  # worth remembering
            _save_cache(cache)
    return cache[key]


def _cache_path() -> Path:
    return Path(os.environ.get("PBS_CACHE", Path.home() / ".cache" / "pbs")) / "file-hashes.json"


_CACHE: dict | None = None


def _load_cache() -> dict:
    global _CACHE
    if _CACHE is None:
        try:
            _CACHE = json.loads(_cache_path().read_text())
        except (OSError, ValueError):
            _CACHE = {}
    return _CACHE


def _save_cache(cache: dict) -> None:
    from .results import write_json

    try:
        write_json(_cache_path(), cache)
    except OSError:  # a read-only home: the hashes are recomputed next time
        pass
