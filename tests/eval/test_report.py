"""The plain-text method table printed by `make run` (pbs.eval.report) and results/tables/eval.md (make_tables)."""

import csv
import importlib.util
import json
from pathlib import Path

from pbs.eval.report import format_table, method_table
from pbs.eval.results import INDEX_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
OLD_FIELDS = ["run_id", "method", "method_kwargs", "status", "task", "score", "density", "prefill_ms", "error"]


def _write(path, rows, fields):
    with (path / "index.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def _row(run, task, score, level="task", metric="", method="pbs", kwargs=None, model="m"):
    return {"run_id": run, "model": model, "method": method, "status": "ok", "level": level, "task": task,
            "metric": metric, "score": str(score), "density": "0.5", "prefill_ms": "3", "error": "",
            "method_kwargs": json.dumps(kwargs or {"threshold": 0.9})}


def test_table_means_scores_and_shows_only_non_default_kwargs(tmp_path):
    rows = [
        {"run_id": "a", "method": "pbs", "method_kwargs": json.dumps({"threshold": 0.9, "permute": "none"}),
         "status": "ok", "task": "t1", "score": "40", "density": "0.5", "prefill_ms": "3", "error": ""},
        {"run_id": "a", "method": "pbs", "method_kwargs": json.dumps({"threshold": 0.9, "permute": "none"}),
         "status": "ok", "task": "t2", "score": "80", "density": "0.5", "prefill_ms": "3", "error": ""},
        {"run_id": "b", "method": "pbs", "method_kwargs": json.dumps({"threshold": 0.9, "permute": "key"}),
         "status": "ok", "task": "t1", "score": "100", "density": "0.25", "prefill_ms": "2", "error": ""},
    ]
    _write(tmp_path, rows, OLD_FIELDS)  # an index from before the level column
    table = method_table(tmp_path)
    by_id = {r["run_id"]: r for r in table}
    assert by_id["a"]["scores"] == {"other": 60.0} and by_id["b"]["scores"] == {"other": 100.0}
    lines = format_table(table).splitlines()
    line_a = next(line for line in lines if "60.00" in line)
    line_b = next(line for line in lines if "100.00" in line)
    assert "permute=none" in line_a and "threshold" not in line_a  # 0.9 is PBS's default
    assert "permute" not in line_b  # key is the default


def test_benchmarks_are_never_mixed(tmp_path):
    """A fixtures-like run: v1 datasets, v2 and a RULER task each aggregate on their own; LongBench = the mean of
    the category means (hotpotqa, musique -> multi 30; lcc -> code 60: 45, not the dataset mean 40)."""
    rows = [_row("a", "pbs_longbench_hotpotqa", 40), _row("a", "pbs_longbench_musique", 20),
            _row("a", "pbs_longbench_lcc", 60), _row("a", "pbs_longbench_v2", 16.7),
            _row("a", "pbs_longbench_v2_cot", 33.3), _row("a", "pbs_ruler_vt", 90)]
    _write(tmp_path, rows, INDEX_COLUMNS)  # no benchmark rows: recomputed from the task rows
    (run,) = method_table(tmp_path)
    assert run["scores"] == {"longbench": 45.0, "pbs_longbench_v2": 16.7, "pbs_longbench_v2_cot": 33.3,
                             "other": 90.0}
    rows += [_row("a", "pbs_longbench", 45.5, "benchmark", "average")]  # the stored average wins
    _write(tmp_path, rows, INDEX_COLUMNS)
    (run,) = method_table(tmp_path)
    assert run["scores"]["longbench"] == 45.5 and "pbs_longbench" not in run["tasks"]
    head = format_table([run]).splitlines()[0]
    assert "LongBench" in head and "v2_cot" in head


def test_eval_table_shows_categories_and_the_official_average(tmp_path):
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "scripts" / "make_tables.py")
    make_tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tables)
    rows = [_row("a", "pbs_longbench_hotpotqa", 40), _row("a", "pbs_longbench_musique", 20),
            _row("a", "pbs_longbench_lcc", 60), _row("a", "pbs_longbench_v2", 16.7),
            _row("a", "pbs_longbench_multi", 30, "category", "category_mean"),
            _row("a", "pbs_longbench_code", 60, "category", "category_mean"),
            _row("a", "pbs_longbench", 45, "benchmark", "average"),
            _row("a", "pbs_longbench", 40, "benchmark", "dataset_mean")]
    _write(tmp_path, rows, INDEX_COLUMNS)
    text = make_tables.eval_table(tmp_path / "index.csv")
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert header.split(" | ")[3:7] == ["Multi-Document QA", "Code Completion", "LongBench Avg", "pbs_longbench_v2"]
    line = next(line for line in text.splitlines() if line.startswith("| m | pbs"))
    assert " | 30.00 | 60.00 | 45.00 | 16.70 | 0.500 | 3.0 | a |" in line
    tasks = text.split("## Every task")[1]
    assert "pbs_longbench_hotpotqa" in tasks and "| 40.00 | 60.00 | 20.00 | 16.70 |" in tasks
    assert "category_mean" not in text and "dataset_mean" not in text
