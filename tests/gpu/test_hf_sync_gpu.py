"""pbs.hf on a GPU never synchronises in a prefill (CUDA only; ``pytest -m gpu``).

A synchronisation per layer would stall the CPU's launch queue and distort time-to-first-token
(``experiments/speed.py``). (1) The registered attention function of every method the speed benchmark runs, with its
fused planner, at the threshold and at a budget, runs under ``torch.cuda.set_sync_debug_mode("error")``, and its
record then equals ``pbs.sparse_attention``'s stats on the same inputs. (2) A whole bf16 forward of a Llama under
``pbs_pbs`` makes no more synchronising calls than the same forward under ``sdpa``, for 2 and for 4 layers
(whatever transformers itself does once per forward, pbs adds nothing per layer).
"""

import warnings

import pytest
import torch

import pbs
import pbs.hf

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run `pytest -m gpu` on a GPU machine"),
]

METHODS = [
    ("pbs", {}), ("pbs", {"permute": "none"}), ("pbs", {"permute": "query"}), ("pbs", {"scoring": "antidiagonal"}),
    ("meanpool", {}), ("xattention", {}), ("flexprefill", {}),
    ("minference", {"vertical_size": 100, "slash_size": 50}),  # density 0.11 at 4K (its defaults, or 300/500, cover every tile)
]


def _llama(layers: int):
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=1024, hidden_size=1024, intermediate_size=2048, num_hidden_layers=layers,
                                   num_attention_heads=8, num_key_value_heads=2, head_dim=128,
                                   max_position_embeddings=8192)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    return model


@pytest.mark.parametrize("budget", [None, 0.3])
@pytest.mark.parametrize("method,kwargs", METHODS, ids=[f"{m}{k or ''}" for m, k in METHODS])
def test_attention_function_does_not_synchronise(method, kwargs, budget):
    pbs.hf.register()
    model = _llama(1)
    kwargs = dict(kwargs, **({"budget": budget} if budget else {}))
    stats = pbs.hf.enable(model, method=method, short_seq_policy=False, **kwargs)
    from transformers import AttentionInterface

    fn = AttentionInterface._global_mapping[f"pbs_{method}"]
    attn = model.model.layers[0].self_attn
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, 8, 4096, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, 2, 4096, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, 2, 4096, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    with torch.no_grad():
        fn(attn, q, k, v, None, scaling=128 ** -0.5)  # compile and autotune outside the checked call
        torch.cuda.synchronize()
        stats.reset()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn(attn, q, k, v, None, scaling=128 ** -0.5)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        _, ref = pbs.sparse_attention(q, k, v, method, scale=128 ** -0.5, short_seq_policy=False, return_stats=True,
                                      **kwargs)
    (rec,) = stats.records
    assert ref.planner == "triton", ref.plan.planner_note
    assert rec["density"] == pytest.approx(ref.density, abs=1e-12) and rec["density"] < 1
    assert rec["per_head"] == pytest.approx(ref.per_head.mean(0).tolist(), abs=1e-12)


def _sync_warnings(model, ids) -> int:
    with torch.no_grad():
        model(ids, logits_to_keep=1)  # warm
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                model(ids, logits_to_keep=1)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught)


def test_forward_adds_no_synchronisation_per_layer():
    pbs.hf.register()
    ids = torch.randint(0, 1024, (1, 4096), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    counts = {}
    for layers in (2, 4):
        model = _llama(layers)
        counts["sdpa", layers] = _sync_warnings(model, ids)
        stats = pbs.hf.enable(model, method="pbs", short_seq_policy=False)
        counts["pbs", layers] = _sync_warnings(model, ids)
        assert len(stats.records) == 2 * layers and all(r["density"] < 1 for r in stats.records)
    assert counts["pbs", 2] == counts["pbs", 4] == counts["sdpa", 2] == counts["sdpa", 4], counts
