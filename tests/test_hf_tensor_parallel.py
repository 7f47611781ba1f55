"""pbs.hf under transformers' tensor parallelism (``tp_plan="auto"``), CPU, gloo, 2 processes via torchrun.

Each rank holds half of the attention heads and runs the sparse method on them; planning is per head, so the
tensor-parallel logits must equal the single-process model's with the same method, and each rank's statistics must
cover its own heads only.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM
    import pbs.hf

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = AutoModelForCausalLM.from_pretrained({model!r}, tp_plan="auto", dtype=torch.float32)
    collector = pbs.hf.enable(model, "pbs", backend="torch", block_size=16, segment_size=32, threshold=0.5)
    ids = torch.load({ids!r})
    with torch.no_grad():
        logits = model(ids).logits
    heads = {{r["layer"]: len(r["per_head"]) for r in collector.records}}
    if rank == 0:
        torch.save(logits, {out!r})
    with open({out!r} + f".rank{{rank}}.json", "w") as f:
        json.dump({{"heads_per_layer": heads, "world": dist.get_world_size()}}, f)
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=128, max_position_embeddings=512)
    model = LlamaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    return path, model


def test_tensor_parallel_pbs_equals_the_single_process_model(tiny_llama, tmp_path):
    import pbs.hf

    path, model = tiny_llama
    ids = torch.randint(0, 128, (1, 256), generator=torch.Generator().manual_seed(1))
    torch.save(ids, tmp_path / "ids.pt")
    out = str(tmp_path / "logits.pt")
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT), model=str(path), ids=str(tmp_path / "ids.pt"), out=out))
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(script)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    collector = pbs.hf.enable(model, "pbs", backend="torch", block_size=16, segment_size=32, threshold=0.5)
    with torch.no_grad():
        want = model(ids).logits
    got = torch.load(out)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    # the sparse path really ran (density < 1 somewhere), on 2 of the 4 query heads per rank
    assert min(r["density"] for r in collector.records) < 1.0
    for rank in (0, 1):
        info = json.loads(Path(f"{out}.rank{rank}.json").read_text())
        assert info["world"] == 2
        assert set(info["heads_per_layer"].values()) == {2}, info
