"""The results table printed after a sweep and by `python -m pbs.eval.report`, and results/tables/eval.md
(make_tables): model, task, length and n columns, each benchmark scored on its own, the latest run per setting,
committed runs only."""

import csv
import json
import subprocess

from pbs.eval.report import format_table, main, report_rows, rows_from_index
from pbs.eval.results import INDEX_COLUMNS, RunStore
from tests.scripts import load_script


def _write(path, rows, fields=INDEX_COLUMNS):
    with (path / "index.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def _row(run, task, score, level="task", metric="", method="pbs", kwargs=None, model="m", length="", n="2",
         task_name="fixtures", date="2026-01-01T00:00:00Z", device="cuda:0"):
    return {"run_id": run, "model": model, "method": method, "status": "ok", "level": level, "task": task,
            "metric": metric, "score": str(score), "density": "0.5", "prefill_ms": "3", "error": "", "length": length,
            "n_samples": n, "task_name": task_name, "date_utc": date, "device": device,
            "method_kwargs": json.dumps(kwargs or {"threshold": 0.9})}


def _make_tables():
    return load_script("make_tables")


def test_benchmarks_are_never_mixed_and_lengths_get_their_own_rows(tmp_path):
    """LongBench v1 (the mean of the category means: multi 30, code 60 -> 45, not the dataset mean 40), v2 accuracy
    and the RULER-style tasks each on their own; RULER per length (the mean over tasks) and over all lengths."""
    rows = [_row("a", "pbs_longbench_hotpotqa", 40), _row("a", "pbs_longbench_musique", 20),
            _row("a", "pbs_longbench_lcc", 60), _row("a", "pbs_longbench_v2", 16.7, n="6"),
            _row("r", "pbs_ruler_vt", 90, task_name="ruler", n="4"),
            _row("r", "pbs_ruler_kv_retrieval", 50, task_name="ruler", n="4"),
            _row("r", "", 80, "aggregate", "mean_task_score", length="2048", n="4", task_name="ruler"),
            _row("r", "", 60, "aggregate", "mean_task_score", length="4096", n="4", task_name="ruler")]
    _write(tmp_path, rows)
    table = {(r["run_id"], r["task"], r["length"]): (r["score"], r["n"]) for r in report_rows(tmp_path)}
    assert table == {("a", "longbench", ""): (45.0, 6), ("a", "longbench_v2", ""): (16.7, 6),
                     ("r", "ruler", 2048): (80.0, 4), ("r", "ruler", 4096): (60.0, 4), ("r", "ruler", "all"): (70.0, 8)}
    rows.append(_row("a", "pbs_longbench", 45.5, "benchmark", "average"))  # the stored average wins
    _write(tmp_path, rows)
    assert next(r["score"] for r in report_rows(tmp_path) if r["task"] == "longbench") == 45.5
    head = format_table(report_rows(tmp_path)).splitlines()[0].split()
    assert head[:6] == ["model", "method", "settings", "task", "length", "n"] and "score" in head


def test_settings_show_only_non_default_kwargs_and_cpu_times_carry_the_caveat(tmp_path):
    rows = [_row("a", "t1", 40, kwargs={"threshold": 0.9, "permute": "none"}, device="cpu"),
            _row("b", "t1", 100, kwargs={"threshold": 0.9, "permute": "key"}, device="cpu")]
    _write(tmp_path, rows)
    by_id = {r["run_id"]: r for r in report_rows(tmp_path)}
    assert by_id["a"]["settings"] == "permute=none" and by_id["b"]["settings"] == ""  # key, 0.9: PBS's defaults
    text = format_table(list(by_id.values()))
    assert "40.00" in text and "not a speed figure" in text and "3.0*" in text


def test_the_latest_run_of_a_setting_is_shown_unless_all(tmp_path, capsys):
    rows = [_row("old", "t1", 10, date="2026-01-01T00:00:00Z"), _row("new", "t1", 20, date="2026-02-01T00:00:00Z"),
            _row("other", "t1", 30, kwargs={"threshold": 0.5})]
    _write(tmp_path, rows)
    assert {r["run_id"] for r in report_rows(tmp_path)} == {"new", "other"}
    assert {r["run_id"] for r in report_rows(tmp_path, latest_only=False)} == {"old", "new", "other"}
    assert main([str(tmp_path), "--all"]) == 0 and "10.00" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing")]) == 1 and "no results" in capsys.readouterr().out


def test_a_failed_run_shows_its_reason(tmp_path):
    row = dict(_row("f", "", ""), status="failed", error="DataFormatError: x.jsonl, line 2", level="")
    _write(tmp_path, [row])
    (r,) = report_rows(tmp_path)
    assert r["score"] is None and "failed  DataFormatError: x.jsonl, line 2" in format_table([r])


def test_eval_table_shows_categories_and_the_official_average():
    rows = [_row("a", "pbs_longbench_hotpotqa", 40), _row("a", "pbs_longbench_musique", 20),
            _row("a", "pbs_longbench_lcc", 60), _row("a", "pbs_longbench_v2", 16.7),
            _row("a", "pbs_longbench_multi", 30, "category", "category_mean"),
            _row("a", "pbs_longbench_code", 60, "category", "category_mean"),
            _row("a", "pbs_longbench", 45, "benchmark", "average"),
            _row("a", "pbs_longbench", 40, "benchmark", "dataset_mean")]
    text = _make_tables().eval_table(rows, "results/eval")
    assert "| m | pbs | — | longbench | — | 6 | 45.00 | 0.500 | 3.0 | a |" in text
    assert "| m | pbs | — | longbench_v2 | — | 2 | 16.70 | 0.500 | 3.0 | a |" in text
    cats = text.split("## LongBench categories")[1].split("##")[0]
    assert "Multi-Document QA | Code Completion | Avg" in cats and "| 30.00 | 60.00 | 45.00 | a |" in cats
    tasks = text.split("## Every task")[1]
    assert "pbs_longbench_hotpotqa" in tasks and "| 40.00 | 60.00 | 20.00 | 16.70 | a |" in tasks
    assert rows_from_index(rows)[0]["model"] == "m"


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_make_tables_reads_committed_runs_only(tmp_path):
    """A run of your own in results/eval/ (untracked, or a committed one edited) never reaches the tables."""
    results = tmp_path / "results"
    store = RunStore(results / "eval")
    metrics = {"scores": {"pbs_longbench_hotpotqa": {"metric": "qa_f1_score", "score": 40.0, "n_samples": 2}},
               "longbench": {"multi": 40.0, "average": 40.0, "dataset_mean": 40.0, "n_datasets": 1}}
    config = {"model": {"name": "m"}, "method": {"threshold": 0.9}, "method_name": "pbs", "task": {"name": "lb"}}
    store.save("committed000", config, "ok", {}, metrics=metrics)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "results")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "runs")
    store.save("untracked000", dict(config, method={"threshold": 0.5}), "ok", {}, metrics=metrics)
    make_tables = _make_tables()
    make_tables.main(["--results", str(results)])
    text = (results / "tables" / "eval.md").read_text()
    assert "committed000" in text and "untracked000" not in text
    assert make_tables.committed(results / "eval") >= {"runs/committed000/status.json"}
    (results / "eval" / "runs" / "committed000" / "status.json").write_text('{"status": "ok", "edited": true}')
    assert "runs/committed000/status.json" not in make_tables.committed(results / "eval")
