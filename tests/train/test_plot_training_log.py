"""scripts/plot_training_log.py draws both proxies' committed training logs (Step 4's has no perplexity column)."""

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from plot_training_log import main


@pytest.mark.parametrize("log", ["models/pbs-proxy-llama-v2/training_log.csv", "results/proxy/training_log.csv"])
def test_plots_every_evaluation_of_a_committed_log(tmp_path, log):
    with open(ROOT / log) as f:
        evaluations = sum(1 for r in csv.DictReader(f) if r.get("eval_acc") or r.get("heldout_ppl"))
    png = tmp_path / "loss.png"
    assert main(str(ROOT / log), str(png), footer="GPU, versions, date, command") == evaluations > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
