"""The results store and one job: run ids, atomic group-readable writes, resume semantics, failure records, the index,
started-not-finished markers, concurrent sweeps, wandb ids."""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pbs
from pbs.eval import identity
from pbs.eval.config import EvalConfig, LongBenchTask, ModelConfig, RulerTask, WandbConfig
from pbs.eval.job import run_job
from pbs.eval.longbench.protocol import V2Protocol
from pbs.eval.report import report_rows
from pbs.eval.results import RunStore, run_id

ROOT = Path(__file__).resolve().parents[2]


def _model(tmp_path) -> Path:
    folder = tmp_path / "model"
    if not folder.exists():  # written once: processes sharing tmp_path must see the same files
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "llama"}')
        (folder / "model.safetensors").write_bytes(b"weights v1")
        (folder / "README.md").write_text("a model card")
    return folder


def _cfg(tmp_path, threshold=0.9, method=pbs.PBSConfig, results=None):
    return EvalConfig(
        model=ModelConfig(name="m", path=str(_model(tmp_path)), max_length=100),  # a local folder: no hub lookup
        method=method(threshold=threshold),
        task=LongBenchTask(name="t", data="fixtures", tasks=["a", "b"]),
        backend="torch", device="cpu", dtype="float32", limit=2,
        results_dir=str(results or tmp_path / "results"), wandb=WandbConfig(mode="disabled"),
    )


def _fake_evaluate(calls):
    def evaluate(model_path, **kwargs):
        calls.append(kwargs)
        return {"scores": {"a": {"metric": "acc", "score": 50.0, "n_samples": 2},
                           "b": {"metric": "f1", "score": 25.0, "n_samples": 2}},
                "aggregate": {"score": 37.5, "metric": "mean_task_score", "n": 4, "per_length": {}},
                "density": {"mean": 0.4, "per_layer": {"0": 0.3, "1": 0.5}},
                "prefill_ms": {"mean": 3.0}, "generations": [{"task": "a", "output": "x"}]}
    return evaluate


def _index(cfg):
    with open(Path(cfg.results_dir) / "index.csv") as f:
        return list(csv.DictReader(f))


def test_run_id_is_stable_and_sensitive():
    a = {"x": 1, "y": {"z": 2}}
    assert run_id(a) == run_id({"y": {"z": 2}, "x": 1})
    assert run_id(a) != run_id({"x": 1, "y": {"z": 3}})


def test_finished_runs_are_skipped_and_index_has_one_row_per_task(tmp_path):
    calls = []
    first = run_job(_cfg(tmp_path), command="test", group="g", evaluate=_fake_evaluate(calls))
    again = run_job(_cfg(tmp_path), command="test", group="g", evaluate=_fake_evaluate(calls))
    other = run_job(_cfg(tmp_path, 0.8), command="test", group="g", evaluate=_fake_evaluate(calls))
    assert first["status"] == "ok" and other["status"] == "ok" and len(calls) == 2
    assert again["status"] == "skipped" and "already finished" in again["reason"] and "rerun=true" in again["reason"]
    rows = _index(_cfg(tmp_path))
    tasks = [r for r in rows if r["level"] == "task"]
    assert len(tasks) == 4 and {r["task"] for r in tasks} == {"a", "b"}
    assert {r["run_id"] for r in rows} == {first["run_id"], other["run_id"]}
    assert all(r["task_name"] == "t" and r["dtype"] == "float32" and r["device"] == "cpu" for r in rows)
    aggregate = [r for r in rows if r["level"] == "aggregate"]
    assert len(aggregate) == 2 and all(float(r["score"]) == 37.5 and r["n_samples"] == "4" for r in aggregate)
    run = tmp_path / "results" / "runs" / first["run_id"]
    assert json.loads((run / "metrics.json").read_text())["density"]["mean"] == 0.4
    config = json.loads((run / "config.json").read_text())
    assert config["method_name"] == "pbs" and config["identity"]["model"].startswith("sha256:")
    assert (run / "generations.jsonl").read_text().count("\n") == 1
    assert not list(tmp_path.rglob("*.tmp")) and not (run / "claim.json").exists()
    rerun = run_job(dataclasses.replace(_cfg(tmp_path), rerun=True), command="test", group="g",
                    evaluate=_fake_evaluate(calls))
    assert rerun["status"] == "ok" and rerun["run_id"] == first["run_id"] and len(calls) == 3


def test_run_id_changes_with_the_code_the_weights_and_the_data(tmp_path, monkeypatch):
    """A fix (a new commit, uncommitted changes), new weights or new data never reuse a finished run."""
    calls = []
    run = lambda cfg=None: run_job(cfg or _cfg(tmp_path), command="t", group="g", evaluate=_fake_evaluate(calls))
    monkeypatch.setenv("PBS_GIT_COMMIT", "aaaa")
    identity.code_version.cache_clear()
    ids = [run()["run_id"]]
    assert run()["status"] == "skipped"
    monkeypatch.setenv("PBS_GIT_COMMIT", "bbbb")  # another commit
    identity.code_version.cache_clear()
    ids.append(run()["run_id"])
    monkeypatch.setenv("PBS_GIT_DIRTY", "1")  # the same commit with uncommitted changes
    identity.code_version.cache_clear()
    ids.append(run()["run_id"])
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights v2")  # retrained weights
    ids.append(run()["run_id"])
    (tmp_path / "model" / "README.md").write_text("an edited model card")  # not what the model computes
    assert run()["status"] == "skipped"
    data = tmp_path / "data.jsonl"
    for version in ("1", "2"):  # a local data file whose content changes
        data.write_text(json.dumps({"version": version}) + "\n")
        cfg = _cfg(tmp_path)
        cfg.task.data = str(data)
        ids.append(run(cfg)["run_id"])
    identity.code_version.cache_clear()
    assert len(set(ids)) == len(ids) == 6 and len(calls) == 6
    config = json.loads((tmp_path / "results" / "runs" / ids[1] / "config.json").read_text())
    assert config["identity"]["code"] == {"git_commit": "bbbb", "git_dirty": None}


def test_code_version_of_this_checkout(monkeypatch):
    monkeypatch.delenv("PBS_GIT_COMMIT", raising=False)
    identity.code_version.cache_clear()
    version = identity.code_version()
    identity.code_version.cache_clear()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert version["git_commit"] == head.stdout.strip()
    assert version["git_dirty"] is None or len(version["git_dirty"]) == 12  # a hash of the uncommitted code changes


def test_a_failing_run_is_recorded_and_retried_later(tmp_path):
    def boom(model_path, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    failed = run_job(_cfg(tmp_path, method=pbs.XAttentionConfig), command="test", group="g", evaluate=boom)
    assert failed["status"] == "failed" and "out of memory" in failed["reason"]
    store = RunStore(tmp_path / "results")
    assert store.state(failed["run_id"]) == "failed"
    rows = _index(_cfg(tmp_path))
    assert rows[0]["status"] == "failed" and "out of memory" in rows[0]["error"]
    calls = []
    retried = run_job(_cfg(tmp_path, method=pbs.XAttentionConfig), command="test", group="g",
                      evaluate=_fake_evaluate(calls))
    assert retried["status"] == "ok" and len(calls) == 1  # failed runs are not skipped
    assert json.loads((store.run_dir(retried["run_id"]) / "status.json").read_text())["error"] is None


def test_missing_model_and_data_paths_fail_before_a_run_starts(tmp_path):
    cfg = dataclasses.replace(_cfg(tmp_path), model=ModelConfig(name="m", path="/nonexistent/model"))
    out = run_job(cfg, command="t", group="g", evaluate=_fake_evaluate([]))
    assert out["status"] == "failed" and out["run_id"] is None
    assert "model.path='/nonexistent/model'" in out["reason"] and "huggingface-cli" not in out["reason"]
    cfg = _cfg(tmp_path)
    cfg.task.data = str(tmp_path / "nowhere")
    out = run_job(cfg, command="t", group="g", evaluate=_fake_evaluate([]))
    assert out["status"] == "failed" and f"task.data='{tmp_path / 'nowhere'}'" in out["reason"]
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_result_files_follow_the_umask(tmp_path, umask):
    """Collaborators on a shared filesystem can read the results (mkstemp alone would make them 0600)."""
    old = os.umask(umask)
    try:
        out = run_job(_cfg(tmp_path), command="t", group="g", evaluate=_fake_evaluate([]))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "results").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert {p.name for p in files} >= {"config.json", "status.json", "metrics.json", "generations.jsonl",
                                       "index.csv"} and out["status"] == "ok"
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}


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
    metrics = json.loads((tmp_path / "results" / "runs" / done["run_id"] / "metrics.json").read_text())
    assert metrics["longbench"]["average"] == 45.0 and metrics["longbench_v2"]["pbs_longbench_v2"]["n_empty"] == 1
    rows = _index(cfg)
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


def test_wandb_runs_are_unique_per_execution_grouped_named_and_resolved(tmp_path, monkeypatch):
    """A retried run gets a fresh wandb id (no stale error key), the sweep's name as group, a readable name, the
    resolved device/dtype, the commit and the aggregate score."""
    inits, summaries = [], []

    class Run:
        def __init__(self):
            self.summary = self

        def log(self, d):
            pass

        def update(self, d):
            summaries.append(dict(d))

        def finish(self):
            pass

    class FakeWandb:
        @staticmethod
        def init(**kwargs):
            inits.append(kwargs)
            return Run()

        Settings = staticmethod(lambda **kw: kw)

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    cfg = dataclasses.replace(_cfg(tmp_path, 0.8), wandb=WandbConfig(mode="offline"),
                              method=pbs.PBSConfig(threshold=0.8, permute="none"))

    def boom(model_path, **kwargs):
        raise RuntimeError("simulated")

    failed = run_job(cfg, command="t", group="table1_llama", evaluate=boom)
    ok = run_job(cfg, command="t", group="table1_llama", evaluate=_fake_evaluate([]))
    assert failed["run_id"] == ok["run_id"]
    assert inits[0]["id"] != inits[1]["id"] and all(i["id"].startswith(ok["run_id"] + "-") for i in inits)
    assert {i["group"] for i in inits} == {"table1_llama"}
    assert inits[1]["name"] == "pbs permute=none threshold=0.8 t"
    config = inits[1]["config"]
    assert config["device"] == "cpu" and config["dtype"] == "float32" and config["git_commit"]
    assert summaries[0]["status"] == "failed" and "error" in summaries[0]
    assert summaries[1]["status"] == "ok" and "error" not in summaries[1] and summaries[1]["score/aggregate"] == 37.5


# ---------------------------------------------------------------- killed jobs and concurrent sweeps (processes)

_JOB = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {here!r})
    from test_results_store import _cfg
    from pathlib import Path
    from pbs.eval.job import run_job

    tmp, sleep, counter = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])

    def evaluate(model_path, **kwargs):
        with counter.open("a") as f:
            f.write("evaluated\\n")
        time.sleep(sleep)
        return {{"scores": {{"a": {{"metric": "acc", "score": 50.0, "n_samples": 2}}}}, "generations": []}}

    out = run_job(_cfg(tmp), command="t", group="g", evaluate=evaluate)
    print(out["status"], "|", out["reason"], flush=True)
""")


def _spawn(tmp_path, sleep, counter):
    script = tmp_path / "job.py"
    script.write_text(_JOB.format(root=str(ROOT), here=str(Path(__file__).parent)))
    return subprocess.Popen([sys.executable, str(script), str(tmp_path), str(sleep), str(counter)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_job_leaves_a_started_not_finished_marker_and_is_rerun(tmp_path):
    _model(tmp_path)
    counter = tmp_path / "calls.txt"
    proc = _spawn(tmp_path, 120, counter)
    deadline = time.time() + 60
    while not counter.exists() and time.time() < deadline:  # until the job is inside evaluate
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = RunStore(tmp_path / "results")
    (rid,) = [d.name for d in (tmp_path / "results" / "runs").iterdir()]
    assert store.state(rid) == "interrupted"  # status says running, its process is gone
    record = store.record(rid)
    assert record["status"] == "running" and record["pid"] == proc.pid and record["started_utc"]
    assert [r["status"] for r in report_rows(tmp_path / "results")] == ["interrupted"]  # the report says so
    again = run_job(_cfg(tmp_path), command="t", group="g", evaluate=_fake_evaluate([]))
    assert again["status"] == "ok" and again["run_id"] == rid and store.state(rid) == "ok"


def test_concurrent_sweeps_over_the_same_config_compute_it_once(tmp_path):
    _model(tmp_path)
    counter = tmp_path / "calls.txt"
    procs = [_spawn(tmp_path, 3, counter) for _ in range(2)]
    outs = sorted(p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs)
    assert counter.read_text().count("evaluated") == 1
    assert outs[0].startswith("ok") and outs[1].startswith("skipped")
    assert "another process" in outs[1] or "already finished" in outs[1]


def test_runs_finishing_at_once_in_several_processes_each_appear_once_in_the_index(tmp_path):
    # 4 processes × 6 runs, released together: every run's rows in index.csv exactly once, none lost
    results = tmp_path / "results"
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pbs.eval.results import RunStore
        store = RunStore({str(results)!r})
        worker = int(sys.argv[1])
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        for i in range(6):
            rid = f"w{{worker}}-r{{i}}"
            metrics = {{"scores": {{"a": {{"metric": "acc", "score": float(i), "n_samples": 1}}}}}}
            store.save(rid, {{"model": {{"name": "m"}}, "method_name": "pbs"}}, "ok", {{}}, metrics=metrics)
        print("done")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], stdout=subprocess.PIPE, text=True)
             for w in range(4)]
    time.sleep(1.0)  # let every process reach the start line
    go.write_text("")
    assert all(p.communicate(timeout=120)[0].strip() == "done" for p in procs)
    with open(results / "index.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["level"] == "task"]
    ids = sorted(r["run_id"] for r in rows)
    assert ids == sorted(f"w{w}-r{i}" for w in range(4) for i in range(6))  # each once: none lost, none doubled
    assert not list(results.glob(".index.*.tmp"))  # no temporary index left behind
