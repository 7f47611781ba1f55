"""The transformers integration (pbs.hf): tiny randomly initialised models built from configs, fp32 on CPU.

Every method at its densest setting must reproduce the same model under attn_implementation="sdpa": one-shot
prefill, greedy generation, chunked prefill through a DynamicCache, padded batches, StaticCache generation.
"""

import subprocess
import sys
import warnings

import pytest
import torch
import transformers
from transformers import DynamicCache

import pbs
import pbs.hf
from tests.reference import DENSEST

SPARSE = {
    "full": {},
    "pbs": dict(threshold=0.9, block_size=16, segment_size=32),
    "meanpool": dict(threshold=0.9, block_size=16),
    "xattention": dict(threshold=0.9, block_size=16, stride=4),
    "minference": dict(vertical_size=16, slash_size=16, last_q=16, block_size=16),
    "flexprefill": dict(gamma=0.9, block_size=16),
    "oracle": dict(threshold=0.9, block_size=16, segment_size=32),
}
METHODS = sorted(DENSEST)
FAMILIES = ["llama", "qwen2", "qwen3", "mistral"]
VOCAB = 128
TOL = dict(rtol=1e-5, atol=1e-5)
SHARPEN = {"proj": 32.0, "norm": 8.0}  # q/k scale-up (on the q/k RMSNorm weights for Qwen3)

# the tests pass past_key_values= (deprecated in favour of cache= in recent 5.x, still accepted there and in 4.5x)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def test_methods_covered():
    assert set(DENSEST) == set(SPARSE) == set(pbs.available_methods())


def _model(family: str = "llama", seed: int = 0):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, attn_implementation="sdpa")
    if family == "llama":
        cfg = transformers.LlamaConfig(head_dim=16, **common)
        cls = transformers.LlamaForCausalLM
    elif family == "qwen2":  # head_dim = hidden / heads = 16
        cfg = transformers.Qwen2Config(use_sliding_window=False, **common)
        cls = transformers.Qwen2ForCausalLM
    elif family == "qwen3":  # q/k RMSNorm before RoPE
        cfg = transformers.Qwen3Config(head_dim=16, use_sliding_window=False, **common)
        cls = transformers.Qwen3ForCausalLM
    elif family == "mistral":
        cfg = transformers.MistralConfig(head_dim=16, sliding_window=None, **common)
        cls = transformers.MistralForCausalLM
    else:
        raise AssertionError(family)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # sharper attention than the default init (near-uniform), so that sparse settings select
        for layer in model.model.layers:  # visibly fewer blocks than dense
            attn = layer.self_attn
            kind = "norm" if hasattr(attn, "q_norm") else "proj"
            for name in ("q_norm", "k_norm") if kind == "norm" else ("q_proj", "k_proj"):
                getattr(attn, name).weight.mul_(SHARPEN[kind])
    model.generation_config.pad_token_id = 0
    return model


def _ids(n: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", autouse=True)
def _registered():
    pbs.hf.register()


# ------------------------------------------------------------------------------------------------ registration


def test_import_pbs_does_not_import_transformers():
    code = "import sys, pbs, pbs.hf; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_names_and_idempotent():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    names = pbs.hf.register()
    assert set(names) == {f"pbs_{m}" for m in pbs.available_methods()} | {"pbs"}
    fns = {n: AttentionInterface._global_mapping[n] for n in names}
    assert pbs.hf.register() == names
    for n in names:
        assert AttentionInterface._global_mapping[n] is fns[n]
        assert AttentionMaskInterface._global_mapping[n] is pbs.hf.mask_function
    assert fns["pbs"]._pbs_method == "pbs" and fns["pbs_xattention"]._pbs_method == "xattention"


def test_mask_function_never_builds_nxn():
    f = pbs.hf.mask_function
    ones = torch.ones(2, 7, dtype=torch.bool)
    left = ones.clone()
    left[0, :3] = False
    # 5.x keywords
    assert f(batch_size=2, q_length=7, kv_length=7, q_offset=0, kv_offset=0, attention_mask=None) is None
    assert f(batch_size=2, q_length=7, kv_length=7, attention_mask=ones) is None
    assert torch.equal(f(batch_size=2, q_length=7, kv_length=7, attention_mask=left), left)
    # StaticCache: buffer of 16, 5 tokens seen + 2 new -> valid length 7
    out = f(batch_size=2, q_length=2, kv_length=16, q_offset=torch.tensor(5), attention_mask=None, device="cpu")
    assert out.shape == (2, 7) and out.all()
    assert f(batch_size=2, q_length=7, kv_length=16, attention_mask=ones).shape == (2, 7)
    # 4.5x keywords (cache_position instead of q_length / q_offset), and positional 4.5x order
    assert f(batch_size=2, cache_position=torch.arange(7), kv_length=7, attention_mask=None) is None
    assert f(batch_size=2, cache_position=torch.arange(5, 7), kv_length=16, attention_mask=None).shape == (2, 7)
    assert torch.equal(f(2, torch.arange(7), 7, 0, None, left), left)


# ----------------------------------------------------------------------------------------- logits and generation


@pytest.mark.parametrize("family", FAMILIES)
def test_densest_logits_equal_sdpa(family):
    model = _model(family)
    ids = _ids(100)
    with torch.no_grad():
        ref = model(ids).logits
        for method in METHODS:
            stats = pbs.hf.enable(model, method=method, **DENSEST[method])
            assert model.config._attn_implementation == f"pbs_{method}"
            out = model(ids).logits
            torch.testing.assert_close(out, ref, **TOL, msg=lambda m, method=method: f"{family}/{method}: {m}")
            assert [r["path"] for r in stats.records] == ["prefill", "prefill"]
            assert [r["layer"] for r in stats.records] == [0, 1]
            pbs.hf.disable(model)
    assert model.config._attn_implementation == "sdpa" and not hasattr(model.config, "pbs")


@pytest.mark.parametrize("method", METHODS)
def test_generate(method):
    model = _model("llama")
    ids = _ids(100, seed=2)
    kw = dict(max_new_tokens=5, do_sample=False)
    with torch.no_grad():
        ref = model.generate(ids, **kw)
        stats = pbs.hf.enable(model, method=method, **SPARSE[method])
        sparse = model.generate(ids, **kw)  # runs; tokens may differ from dense
        assert sparse.shape == ref.shape
        paths = [r["path"] for r in stats.records]
        assert paths[:2] == ["prefill", "prefill"] and set(paths[2:]) == {"decode"} and len(paths) == 2 * 5
        pbs.hf.enable(model, method=method, **DENSEST[method])
        assert torch.equal(model.generate(ids, **kw), ref)


@pytest.mark.parametrize("family", ["qwen3", "mistral"])
def test_generate_other_families(family):
    model = _model(family)
    ids = _ids(90, seed=3)
    kw = dict(max_new_tokens=5, do_sample=False)
    with torch.no_grad():
        ref = model.generate(ids, **kw)
        pbs.hf.enable(model, method="pbs", **DENSEST["pbs"])
        assert torch.equal(model.generate(ids, **kw), ref)


def test_generate_static_cache():
    """StaticCache: key/value buffers are longer than the prompt; the valid length comes through the mask."""
    model = _model("llama")
    ids = _ids(70, seed=4)
    kw = dict(max_new_tokens=5, do_sample=False, cache_implementation="static")
    with torch.no_grad():
        ref = model.generate(ids, **kw)
        stats = pbs.hf.enable(model, method="xattention", **DENSEST["xattention"])
        assert torch.equal(model.generate(ids, **kw), ref)
    first = stats.records[0]
    assert first["path"] == "prefill" and first["kv_len"] == 70 and first["q_len"] == 70


@pytest.mark.parametrize("method", METHODS)
def test_chunked_prefill_equals_one_shot(method):
    model = _model("llama")
    ids = _ids(100, seed=5)
    with torch.no_grad():
        stats = pbs.hf.enable(model, method=method, **DENSEST[method])
        one_shot = model(ids).logits[:, 60:]
        cache = DynamicCache()
        model(ids[:, :60], past_key_values=cache, use_cache=True)
        second = model(ids[:, 60:], past_key_values=cache, use_cache=True).logits
    torch.testing.assert_close(second, one_shot, **TOL)
    chunk = [r for r in stats.records if r["path"] == "chunk"]
    assert [(r["q_len"], r["kv_len"]) for r in chunk] == [(40, 100), (40, 100)]


@pytest.mark.parametrize("setting", ["densest", "sparse"])
@pytest.mark.parametrize("method", METHODS)
def test_left_padded_batch_equals_alone(method, setting):
    model = _model("llama")
    kwargs = (DENSEST if setting == "densest" else SPARSE)[method]
    a, b = _ids(100, seed=6), _ids(73, seed=7)
    ids = torch.zeros(2, 100, dtype=torch.long)
    mask = torch.zeros(2, 100, dtype=torch.long)
    ids[0], mask[0] = a[0], 1
    ids[1, 27:], mask[1, 27:] = b[0], 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        stats = pbs.hf.enable(model, method=method, **kwargs)
        batch = model(ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        alone = [model(x).logits[0, -1] for x in (a, b)]
    for row in range(2):
        torch.testing.assert_close(batch[row], alone[row], **TOL)
    assert stats.records[0]["padded"] and stats.records[0]["path"] == "prefill"


def test_right_padded_batch_equals_alone():
    model = _model("qwen3")
    a, b = _ids(80, seed=8), _ids(50, seed=9)
    ids = torch.zeros(2, 80, dtype=torch.long)
    mask = torch.zeros(2, 80, dtype=torch.long)
    ids[0], mask[0] = a[0], 1
    ids[1, :50], mask[1, :50] = b[0], 1
    with torch.no_grad():
        pbs.hf.enable(model, method="pbs", **SPARSE["pbs"])
        batch = model(ids, attention_mask=mask).logits
        torch.testing.assert_close(batch[0], model(a).logits[0], **TOL)
        torch.testing.assert_close(batch[1, :50], model(b).logits[0], **TOL)


def test_left_padded_generate_equals_alone():
    """Padding through prefill and decode: each row's greedy tokens are those of its prompt alone."""
    model = _model("llama")
    a, b = _ids(60, seed=10), _ids(41, seed=11)
    ids = torch.zeros(2, 60, dtype=torch.long)
    mask = torch.zeros(2, 60, dtype=torch.long)
    ids[0], mask[0] = a[0], 1
    ids[1, 19:], mask[1, 19:] = b[0], 1
    kw = dict(max_new_tokens=5, do_sample=False)
    with torch.no_grad():
        pbs.hf.enable(model, method="meanpool", **SPARSE["meanpool"])
        batch = model.generate(ids, attention_mask=mask, **kw)
        for row, x in enumerate((a, b)):
            assert torch.equal(batch[row, -5:], model.generate(x, **kw)[0, -5:])


# ----------------------------------------------------------------------------------- loading, stats and errors


def test_from_pretrained_after_save(tmp_path):
    model = _model("llama")
    ids = _ids(100, seed=12)
    with torch.no_grad():
        ref = model(ids).logits
    model.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="pbs_meanpool").eval()
    assert loaded.config._attn_implementation == "pbs_meanpool"
    with torch.no_grad():
        # meanpool's default block_size=128 covers N=100 in one block: every causal tile is computed
        torch.testing.assert_close(loaded(ids).logits, ref, **TOL)
    # settings written by enable() travel through save_pretrained
    pbs.hf.enable(model, method="xattention", **DENSEST["xattention"])
    model.save_pretrained(tmp_path / "x")
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "x", attn_implementation="pbs_xattention")
    assert loaded.config.pbs["method"] == "xattention" and loaded.config.pbs["kwargs"]["stride"] == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, ref, **TOL)


def test_stats_collector_densities():
    model = _model("llama")
    ids = _ids(256, seed=13)
    with torch.no_grad():
        stats = pbs.hf.enable(model, method="xattention", threshold=0.5, block_size=16, stride=4)
        model(ids)
        model(ids[:, :200])
    assert model._pbs_stats is stats
    assert len(stats.records) == 4 and stats.num_calls == 2
    first = stats.records[0]
    assert first["method"] == "xattention" and first["q_len"] == first["kv_len"] == 256
    assert len(first["per_head"]) == 4 and first["dense_fallback"] is None
    summary = stats.summary()
    assert set(summary["per_layer"]) == {0, 1}
    assert all(0 < d < 1 for d in summary["per_layer"].values())
    assert 0 < summary["mean_density"] < 1
    assert summary["paths"] == {"prefill": 4}
    stats.reset()
    assert stats.records == [] and stats.summary()["mean_density"] is None


@pytest.mark.parametrize(
    "method,kwargs,name",
    [("pbs", dict(thresh=0.5), "thresh"), ("pbs", dict(block_size=10), "block_size"),
     ("xattention", dict(stride=3), "stride"), ("minference", dict(vertical_size=0), "vertical_size"),
     ("nope", {}, "method"), ("pbs", dict(backend="cuda"), "backend")],
)
def test_enable_bad_kwargs(method, kwargs, name):
    model = _model("llama")
    with pytest.raises(ValueError, match=name):
        pbs.hf.enable(model, method=method, **kwargs)
    assert model.config._attn_implementation == "sdpa"


def test_enable_with_a_config_instance_equals_kwargs():
    """A config built once (e.g. from Hydra) passes through unchanged; it must be the method's own dataclass."""
    ids = _ids(256, seed=13)
    model = _model("llama")
    with torch.no_grad():
        by_kwargs = pbs.hf.enable(model, method="xattention", threshold=0.5, block_size=16, stride=4)
        ref = model(ids).logits
        stored = dict(model.config.pbs)
        by_config = pbs.hf.enable(model, method="xattention",
                                  config=pbs.XAttentionConfig(threshold=0.5, block_size=16, stride=4))
        torch.testing.assert_close(model(ids).logits, ref, rtol=0, atol=0)
    assert model.config.pbs == stored and model.config.pbs["kwargs"]["stride"] == 4
    assert by_config.summary()["per_layer"] == by_kwargs.summary()["per_layer"]
    with pytest.raises(ValueError, match="config must be a XAttentionConfig"):
        pbs.hf.enable(model, method="xattention", config=pbs.PBSConfig())
    with pytest.raises(ValueError, match="either as config or as kwargs"):
        pbs.hf.enable(model, method="pbs", config=pbs.PBSConfig(), threshold=0.5)


def test_sliding_window_rejected():
    model = _model("mistral")
    model.config.sliding_window = 32
    pbs.hf.enable(model, method="pbs")
    with torch.no_grad(), pytest.raises(ValueError, match="sliding"):
        model(_ids(40))


def test_dropout_rejected():
    model = _model("llama")
    fn = transformers.AttentionInterface._global_mapping["pbs_pbs"]
    q = torch.randn(1, 4, 8, 16)
    k = v = torch.randn(1, 2, 8, 16)
    attn = model.model.layers[0].self_attn
    with pytest.raises(ValueError, match="dropout"):
        fn(attn, q, k, v, None, scaling=0.25, dropout=0.1)
    out, weights = fn(attn, q, k, v, None, scaling=0.25, dropout=0.0)
    assert out.shape == (1, 8, 4, 16) and weights is None


def test_grad_mode_warns_once_and_runs():
    model = _model("llama")
    pbs.hf.enable(model, method="pbs", **DENSEST["pbs"])
    pbs.hf._WARNED.discard("grad")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(_ids(40))
    assert any("inference-only" in str(w.message) for w in caught)
