"""The TTFT app under torchrun with tensor parallelism, on the CPU (gloo, 2 processes; CI's check of the code path
that runs 256K / 512K on several GPUs): both ranks run the same forwards, rank 0 writes <gpu>-tp2.csv, the method's
density is the budget, and the single-process misuse is one clear error."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.speed import parallel

ROOT = Path(__file__).resolve().parents[2]
TP = """
defaults:
  - /schema/speed@_here_
  - _self_
models:
  tiny:
    config: models/configs/llama3.1-8b-instruct.json
    lengths: [256]
    config_overrides: {num_hidden_layers: 2, hidden_size: 128, intermediate_size: 256, num_attention_heads: 4,
                       num_key_value_heads: 2, head_dim: 32, vocab_size: 512, bos_token_id: 1, eos_token_id: 2}
stages:
  - {models: [tiny], variants: [sdpa_flash, pbs]}
methods:
  pbs: {method: pbs, kwargs: {block_size: 32, segment_size: 64}}
densities: {256: 0.6}
device: cpu
dtype: float32
backend: torch
warmup: 1
reps: 2
max_reps: 2
tensor_parallel: 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_under_torchrun_with_two_ranks(tmp_path):
    (tmp_path / "tp.yaml").write_text(TP)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "experiments.speed", "--config-dir", str(tmp_path), "--config-name", "tp", f"out_dir={tmp_path / 'out'}",
           f"tp_weights_dir={tmp_path / 'weights'}", f"hydra.run.dir={tmp_path / 'hydra'}", "progress=false"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone reports and writes
    with open(tmp_path / "out" / "cpu-tp2.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"sdpa_flash", "pbs"}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["pbs"]["command"].startswith("torchrun --nproc_per_node 2 -m experiments.speed")
    assert float(rows["pbs"]["ttft_ms"]) > 0 and float(rows["sdpa_flash"]["ttft_ms"]) > 0
    assert (tmp_path / "weights" / "tiny" / "config.json").exists()  # random weights saved once for the ranks

    # the same weights in one process: planning is per head, so the density (mean over heads) is the same
    one = [sys.executable, "-m", "experiments.speed", "--config-dir", str(tmp_path), "--config-name", "tp",
           f"out_dir={tmp_path / 'one'}", f"hydra.run.dir={tmp_path / 'hydra1'}", "progress=false",
           "tensor_parallel=1", "only_variants=[pbs]", f"models.tiny.path={tmp_path / 'weights' / 'tiny'}",
           "models.tiny.config=null", "models.tiny.config_overrides={}"]
    proc = subprocess.run(one, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with open(tmp_path / "one" / "cpu.csv") as f:
        single = next(csv.DictReader(f))
    assert 0 < float(single["density"]) < 1
    assert float(rows["pbs"]["density"]) == pytest.approx(float(single["density"]), abs=1e-6)


def test_tensor_parallel_outside_torchrun_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="tensor_parallel=2 .*torchrun"):
        parallel.init(2, "cpu")
