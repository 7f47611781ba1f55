"""The speed benchmark's Hydra app end to end on CPU (a CI smoke test; the real run is on a GPU).

A 2-layer Llama from the shipped Llama-3.1-8B config (shrunk with ``config_overrides``, random fp32 weights), N = 512,
the torch backend and planners: every SDPA variant and every method in the fixed regime at a 0.5 budget, the
generate-protocol check, the proxy model in the adaptive regime on a RULER prompt, and one broken variant (an invalid
threshold) that must be recorded as failed and make the app exit 1. Then the same command with ``skip_done`` resumes:
nothing is left, nothing is re-measured, exit 0.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.speed.results import COLUMNS

ROOT = Path(__file__).resolve().parents[2]
SMOKE = """
defaults:
  - /schema/speed@_here_
  - _self_
models:
  tiny:
    config: models/configs/llama3.1-8b-instruct.json
    lengths: [512]
    config_overrides: {num_hidden_layers: 2, hidden_size: 128, intermediate_size: 256, num_attention_heads: 4,
                       num_key_value_heads: 2, head_dim: 32, vocab_size: 512, bos_token_id: 1, eos_token_id: 2}
  pbs-proxy-llama-v2: {path: models/pbs-proxy-llama-v2, regime: adaptive, prompt: ruler, lengths: [512]}
stages:
  - {models: [tiny]}
  - {models: [tiny], variants: [sdpa_flash, pbs], protocol: generate}
  - {models: [pbs-proxy-llama-v2], variants: [sdpa_flash, pbs]}
methods:
  pbs: {method: pbs, kwargs: {block_size: 32, segment_size: 64}}
  pbs_permute_none: {method: pbs, kwargs: {block_size: 32, segment_size: 64, permute: none}}
  pbs_permute_none_paper_density: {method: pbs, kwargs: {block_size: 32, segment_size: 64, permute: none}}
  pbs_permute_query: {method: pbs, kwargs: {block_size: 32, segment_size: 64, permute: query}}
  pbs_antidiagonal: {method: pbs, kwargs: {block_size: 32, segment_size: 64, scoring: antidiagonal, stride: 4}}
  meanpool: {method: meanpool, kwargs: {block_size: 32}}
  xattention: {method: xattention, kwargs: {block_size: 32, stride: 4}}
  minference: {method: minference, kwargs: {block_size: 32, last_q: 32, vertical_size: 64, slash_size: 64}}
  flexprefill: {method: flexprefill, kwargs: {block_size: 32}}
  broken: {method: pbs, kwargs: {threshold: -1.0}}
densities: {512: 0.5}
variant_densities: {pbs_permute_none_paper_density: {512: 0.75}}
device: cpu
dtype: float32
warmup: 1
reps: 2
max_reps: 2
"""
METHODS = ["pbs", "pbs_permute_none", "pbs_permute_none_paper_density", "pbs_permute_query", "pbs_antidiagonal", "meanpool", "xattention",
           "minference", "flexprefill"]


def _speed(tmp_path, *overrides):
    (tmp_path / "smoke.yaml").write_text(SMOKE)
    # one thread: the 2-core CI machine is shared, and thread-pool contention makes tiny forwards 100x slower
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "experiments.speed", "--config-dir", str(tmp_path), "--config-name", "smoke",
           f"out_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}", *overrides]
    return subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_app_end_to_end_then_resume(tmp_path):
    first = _speed(tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]  # the broken variant failed
    assert "TTFT: 100%" in first.stderr  # the progress bar ran to the end
    assert "FAILED (1):" in first.stdout and "threshold must be a number > 0" in first.stdout

    with open(tmp_path / "out" / "cpu.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS
        rows = {(r["model"], r["protocol"], r["variant"]): r for r in reader}
    expected = ({("tiny", "forward", v) for v in ["sdpa_cudnn", "sdpa_flash", "sdpa_efficient", *METHODS, "broken"]}
                | {("tiny", "generate", "sdpa_flash"), ("tiny", "generate", "pbs"),
                   ("pbs-proxy-llama-v2", "forward", "sdpa_flash"), ("pbs-proxy-llama-v2", "forward", "pbs")})
    assert set(rows) == expected
    assert rows["tiny", "forward", "broken"]["status"] == "failed"
    assert rows["tiny", "forward", "sdpa_cudnn"]["status"] == "unavailable"  # no cuDNN on a CPU: not a failure
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == len(rows) - 3  # cuDNN and efficient unavailable on CPU, broken failed
    for r in ok:
        assert r["seq_len"] == "512" and r["gpu"] == "cpu" and r["command"].startswith("python -m experiments.speed")
        ttft, att, plan = float(r["ttft_ms"]), float(r["attention_ms"]), float(r["plan_ms"])
        assert ttft > 0 and 0 < att < ttft and 0 <= plan < att
        assert float(r["rest_ms"]) == float(r["rest_ms"]) and float(r["attention_pct"]) < 100
        assert r["baseline"] == "sdpa_flash" and float(r["speedup"]) > 0
    for v in METHODS:  # fixed regime: the budget was applied, the measured density sits near it
        r, d = rows["tiny", "forward", v], 0.75 if v == "pbs_permute_none_paper_density" else 0.5
        assert r["regime"] == "fixed" and float(r["target_density"]) == d, v
        assert abs(float(r["density"]) - d) < 0.1, (v, r["density"])
        assert f'"budget": {d}' in r["kwargs"] and r["planner"] == "torch"
    proxy = rows["pbs-proxy-llama-v2", "forward", "pbs"]
    assert proxy["regime"] == "adaptive" and proxy["target_density"] == "" and 0 < float(proxy["density"]) < 1
    assert float(rows["tiny", "forward", "sdpa_flash"]["speedup"]) == 1.0

    md = (tmp_path / "out" / "cpu.md").read_text()
    for heading in ("## Provenance", "## tiny (fixed densities)", "## pbs-proxy-llama-v2 (adaptive densities)",
                    "## TTFT protocol check", "## Targets", "## Failed and unavailable runs"):
        assert heading in md, heading

    again = _speed(tmp_path, "merge=true", "skip_done=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the sweep is complete" in again.stdout
    with open(tmp_path / "out" / "cpu.csv", newline="") as fh:
        assert {(r["model"], r["protocol"], r["variant"]): r["date_utc"] for r in csv.DictReader(fh)} == {
            k: r["date_utc"] for k, r in rows.items()}  # kept, not re-measured
