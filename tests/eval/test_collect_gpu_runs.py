"""scripts/collect_gpu_runs.py: finished runs and their logs from a device archive into a results folder."""

import csv
import json
import tarfile

import pytest

from tests.scripts import load_script


def _run(root, rid, status, score=50.0, error=None):
    d = root / "runs" / rid
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"status": status, "error": error, "device": "cuda:0"}))
    (d / "config.json").write_text(json.dumps({"method_name": "pbs", "method": {"threshold": 0.9},
                                               "model": {"name": "toy"}, "task": {"name": "ruler"}}))
    if status == "ok":
        (d / "metrics.json").write_text(json.dumps({"scores": {"vt": {"metric": "m", "score": score,
                                                                      "n_samples": 4}}}))


def _log(root, name, text):
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "logs" / name).write_text(text)


@pytest.fixture
def folders(tmp_path):
    source, into = tmp_path / "eval", tmp_path / "committed"
    _run(into, "aaaaaaaaaaaa", "ok")
    _log(into, "00_pbs.log", "== toy: 1 job: 1 ok, 0 failed\nan earlier session")
    _run(source, "aaaaaaaaaaaa", "ok")          # the same run again (a resumed machine): left as it is
    _run(source, "bbbbbbbbbbbb", "ok", 75.0)    # new
    _run(source, "cccccccccccc", "failed", error="ModuleNotFoundError: No module named 'pbs.x'\ntraceback")
    _run(source, "dddddddddddd", "running")
    _log(source, "00_pbs.log", "== toy: 1 job: 1 ok, 0 failed\nthis session")  # same name, other job
    _log(source, "01_pbs.log", "== toy: 1 job: 0 ok, 1 failed")
    return source, into


def test_collect_copies_finished_runs_and_logs_and_rebuilds_the_index(folders):
    source, into = folders
    out = load_script("collect_gpu_runs").collect(source, into)
    assert out["copied"] == ["bbbbbbbbbbbb"] and out["present"] == ["aaaaaaaaaaaa"]
    assert out["failed"] == ["cccccccccccc: ModuleNotFoundError: No module named 'pbs.x'"]
    assert out["unfinished"] == ["dddddddddddd (interrupted)"]  # "running" without a live claim
    assert sorted(p.name for p in (into / "runs").iterdir()) == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    # the earlier session's log stays; this session's log of the same name comes in beside it, the failed one not
    assert out["logs"] == ["00_pbs-2.log"]
    assert (into / "logs" / "00_pbs.log").read_text().endswith("an earlier session")
    assert (into / "logs" / "00_pbs-2.log").read_text().endswith("this session")
    with open(into / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run_id"], r["score"]) for r in rows if r["level"] == "task"] == [("aaaaaaaaaaaa", "50.0"),
                                                                               ("bbbbbbbbbbbb", "75.0")]
    # a second collect of the same archive changes nothing
    again = load_script("collect_gpu_runs").collect(source, into)
    assert again["copied"] == [] and again["logs"] == [] and len(again["present"]) == 2


def test_collect_refuses_two_results_for_one_run_id(folders):
    source, into = folders
    (source / "runs" / "aaaaaaaaaaaa" / "status.json").write_text(json.dumps({"status": "ok", "error": None,
                                                                            "device": "cpu"}))
    with pytest.raises(ValueError, match="run aaaaaaaaaaaa already in .* with another status.json"):
        load_script("collect_gpu_runs").collect(source, into)
    # refused before copying anything: the new run is not there, the index not rebuilt
    assert sorted(p.name for p in (into / "runs").iterdir()) == ["aaaaaaaaaaaa"]
    assert not (into / "index.csv").exists()


def test_main_reads_the_archive(folders, tmp_path, capsys):
    source, into = folders
    archive = tmp_path / "eval.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(source, arcname="eval")
    assert load_script("collect_gpu_runs").main([str(archive), "--into", str(into)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("1 runs copied, 1 already there, 1 logs; 1 failed, 1 unfinished")
    assert "failed  cccccccccccc: ModuleNotFoundError" in printed
    with pytest.raises(SystemExit):
        load_script("collect_gpu_runs").main([str(tmp_path / "missing.tar.xz")])
    assert "archive=" in capsys.readouterr().err
