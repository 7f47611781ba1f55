"""The speed benchmark's parts on CPU: settings, run order, model building, the attention probe, speedups and merging,
the time budget, the report and plots from a fixture CSV, the Table 7 layout from the kernel benchmark's CSV, and
``make reproduce-tables`` without and with speed results. (The app end to end: ``test_speed_app.py``.)"""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import pbs.hf
from benchmarks.config import MethodVariant
from benchmarks.speed import paper
from benchmarks.speed.config import LLAMA, PAPER_DENSITIES, PROXY, QWEN3, QWEN25, SpeedConfig, SpeedModel, Stage
from benchmarks.speed.models import architecture, hf_config, load_model, prompt_ids
from benchmarks.speed.probe import AttentionProbe
from benchmarks.speed.report import speed_markdown, table7_rows, write_report
from benchmarks.speed.results import add_speedups, merge_rows, new_row, read_csv, summary, write_csv
from benchmarks.speed.runs import forwards_per_run, plan_runs
from benchmarks.speed.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[2]
TINY = {"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 512, "bos_token_id": 1, "eos_token_id": 2}
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _tiny_spec(**kw):
    return SpeedModel(config="models/configs/llama3.1-8b-instruct.json", lengths=[256], config_overrides=TINY, **kw)


# ------------------------------------------------------------------------------------------------------- settings


def test_default_settings_are_the_papers():
    cfg = SpeedConfig()
    assert cfg.densities == {8192: 0.579, 16384: 0.485, 32768: 0.405, 65536: 0.287, 131072: 0.219}
    assert cfg.variant_names() == ["sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "pbs", "pbs_permute_none",
                                   "pbs_permute_none_paper_density", "pbs_permute_query", "pbs_antidiagonal", "meanpool", "xattention", "minference",
                                   "flexprefill"]
    assert cfg.method_kwargs("pbs_antidiagonal", 131072, "fixed") == ("pbs", {"scoring": "antidiagonal",
                                                                             "budget": 0.219})
    assert cfg.method_kwargs("xattention", 8192, "adaptive") == ("xattention", {})  # its defaults: stride 8, τ 0.9
    # Table 5 without permutation (block counts 1,350 / 2,080 ... 134,270 / 524,800): its own budgets
    assert cfg.method_kwargs("pbs_permute_none_paper_density", 131072, "fixed") == ("pbs", {"permute": "none",
                                                                                           "budget": 0.256})
    assert round(1350 / 2080, 3) == cfg.density("pbs_permute_none_paper_density", 8192)
    assert {m: s.regime for m, s in cfg.models.items()} == {LLAMA: "fixed", QWEN3: "fixed", QWEN25: "fixed",
                                                             PROXY: "adaptive"}
    assert cfg.reps >= 5 and not cfg.short_seq_policy


@pytest.mark.parametrize("kwargs,name", [
    ({"only_models": ["gpt2"]}, "only_models"), ({"sdpa_variants": ["sdpa_math"]}, "sdpa_variants"),
    ({"methods": {"x": MethodVariant("pbs", {"thresh": 0.5})}}, "thresh"), ({"densities": {8192: 1.5}}, "densities"),
    ({"stages": [Stage(["nope"])]}, "stages"), ({"max_reps": 2}, "max_reps"), ({"dtype": "bf17"}, "dtype"),
    ({"time_budget_s": 0}, "time_budget_s"), ({"methods": {"sdpa_flash": MethodVariant("pbs")}}, "SDPA"),
    ({"variant_densities": {"nope": {8192: 0.5}}}, "variant_densities"),
    ({"variant_densities": {"pbs": {8192: 0}}}, "variant_densities.pbs"),
])
def test_bad_settings_name_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SpeedConfig(**kwargs)


def test_bad_model_settings():
    with pytest.raises(ValueError, match="exactly one of config"):
        SpeedModel()
    with pytest.raises(ValueError, match="regime"):
        SpeedModel(config="x.json", regime="sometimes")
    with pytest.raises(ValueError, match="tokenizer"):
        SpeedModel(config="x.json", prompt="ruler")
    with pytest.raises(ValueError, match="densities"):
        SpeedConfig().method_kwargs("pbs", 4096, "fixed")


def test_run_order_most_important_first_and_filters():
    runs = [r.key for r in plan_runs(SpeedConfig())]
    # the README's count: 3 models x 5 lengths x 12 variants forward + the proxy 3 x 11 (no own-density variant in
    # the adaptive regime) + 4 generate
    assert len(runs) == len(set(runs)) == 217
    assert (PROXY, "forward", 8192, "pbs_permute_none_paper_density") not in runs
    assert runs[:6] == [(LLAMA, "forward", n, v) for n in (131072, 65536, 32768) for v in ("sdpa_cudnn", "pbs")]
    assert runs[26] == (LLAMA, "forward", 32768, "minference") and runs[27:29] == [
        (LLAMA, "generate", 32768, "sdpa_cudnn"), (LLAMA, "generate", 32768, "pbs")]
    assert runs[29] == (PROXY, "forward", 32768, "sdpa_cudnn") and runs[61] == (PROXY, "forward", 8192, "flexprefill")
    assert runs[86:92] == [(LLAMA, "forward", n, v) for n in (131072, 65536, 32768)
                           for v in ("sdpa_flash", "sdpa_efficient")]
    assert runs[92] == (QWEN3, "forward", 131072, "sdpa_cudnn")
    assert runs[114:117] == [(LLAMA, "forward", n, "pbs_permute_none_paper_density") for n in (131072, 65536, 32768)] and runs[-1] == (QWEN25, "forward", 8192, "flexprefill")
    only = plan_runs(SpeedConfig(only_models=[QWEN3], only_lengths=[8192], only_variants=["pbs", "sdpa_cudnn"]))
    assert [r.key for r in only] == [(QWEN3, "forward", 8192, "sdpa_cudnn"), (QWEN3, "forward", 8192, "pbs")]


def test_forwards_per_run():
    cfg = SpeedConfig()  # warmup 2 (the second only while < 10 s), reps 5..20 within 4 s
    assert forwards_per_run(cfg, 12.0) == (1, 5)
    assert forwards_per_run(cfg, 0.5) == (2, 8)
    assert forwards_per_run(cfg, 0.01) == (2, 20)


# ---------------------------------------------------------------------------------------------------- the models


@pytest.mark.parametrize("name,layers,heads,kv,hidden,params", [
    (LLAMA, 32, 32, 8, 4096, 8_030_261_248), (QWEN25, 28, 28, 4, 3584, 7_615_616_512),
    (QWEN3, 36, 32, 8, 4096, 8_190_735_360)])
def test_architectures_build_on_the_device_without_a_cpu_copy(name, layers, heads, kv, hidden, params):
    spec = SpeedConfig().models[name]
    model, cfg = load_model(spec, "meta", torch.bfloat16)  # the device context decides where parameters live
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert sum(p.numel() for p in model.parameters()) == params
    arch = architecture(cfg)
    assert (arch.layers, arch.q_heads, arch.kv_heads, arch.head_dim, arch.hidden) == (layers, heads, kv, 128, hidden)
    # per-token linear parameters = all parameters but embeddings, lm_head, norms (and Qwen2's q/k/v biases)
    small = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 1)
    assert arch.linear_params == params - 2 * cfg.vocab_size * hidden - small
    assert model.config._attn_implementation == "sdpa"


def test_qwen3_gets_yarn_and_the_json_is_the_published_config():
    cfg = hf_config(SpeedConfig().models[QWEN3])
    rope = getattr(cfg, "rope_parameters", None) or cfg.rope_scaling
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0 and cfg.max_position_embeddings == 131072
    published = json.loads((ROOT / "models/configs/qwen3-8b.json").read_text())
    assert published["max_position_embeddings"] == 40960 and published["rope_scaling"] is None


def test_weights_folder_and_prompts(one_thread):
    model, cfg = load_model(SpeedConfig().models[PROXY], "cpu", torch.float32)
    assert next(model.parameters()).dtype == torch.float32 and cfg.num_hidden_layers == 8
    ids = prompt_ids(SpeedConfig().models[PROXY], cfg, 1024, 0, "cpu")
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(ROOT / "models/pbs-proxy-llama-v2").decode(ids[0])
    assert ids.shape == (1, 1024) and "special magic number" in text  # a RULER needle-in-a-haystack prompt
    rand = prompt_ids(_tiny_spec(), model.config, 300, 0, "cpu")
    assert rand.shape == (1, 300) and int(rand.max()) < cfg.vocab_size


def test_probe_times_every_attention_call_and_restores(one_thread):
    from transformers import AttentionInterface

    import pbs.hf.attention as hf_attention

    model, _ = load_model(_tiny_spec(), "cpu", torch.float32)
    ids = prompt_ids(_tiny_spec(), model.config, 256, 0, "cpu")
    pbs.hf.enable(model, "pbs", block_size=32, segment_size=64, budget=0.5)
    before, plan = AttentionInterface._global_mapping["pbs_pbs"], hf_attention.plan
    with AttentionProbe(model, cuda=False) as probe, torch.no_grad():
        for _ in range(2):
            probe.new_call()
            model(ids, logits_to_keep=1)
    calls = probe.per_call()
    assert len(calls) == 2 and all(c["calls"] == 2 for c in calls)  # two layers per forward
    assert all(0 < c["plan_ms"] < c["attention_ms"] for c in calls) and probe.planners == {"torch"}
    assert AttentionInterface._global_mapping["pbs_pbs"] is before and hf_attention.plan is plan


# ------------------------------------------------------------------------------------------------ rows, budget


def _row(model, n, variant, ttft, attention, status="ok", **kw):
    return new_row(model=model, regime="fixed", protocol="forward", seq_len=n, variant=variant, status=status,
                   ttft_ms=ttft, attention_ms=attention, **kw)


def test_speedups_against_the_fastest_ok_sdpa_and_merge():
    rows = [_row("m", 1024, "sdpa_cudnn", 100.0, 60.0), _row("m", 1024, "sdpa_flash", 80.0, 40.0),
            _row("m", 1024, "sdpa_efficient", math.nan, math.nan, status="failed"),
            _row("m", 1024, "pbs", 40.0, 10.0), _row("m", 2048, "pbs", 50.0, 20.0)]
    add_speedups(rows)
    assert [r["baseline"] for r in rows] == ["sdpa_flash"] * 4 + [""]
    assert rows[0]["speedup"] == 0.8 and rows[1]["speedup"] == 1.0 and rows[3]["speedup"] == 2.0
    assert rows[3]["attention_speedup"] == 4.0 and math.isnan(rows[2]["speedup"]) and math.isnan(rows[4]["speedup"])
    merged = merge_rows(rows, [_row("m", 1024, "pbs", 20.0, 5.0)])
    assert len(merged) == 5 and [r["ttft_ms"] for r in merged if r["variant"] == "pbs"] == [20.0, 50.0]
    text = summary(merged, not_started=3)
    assert "1 failed" in text and "3 not started (time budget)" in text and "FAILED (1):" in text


def test_time_budget_stops_starting_runs(tmp_path, one_thread):
    cfg = SpeedConfig(models={"tiny": _tiny_spec()}, stages=[Stage(["tiny"], ["sdpa_flash", "pbs"])], device="cpu",
                      dtype="float32", densities={256: 0.5}, warmup=1, reps=1, max_reps=1, progress=False,
                      methods={"pbs": MethodVariant("pbs", {"block_size": 32, "segment_size": 64})},
                      variant_densities={},
                      out_dir=str(tmp_path), time_budget_s=1e-6)
    rows, not_started = run_sweep(cfg, {"gpu": "cpu"})
    assert rows == [] and not_started == 2 and not (tmp_path / "cpu.csv").exists()


# ----------------------------------------------------------------------------------------------- the report


def _fixture_rows() -> list[dict]:
    """Invented numbers (a fixture, not a result): Llama at 32K and 128K, Qwen3 at 8K, a failure, a generate run."""
    prov = dict(gpu="NVIDIA H200", torch="2.11", triton="3.6", transformers="5.17", cuda="13.0",
                date_utc="2026-12-03T00:00:00Z", git_commit="abcdef1234567 (from PBS_GIT_COMMIT)",
                command="python -m experiments.speed merge=true")
    rows = []
    for model, n, base, rest in ((LLAMA, 32768, 1400.0, 900.0), (LLAMA, 131072, 11750.0, 3750.0),
                                 (QWEN3, 8192, 300.0, 250.0)):
        d = PAPER_DENSITIES[n]
        rows += [
            _row(model, n, "sdpa_cudnn", base, base - rest, rest_ms=rest, attention_pct=100 * (base - rest) / base,
                 target_density=1.0, density=1.0, **prov),
            _row(model, n, "sdpa_flash", base * 1.5, base * 1.5 - rest, rest_ms=rest, target_density=1.0,
                 density=1.0, **prov),
            _row(model, n, "pbs", rest + (base - rest) * d / 0.7, (base - rest) * d / 0.7, plan_ms=50.0,
                 kernel_ms=(base - rest) * d / 0.7 - 50, rest_ms=rest, target_density=d, density=d + 0.01,
                 planner="triton", **prov),
            _row(model, n, "meanpool", rest + (base - rest) * d / 0.6, (base - rest) * d / 0.6, rest_ms=rest,
                 target_density=d, density=d, planner="triton", **prov),
        ]
    rows.append(_row(LLAMA, 131072, "minference", math.nan, math.nan, status="failed",
                     error="OOM OutOfMemoryError: CUDA out of memory", **prov))
    rows.append(dict(_row(LLAMA, 32768, "pbs", 1100.0, 400.0, **prov), protocol="generate"))
    return rows


def test_report_and_plots_from_a_fixture_csv(tmp_path):
    path = write_csv(_fixture_rows(), tmp_path / "nvidia-h200.csv")
    back = read_csv(path)
    assert len(back) == 14 and back[0]["seq_len"] == 32768 and isinstance(back[0]["seq_len"], int)
    written = write_report(path)
    assert [p.name for p in written] == ["nvidia-h200.md", "nvidia-h200-ttft.png", "nvidia-h200-speedup.png"]
    assert all(p.stat().st_size > 1000 for p in written[1:])
    md = written[0].read_text()
    pbs_128k = 3750 + 8000 * 0.219 / 0.7
    assert f"{11750 / pbs_128k:.3g}×" in md  # the speedup over cuDNN at 128K
    assert "## llama3.1-8b-instruct (fixed densities)" in md and "| pbs | 0.415 (0.405) | 0.229 (0.219) |" in md
    assert "Table 9 layout" in md and "18628.0" in md and "2.22×" in md  # the paper's Qwen3-8B numbers, beside ours
    assert "≈2.2× (read off the curve" in md and "H100 80GB, FlashAttention-2 baseline" in md
    assert "- **met**: PBS" in md or "- **missed**: PBS" in md
    assert "OOM OutOfMemoryError" in md and "abcdef1 (from PBS_GIT_COMMIT)" in md
    assert "| llama3.1-8b-instruct | 32K | pbs | 1189.3 | 1100 | 0.925 |" in md  # generate vs forward
    from benchmarks.speed.report import provenance_footer  # the plots' footer

    assert provenance_footer(back) == ("NVIDIA H200, torch 2.11, triton 3.6, transformers 5.17, CUDA 13.0; 2026-12-03; "
                                       "commit abcdef1 (from PBS_GIT_COMMIT); python -m experiments.speed merge=true")


def test_targets_missed_gives_the_breakdown():
    rows = _fixture_rows()
    add_speedups(rows)
    md = speed_markdown(rows)
    speed = 11750 / (3750 + 8000 * 0.219 / 0.7)
    assert speed < 2.0 and "- **missed**: PBS" in md  # 1.88x with these invented numbers
    assert f"gives at most {11750 / 3750:.3g}×" in md  # the rest of the model bounds the speedup
    assert "- **met** at 32K" in md  # PBS ahead of meanpool at equal density


def test_table7_from_the_kernel_benchmark_csv():
    from benchmarks.report import read_csv as read_kernel_csv

    source = ROOT / "results/kernels/nvidia-h200.csv"
    table = table7_rows(read_kernel_csv(source))
    raw = list(csv.DictReader(source.open()))
    pbs_128k = next(r for r in raw if r["section"] == "methods" and r["variant"] == "pbs" and r["seq_len"] == "131072")
    cudnn = min(float(r["median_ms"]) for r in raw if r["section"] == "dense" and r["seq_len"] == "131072"
                and r["variant"].startswith("sdpa_"))
    dense, perm, sel, att, total, overhead, speedup, _density = table[131072]
    assert (dense, perm, sel, att, total) == (cudnn, *(float(pbs_128k[c]) for c in (
        "permutation_ms", "selection_ms", "attention_ms", "total_ms")))
    assert overhead == float(pbs_128k["overhead_pct"]) and speedup == pytest.approx(cudnn / total)
    assert set(table) == {4096, 8192, 16384, 32768, 65536, 131072}
    assert paper.TABLE7[131072][6] == 2.77


def test_make_tables_without_and_with_speed_results(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_tables
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    (tmp_path / "kernels").mkdir()
    shutil.copy(ROOT / "results/kernels/nvidia-h200.csv", tmp_path / "kernels")
    written = {p.name for p in make_tables.main(["--results", str(tmp_path)])}
    assert {"kernels-nvidia-h200.md", "table7-nvidia-h200.md", "table7-nvidia-h200.png"} <= written
    assert "no speed results yet" in capsys.readouterr().out
    assert "| 128K | 244 |" in (tmp_path / "tables/table7-nvidia-h200.md").read_text()
    write_csv(_fixture_rows(), tmp_path / "speed" / "nvidia-h200.csv")
    written = {p.name for p in make_tables.main(["--results", str(tmp_path)])}
    assert {"nvidia-h200.md", "nvidia-h200-ttft.png", "nvidia-h200-speedup.png", "speed-nvidia-h200.md"} <= written
