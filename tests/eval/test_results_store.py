"""The results store: run ids, atomic writes, resume semantics, failure records, the index."""

import csv
import dataclasses
import json

import pytest

import pbs
from pbs.eval.config import EvalConfig, LongBenchTask, ModelConfig, RulerTask, WandbConfig
from pbs.eval.job import run_job
from pbs.eval.longbench.protocol import V2Protocol
from pbs.eval.results import RunStore, run_id


def _cfg(tmp_path, threshold=0.9, method=pbs.PBSConfig):
    return EvalConfig(
        model=ModelConfig(name="m", path=str(tmp_path), max_length=100),  # an existing folder: no hub lookup
        method=method(threshold=threshold),
        task=LongBenchTask(name="t", data="fixtures", tasks=["a", "b"]),
        backend="torch", device="cpu", dtype="float32", limit=2,
        results_dir=str(tmp_path), wandb=WandbConfig(mode="disabled"),
    )


def _fake_evaluate(calls):
    def evaluate(model_path, **kwargs):
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
    first = run_job(_cfg(tmp_path), command="test", group="g", evaluate=_fake_evaluate(calls))
    again = run_job(_cfg(tmp_path), command="test", group="g", evaluate=_fake_evaluate(calls))
    other = run_job(_cfg(tmp_path, 0.8), command="test", group="g", evaluate=_fake_evaluate(calls))
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
    def boom(model_path, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    failed = run_job(_cfg(tmp_path, method=pbs.XAttentionConfig), command="test", group="g", evaluate=boom)
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    store = RunStore(tmp_path)
    assert store.status(failed["run_id"]) == "failed"
    rows = list(csv.DictReader(open(tmp_path / "index.csv")))
    assert rows[0]["status"] == "failed" and "out of memory" in rows[0]["error"]
    calls = []
    retried = run_job(_cfg(tmp_path, method=pbs.XAttentionConfig), command="test", group="g",
                      evaluate=_fake_evaluate(calls))
    assert retried["status"] == "ok" and len(calls) == 1  # failed runs are not skipped


def test_metrics_and_index_carry_category_means_and_the_official_average(tmp_path):
    """run_job stores evaluate()'s LongBench summary and v2 counts; the index gets one row per category mean and
    two benchmark rows (average = mean of the category means, dataset_mean)."""
    def evaluate(model_path, **kwargs):
        assert kwargs["v2"] == V2Protocol(decoding="greedy", empty_outputs="wrong", seed=7)  # task.v2, as built
        assert kwargs["model_kwargs"]["max_length_v2"] == 90 and kwargs["ruler"] is None
        return {"scores": {"pbs_longbench_hotpotqa": {"metric": "qa_f1_score", "score": 40.0, "n_samples": 2},
                           "pbs_longbench_musique": {"metric": "qa_f1_score", "score": 20.0, "n_samples": 2},
                           "pbs_longbench_lcc": {"metric": "code_sim_score", "score": 60.0, "n_samples": 2},
                           "pbs_longbench_v2": {"metric": "acc", "score": 50.0, "n_samples": 4}},
                "longbench": {"multi": 30.0, "code": 60.0, "average": 45.0, "dataset_mean": 40.0, "n_datasets": 3},
                "longbench_v2": {"pbs_longbench_v2": {"acc": 50.0, "n_scored": 4, "n_empty": 1,
                                                      "empty_outputs": "wrong"}},
                "density": {"mean": 0.4}, "prefill_ms": {"mean": 3.0}, "generations": []}

    cfg = _cfg(tmp_path)
    cfg.model.max_length_v2 = 90
    cfg.task.v2 = V2Protocol(decoding="greedy", empty_outputs="wrong", seed=7)
    done = run_job(cfg, command="test", group="g", evaluate=evaluate)
    metrics = json.loads((tmp_path / "runs" / done["run_id"] / "metrics.json").read_text())
    assert metrics["longbench"]["average"] == 45.0 and metrics["longbench_v2"]["pbs_longbench_v2"]["n_empty"] == 1
    rows = list(csv.DictReader(open(tmp_path / "index.csv")))
    assert [r["level"] for r in rows] == ["task"] * 4 + ["category"] * 2 + ["benchmark"] * 2
    summary = {(r["task"], r["metric"]): float(r["score"]) for r in rows if r["level"] != "task"}
    assert summary == {("pbs_longbench_multi", "category_mean"): 30.0, ("pbs_longbench_code", "category_mean"): 60.0,
                       ("pbs_longbench", "average"): 45.0, ("pbs_longbench", "dataset_mean"): 40.0}


def test_the_config_objects_reach_evaluate_unchanged(tmp_path):
    """The method's config object built by Hydra is what evaluate (and so pbs.hf.enable) gets; a RULER task's
    settings travel as the ``ruler`` argument."""
    calls = []
    cfg = dataclasses.replace(_cfg(tmp_path, 0.7), task=RulerTask(lengths=[1024], samples=3, seed=5))
    run_job(cfg, command="test", group="g", evaluate=_fake_evaluate(calls))
    (kwargs,) = calls
    assert kwargs["method"] == "pbs" and kwargs["method_config"] is cfg.method
    assert kwargs["ruler"] is cfg.task and kwargs["v2"] is None and kwargs["tasks"] == ["pbs_ruler"]
    with pytest.raises(ValueError, match="method must be a method's config"):
        dataclasses.replace(cfg, method={"threshold": 0.9})
    with pytest.raises(ValueError, match="task must be"):
        dataclasses.replace(cfg, task={"name": "t"})
