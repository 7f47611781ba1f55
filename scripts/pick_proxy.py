"""Pick the better of several proxy training runs by their final held-out task score and copy its weights.

python scripts/pick_proxy.py OUT_DIR RUN_DIR [RUN_DIR ...]: reads each RUN_DIR/summary.json (written by
pbs.train.proxy.train), prints every run's mean final score, and copies the best run's export (config, weights,
index, training log, summary) flat into OUT_DIR (the device returns at most 8 files, no tokenizer needed: it is
the Step 4 proxy's, whose runs this script picked from).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def mean_final(summary: dict) -> float:
    vals = [v for scores in summary["final_scores"].values() for v in scores.values()]
    return sum(vals) / len(vals) if vals else float("-inf")


def main(out: str, *runs: str) -> None:
    scored = []
    for run in runs:
        path = Path(run) / "summary.json"
        if not path.exists():
            print(f"{run}: no summary.json (failed?)")
            continue
        s = json.loads(path.read_text())
        scored.append((mean_final(s), run, s))
        print(f"{run}: mean final score {mean_final(s):.3f} after {s['step']} steps")
    if not scored:
        raise SystemExit("no finished run")
    score, run, s = max(scored, key=lambda t: t[0])
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    export = Path(s["out_dir"])
    for f in sorted(export.iterdir()):
        if f.suffix in (".safetensors", ".csv") or f.name in ("config.json", "model.safetensors.index.json"):
            shutil.copyfile(f, dst / f.name)
    shutil.copyfile(Path(run) / "summary.json", dst / "summary.json")
    print(f"picked {run} ({score:.3f})")


if __name__ == "__main__":
    main(*sys.argv[1:])
