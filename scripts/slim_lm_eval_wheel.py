"""Rewrite lm-eval's wheel without the built-in task folders this project does not run (5 of its 9 MB), so that an
evaluation's wheels, the repository and the RULER sample cache fit the GPU machine's 64 MiB working tree.

Kept: lm-eval's code, the task-manager modules in ``lm_eval/tasks/`` and the task folders named by ``--keep``
(LongBench, LongBench v2 and RULER by default, which lm-eval's own task names and this project's tests use); this
project's tasks live in ``pbs/eval/tasks``. The wheel's RECORD is rewritten to match.

    python scripts/slim_lm_eval_wheel.py .whl-eval/lm_eval-0.4.13-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import zipfile
from pathlib import Path

KEEP = ("longbench", "longbench2", "ruler")


def _kept(name: str, keep: tuple[str, ...]) -> bool:
    parts = name.split("/")
    in_task_folder = len(parts) > 3 and parts[0] == "lm_eval" and parts[1] == "tasks"
    return not in_task_folder or parts[2] in keep


def slim(wheel: Path, keep: tuple[str, ...] = KEEP) -> tuple[int, int]:
    """Rewrite ``wheel`` in place; returns (files before, files after)."""
    with zipfile.ZipFile(wheel) as zin:
        infos = zin.infolist()
        record = next(i.filename for i in infos if i.filename.endswith(".dist-info/RECORD"))
        tmp = wheel.with_suffix(".tmp")
        rows = []
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in infos:
                if info.filename == record or not _kept(info.filename, keep):
                    continue
                data = zin.read(info)
                zout.writestr(info, data)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                rows.append(f"{info.filename},sha256={digest},{len(data)}")
            zout.writestr(record, "\n".join([*rows, f"{record},,"]) + "\n")
    os.replace(tmp, wheel)
    return len(infos), len(rows) + 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--keep", default=",".join(KEEP), help="lm_eval/tasks folders to keep, comma separated")
    args = parser.parse_args(argv)
    size = args.wheel.stat().st_size
    before, after = slim(args.wheel, tuple(k for k in args.keep.split(",") if k))
    print(f"{args.wheel.name}: {before} -> {after} files, {size / 1e6:.1f} -> {args.wheel.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
