"""The speed benchmark on a GPU before the real sweep (CUDA only; ``pytest -m gpu``, about a minute).

A 4-layer model of Llama-3.1-8B's attention shape (32 q / 8 KV heads, D = 128; hidden and MLP shrunk), random bf16
weights built on the GPU, N = 8192 at the paper's density there (0.579): every SDPA backend (cuDNN / flash /
efficient: ok, or unavailable for these inputs, never failed) and the methods through their fused planners, the
forward and generate protocols; checks statuses, the fused planner, densities at the budget, attention's share,
planning inside attention, peak memory, speedups against the fastest SDPA, and the files.
"""

import pytest
import torch

from benchmarks.report import gpu_slug
from benchmarks.speed.config import SpeedConfig, SpeedModel, Stage
from benchmarks.speed.results import read_csv
from benchmarks.speed.sweep import run_sweep

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run `pytest -m gpu` on a GPU machine"),
]
SMALL = {"num_hidden_layers": 4, "hidden_size": 1024, "intermediate_size": 2048, "vocab_size": 32000,
         "bos_token_id": 1, "eos_token_id": 2}
METHODS = ["pbs", "pbs_permute_none", "pbs_antidiagonal", "meanpool", "xattention", "minference", "flexprefill"]


def test_sweep_on_the_gpu(tmp_path):
    model = SpeedModel(config="models/configs/llama3.1-8b-instruct.json", lengths=[8192], config_overrides=SMALL)
    cfg = SpeedConfig(models={"small": model},
                      stages=[Stage(["small"]), Stage(["small"], ["sdpa_cudnn", "pbs"], protocol="generate")],
                      out_dir=str(tmp_path), progress=False)
    rows, not_started = run_sweep(cfg, {"gpu": torch.cuda.get_device_name(0)})
    assert not_started == 0 and len(rows) == 11 + 2
    by = {(r["protocol"], r["variant"]): r for r in rows}
    for name in ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient"):
        assert by["forward", name]["status"] in ("ok", "unavailable"), by["forward", name]["error"]
    assert by["forward", "sdpa_cudnn"]["status"] == "ok"  # cuDNN runs GQA bf16 causal on Hopper (torch >= 2.5)
    for r in rows:
        if r["status"] != "ok":
            assert r["variant"].startswith("sdpa_") and r["status"] == "unavailable", (r["variant"], r["error"])
            continue
        assert r["peak_mem_gib"] > 0 and r["reps"] >= 5 and r["p10_ms"] <= r["ttft_ms"] <= r["p90_ms"]
        assert 0 < r["attention_pct"] < 100 and r["speedup"] > 0 and r["baseline"].startswith("sdpa_")
    for name in METHODS:
        r = by["forward", name]
        assert r["status"] == "ok", r["error"]
        assert r["planner"] == "triton", r["planner"]  # the fused planner, no fallback
        assert r["density"] == pytest.approx(0.579, abs=0.05) and r["target_density"] == 0.579
        assert 0 < r["plan_ms"] < r["attention_ms"]
    assert {r["variant"] for r in read_csv(tmp_path / f"{gpu_slug(rows[0]['gpu'])}.csv")} == {
        r["variant"] for r in rows}
