"""The plain-text method table printed by `make run` (pbs.eval.report)."""

import csv
import json

from pbs.eval.report import format_table, method_table

FIELDS = ["run_id", "method", "method_kwargs", "status", "task", "score", "density", "prefill_ms", "error"]


def test_table_means_scores_and_shows_only_non_default_kwargs(tmp_path):
    rows = [
        {"run_id": "a", "method": "pbs", "method_kwargs": json.dumps({"threshold": 0.9, "permute": "none"}),
         "status": "ok", "task": "t1", "score": "40", "density": "0.5", "prefill_ms": "3", "error": ""},
        {"run_id": "a", "method": "pbs", "method_kwargs": json.dumps({"threshold": 0.9, "permute": "none"}),
         "status": "ok", "task": "t2", "score": "80", "density": "0.5", "prefill_ms": "3", "error": ""},
        {"run_id": "b", "method": "pbs", "method_kwargs": json.dumps({"threshold": 0.9, "permute": "key"}),
         "status": "ok", "task": "t1", "score": "100", "density": "0.25", "prefill_ms": "2", "error": ""},
    ]
    with (tmp_path / "index.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    table = method_table(tmp_path)
    by_id = {r["run_id"]: r for r in table}
    assert by_id["a"]["score"] == 60.0 and by_id["b"]["score"] == 100.0
    lines = format_table(table).splitlines()
    line_a = next(line for line in lines if "60.00" in line)
    line_b = next(line for line in lines if "100.00" in line)
    assert "permute=none" in line_a and "threshold" not in line_a  # 0.9 is PBS's default
    assert "permute" not in line_b  # key is the default
