"""Who is computing a run: one claim file per run, so concurrent sweeps over the same config compute it once.

``runs/<run_id>/claim.json`` is created exclusively (``O_EXCL``) by the process that evaluates the run and removed
when it has recorded the result. While it works, a thread touches the file every :data:`HEARTBEAT_S` seconds. A
claim is *stale* -- its holder was killed (SIGKILL, OOM killer, a lost node) -- when its process is gone (same
host) or its heartbeat is older than :data:`STALE_S` (any host); a stale claim is taken over, once (an atomic
rename decides between two takers).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HEARTBEAT_S = 30.0
STALE_S = 300.0


@dataclass
class Claim:
    """A held claim; :meth:`release` when the result is recorded."""

    path: Path
    owner: dict
    _stop: threading.Event = field(default_factory=threading.Event)

    def start_heartbeat(self, interval: float = HEARTBEAT_S) -> None:
        def beat():
            while not self._stop.wait(interval):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        threading.Thread(target=beat, daemon=True, name=f"claim-{self.path.parent.name}").start()

    def release(self) -> None:
        self._stop.set()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def owner_info(execution: str) -> dict:
    from datetime import UTC, datetime

    return {"execution": execution, "host": socket.gethostname(), "pid": os.getpid(),
            "started_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def new_execution_id() -> str:
    return uuid.uuid4().hex[:8]


def read_claim(path: Path) -> dict | None:
    """The claim's owner (with ``stale``: bool), or None when nobody holds it."""
    try:
        owner = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # being written right now
        return {"host": "?", "pid": None, "started_utc": "?", "stale": False}
    same_host = owner.get("host") == socket.gethostname()
    dead = same_host and owner.get("pid") is not None and not _alive(int(owner["pid"]))
    return dict(owner, stale=dead or age > STALE_S)


def try_claim(path: Path, owner: dict) -> Claim | None:
    """Claim a run (None: a live process holds it). A stale claim is taken over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            held = read_claim(path)
            if held is not None and not held["stale"]:
                return None
            moved = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:  # one of several takers wins the rename
                os.replace(path, moved)
            except FileNotFoundError:
                continue
            try:
                taken = json.loads(moved.read_text())
            except (OSError, ValueError):
                taken = {}
            if held is not None and taken.get("execution") != held.get("execution"):
                try:  # another taker's fresh claim was moved: give it back
                    os.link(moved, path)
                except FileExistsError:
                    pass
            moved.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        return Claim(path, owner)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
