"""The results store: run ids, atomic writes, resume semantics, failure records, the index."""

import csv
import json

from pbs.eval.pipeline import run_job
from pbs.eval.results import RunStore, run_id


def _cfg(tmp_path, threshold=0.9):
    return {
        "model": {"name": "m", "path": str(tmp_path), "max_length": 100},  # an existing folder: no hub lookup
        "method": {"threshold": threshold},
        "task": {"name": "t", "data": "fixtures", "tasks": ["a", "b"]},
        "backend": "torch", "device": "cpu", "dtype": "float32", "limit": 2,
        "results_dir": str(tmp_path), "wandb": {"mode": "disabled"},
    }


def _fake_evaluate(calls):
    def evaluate(**kwargs):
        calls.append(kwargs)
        return {"scores": {"a": {"metric": "acc", "score": 50.0, "n_samples": 2},
                           "b": {"metric": "f1", "score": 25.0, "n_samples": 2}},
                "density": {"mean": 0.4, "per_layer": {"0": 0.3, "1": 0.5}},
                "prefill_ms": {"mean": 3.0}, "generations": [{"task": "a", "output": "x"}]}
    return evaluate


def test_run_id_is_stable_and_sensitive():
    a = {"x": 1, "y": {"z": 2}}
    assert run_id(a) == run_id({"y": {"z": 2}, "x": 1})
    assert run_id(a) != run_id({"x": 1, "y": {"z": 3}})


def test_finished_runs_are_skipped_and_index_has_one_row_per_task(tmp_path):
    calls = []
    first = run_job(_cfg(tmp_path), "pbs", command="test", group="g", evaluate=_fake_evaluate(calls))
    again = run_job(_cfg(tmp_path), "pbs", command="test", group="g", evaluate=_fake_evaluate(calls))
    other = run_job(_cfg(tmp_path, 0.8), "pbs", command="test", group="g", evaluate=_fake_evaluate(calls))
    assert first["status"] == "ok" and again["status"] == "skipped" and other["status"] == "ok"
    assert len(calls) == 2
    rows = list(csv.DictReader(open(tmp_path / "index.csv")))
    assert len(rows) == 4 and {r["task"] for r in rows} == {"a", "b"}
    assert {r["run_id"] for r in rows} == {first["run_id"], other["run_id"]}
    run = tmp_path / "runs" / first["run_id"]
    assert json.loads((run / "metrics.json").read_text())["density"]["mean"] == 0.4
    assert json.loads((run / "config.json").read_text())["method_name"] == "pbs"
    assert (run / "generations.jsonl").read_text().count("\n") == 1
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_a_failing_run_is_recorded_and_retried_later(tmp_path):
    def boom(**kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    failed = run_job(_cfg(tmp_path), "xattention", command="test", group="g", evaluate=boom)
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    store = RunStore(tmp_path)
    assert store.status(failed["run_id"]) == "failed"
    rows = list(csv.DictReader(open(tmp_path / "index.csv")))
    assert rows[0]["status"] == "failed" and "out of memory" in rows[0]["error"]
    calls = []
    retried = run_job(_cfg(tmp_path), "xattention", command="test", group="g", evaluate=_fake_evaluate(calls))
    assert retried["status"] == "ok" and len(calls) == 1  # failed runs are not skipped
