"""The Hydra app end to end, through a subprocess (exit status, summary, logs), on the tiny model and the shipped
fixtures: a 2 × 2 multirun and its resume, failed jobs, invalid settings, offline errors."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pbs.eval.config import ModelConfig
from pbs.eval.job import ModelUnavailableError, resolve_model_path
from pbs.eval.longbench.data import FIXTURES_V1_DIR, DataFormatError, load_longbench

ROOT = Path(__file__).resolve().parents[2]


def _eval(tmp_path, *overrides, multirun=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline",
               PBS_CACHE=str(tmp_path / "cache"))
    where = f"hydra.sweep.dir={tmp_path / 'sweep'}" if multirun else f"hydra.run.dir={tmp_path / 'run'}"
    cmd = [sys.executable, "-m", "experiments.eval", *(["-m"] if multirun else []), f"results_dir={tmp_path / 'results'}",
           where, "limit=1", "model=tiny", "task=fixtures", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def _corrupt_copy(tmp_path) -> Path:
    """The hotpotqa fixture with its second record cut short (a truncated download)."""
    folder = tmp_path / "corrupt"
    folder.mkdir()
    lines = (FIXTURES_V1_DIR / "hotpotqa.jsonl").read_text().splitlines()
    lines[1] = lines[1][:80]
    (folder / "hotpotqa.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_multirun_two_methods_two_thresholds_then_resume(tmp_path):
    sweep = ["method=pbs,meanpool", "method.threshold=0.8,0.9", "method.block_size=32",
             "task.tasks=[pbs_longbench_hotpotqa,pbs_longbench_v2]"]
    first = _eval(tmp_path, *sweep)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "4 jobs: 4 ok, 0 failed, 0 skipped" in first.stdout
    log = first.stdout + first.stderr
    assert "Custom kwargs" not in log and "wandb:" not in log  # quiet by default
    runs = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 4 and all((r / "status.json").exists() for r in runs)
    with open(tmp_path / "results" / "index.csv") as f:
        index = list(csv.DictReader(f))
    rows = [r for r in index if r["level"] == "task"]
    assert len(rows) == 4 * 2  # 4 runs × 2 tasks
    # + per run LongBench's multi category (hotpotqa alone), the two benchmark rows and the aggregate
    assert sorted((r["task"], r["metric"]) for r in index if r["level"] not in ("task", "aggregate")) == sorted(
        [("pbs_longbench_multi", "category_mean"), ("pbs_longbench", "average"), ("pbs_longbench", "dataset_mean")] * 4)
    assert {r["method"] for r in rows} == {"pbs", "meanpool"} and all(r["status"] == "ok" for r in rows)
    assert all(0 < float(r["density"]) <= 1.5 for r in rows) and {r["model"] for r in rows} == {"tiny-llama"}
    wandb_runs = list((tmp_path / "results" / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 4
    assert "longbench" in first.stdout and "meanpool" in first.stdout  # the results table
    stamps = {r.name: (r / "status.json").stat().st_mtime_ns for r in runs}
    again = _eval(tmp_path, *sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {r.name: (r / "status.json").stat().st_mtime_ns for r in runs} == stamps  # finished runs skipped
    assert "4 jobs: 0 ok, 0 failed, 4 skipped" in again.stdout
    assert (again.stdout + again.stderr).count("already finished") >= 4


def test_failed_jobs_exit_non_zero_with_a_summary(tmp_path):
    """A corrupt data file fails its job (recorded, named with its line), the sweep goes on, the exit status is 1."""
    corrupt = _corrupt_copy(tmp_path)
    out = _eval(tmp_path, f"task.data={corrupt},fixtures", "task.tasks=[pbs_longbench_hotpotqa]")
    assert out.returncode == 1, out.stderr[-3000:]
    assert "2 jobs: 1 ok, 1 failed, 0 skipped" in out.stdout
    failed = [line for line in out.stdout.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 1 and f"{corrupt / 'hotpotqa.jsonl'}, line 2" in failed[0]
    statuses = {json.loads(p.read_text())["status"] for p in (tmp_path / "results" / "runs").glob("*/status.json")}
    assert statuses == {"ok", "failed"}
    single = _eval(tmp_path, f"task.data={corrupt}", "task.tasks=[pbs_longbench_hotpotqa]", multirun=False)
    assert single.returncode == 1 and "1 job: 0 ok, 1 failed" in single.stdout


def test_invalid_settings_are_rejected_before_any_job_starts(tmp_path):
    out = _eval(tmp_path, "method.threshold=0.9,-1", "model.path=/nonexistent/model,models/pbs-proxy-llama-v2")
    assert out.returncode == 2
    assert "3 of 4 jobs have invalid settings; nothing was run" in out.stderr
    assert "threshold=-1" in out.stderr and "model.path='/nonexistent/model'" in out.stderr
    assert not (tmp_path / "results").exists()
    typo = _eval(tmp_path, "+method.treshold=0.5", multirun=False)
    assert typo.returncode == 2 and "did you mean method.threshold" in typo.stderr


def test_a_corrupt_file_is_named_with_its_line(tmp_path):
    with pytest.raises(DataFormatError, match=r"hotpotqa\.jsonl, line 2, column \d+: invalid JSON.*re-download"):
        load_longbench("hotpotqa", _corrupt_copy(tmp_path))


def test_offline_hub_model_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"model.path='meta-llama/Llama-3.1-8B-Instruct'.*local copy"):
        resolve_model_path(ModelConfig(name="llama3.1-8b-instruct", path="meta-llama/Llama-3.1-8B-Instruct"))


def test_a_missing_local_model_is_not_sent_to_the_hub():
    with pytest.raises(ModelUnavailableError, match=r"model.path='/nonexistent/model'.*no such folder") as e:
        resolve_model_path(ModelConfig(name="m", path="/nonexistent/model"))
    assert "huggingface-cli" not in str(e.value)
