"""Provenance of a result: where and how it was produced (GPU, versions, date, git commit, command)."""

from __future__ import annotations

import datetime
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def provenance(command: str) -> dict:
    """Where and how the numbers were taken: GPU, versions, date, git commit (+ dirty), host, the command."""
    from . import __version__

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = "not installed"
    cuda = torch.cuda.is_available()
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    if commit is None or os.environ.get("PBS_GIT_COMMIT"):
        # a copy without a usable (or with a stale) .git, e.g. a GPU box: PBS_GIT_COMMIT / PBS_GIT_DIRTY say it
        commit = os.environ.get("PBS_GIT_COMMIT")
        commit = commit and commit + " (from PBS_GIT_COMMIT)"
        status = os.environ.get("PBS_GIT_DIRTY")
    props = torch.cuda.get_device_properties(0) if cuda else None
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpu_memory_gib": round(props.total_memory / 2**30, 1) if props else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "pbs": __version__,
        "transformers": _version("transformers"),
        "lm_eval": _version("lm_eval"),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": commit or "unknown (no git checkout; set PBS_GIT_COMMIT)",
        "git_dirty": (bool(status) and status not in ("0", "false", "False")) if status is not None else None,
        "hostname": socket.gethostname(),
        "command": command,
    }


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module.replace("_", "-"))
    except Exception:  # noqa: BLE001  (not installed)
        return None
