"""The Hydra app end to end on the shipped fixtures: a 2 × 2 multirun, resume, wandb offline, offline errors."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pbs.eval.config import ModelConfig
from pbs.eval.job import ModelUnavailableError, resolve_model_path

ROOT = Path(__file__).resolve().parents[2]


def _eval(tmp_path, *overrides):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline",
               PBS_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "experiments.eval", "-m", f"results_dir={tmp_path / 'results'}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", "limit=1", "model=tiny", "task=fixtures",
           "task.tasks=[pbs_longbench_hotpotqa,pbs_longbench_v2]", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_multirun_two_methods_two_thresholds_then_resume(tmp_path):
    sweep = ["method=pbs,meanpool", "method.threshold=0.8,0.9", "method.block_size=32"]
    first = _eval(tmp_path, *sweep)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 4 and all((r / "status.json").exists() for r in runs)
    index = list(csv.DictReader(open(tmp_path / "results" / "index.csv")))
    rows = [r for r in index if r["level"] == "task"]
    assert len(rows) == 4 * 2  # 4 runs × 2 tasks
    # + per run LongBench's multi category (hotpotqa alone) and the two benchmark rows
    assert sorted((r["task"], r["metric"]) for r in index if r["level"] != "task") == sorted(
        [("pbs_longbench_multi", "category_mean"), ("pbs_longbench", "average"), ("pbs_longbench", "dataset_mean")] * 4)
    assert {r["method"] for r in rows} == {"pbs", "meanpool"} and all(r["status"] == "ok" for r in rows)
    assert all(0 < float(r["density"]) <= 1.5 for r in rows)
    wandb_runs = list((tmp_path / "results" / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 4
    stamps = {r.name: (r / "status.json").stat().st_mtime_ns for r in runs}
    again = _eval(tmp_path, *sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {r.name: (r / "status.json").stat().st_mtime_ns for r in runs} == stamps  # finished runs skipped
    assert again.stderr.count("already finished") + again.stdout.count("already finished") == 4


def test_offline_hub_model_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"meta-llama/Llama-3.1-8B-Instruct.*model.path="):
        resolve_model_path(ModelConfig(name="llama3.1-8b-instruct", path="meta-llama/Llama-3.1-8B-Instruct"))
