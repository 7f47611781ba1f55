"""The sweep's runs in order, and a prediction of their H200 time (for the budget and ``dry_run``).

A run is one (model, protocol, length, variant). The order is the config's ``stages`` (each: models x lengths x
variants, longest length first), deduplicated, restricted by ``only_*``.

The prediction (seconds) is a FLOP model calibrated on Llama-3.1-8B on the H200 (transformers 5.17, bf16, cuDNN
SDPA): 11.75 s at 128K of which ~8.0 s attention (≈ 565 TFLOP/s, the kernel benchmark's cuDNN rate) and ~3.75 s the
rest (≈ 490 TFLOP/s over the projections and MLP). Flash SDPA ran at 0.57-0.59× cuDNN in the kernel benchmark; the
efficient backend is not measured there (taken as 0.4×). A method: its planning per layer (the kernel benchmark's
fused-planner times at 128K, scaled linearly in N) plus attention at its density on our kernel (0.7× cuDNN's rate;
MInference's windows and columns ~0.25×). It sizes warm-ups and reps and orders the work; it is not a result.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SDPA_VARIANTS, SpeedConfig

LINEAR_TFLOPS = 490.0
CUDNN_TFLOPS = 565.0
SDPA_RATE = {"sdpa_cudnn": 1.0, "sdpa_flash": 0.58, "sdpa_efficient": 0.4}
KERNEL_RATE = 0.7  # our kernel vs cuDNN, per computed tile
MINFERENCE_RATE = 0.25
PLAN_MS_128K = {"pbs": 3.5, "pbs_permute_none": 2.2, "pbs_permute_query": 6.0, "pbs_antidiagonal": 46.0,
                "meanpool": 2.2, "xattention": 27.0, "minference": 37.0, "flexprefill": 23.0}
BUILD_S = 30.0  # building an 8B model on the GPU, imports, first CUDA context
FIRST_CALL_S = 5.0  # compilation and autotuning on a method's first call at a new length


@dataclass(frozen=True)
class Run:
    model: str
    protocol: str
    seq_len: int
    variant: str

    @property
    def key(self) -> tuple:
        return (self.model, self.protocol, self.seq_len, self.variant)


def plan_runs(cfg: SpeedConfig) -> list[Run]:
    """Every run of the config's stages, in order, once, restricted by ``only_models/lengths/variants``."""
    runs, seen = [], set()
    all_variants = cfg.variant_names()
    for stage in cfg.stages:
        for model in stage.models:
            if cfg.only_models is not None and model not in cfg.only_models:
                continue
            lengths = stage.lengths if stage.lengths is not None else sorted(cfg.models[model].lengths, reverse=True)
            lengths = [n for n in lengths if n in cfg.models[model].lengths]
            for n in lengths:
                if cfg.only_lengths is not None and n not in cfg.only_lengths:
                    continue
                for v in stage.variants if stage.variants is not None else all_variants:
                    if v not in all_variants or (cfg.only_variants is not None and v not in cfg.only_variants):
                        continue
                    if v in cfg.variant_densities and cfg.models[model].regime != "fixed":
                        continue  # its own fixed densities: in the adaptive regime it would repeat its base variant
                    run = Run(model, stage.protocol, n, v)
                    if run.key not in seen:
                        seen.add(run.key)
                        runs.append(run)
    return runs


def predict_forward_s(arch, seq_len: int, variant: str, density: float) -> float:
    """Predicted seconds of one forward (module docstring): linear layers + attention (+ planning)."""
    linear = 2.0 * seq_len * arch.linear_params / (LINEAR_TFLOPS * 1e12)
    dense_attn = 4.0 * arch.layers * arch.q_heads * arch.head_dim * seq_len * (seq_len + 1) / 2
    cudnn = dense_attn / (CUDNN_TFLOPS * 1e12)
    if variant in SDPA_VARIANTS:
        return linear + cudnn / SDPA_RATE[variant]
    rate = MINFERENCE_RATE if variant == "minference" else KERNEL_RATE
    plan = arch.layers * PLAN_MS_128K.get(variant, 10.0) * 1e-3 * max(seq_len / 131072, 0.1)
    return linear + cudnn * density / rate + plan


def forwards_per_run(cfg: SpeedConfig, forward_s: float) -> tuple[int, int]:
    """(warm-up forwards, timed forwards) for a forward of ``forward_s`` seconds, as :mod:`.sweep` decides them."""
    warm, spent = 1, forward_s
    while warm < cfg.warmup and spent < cfg.max_warmup_s:
        warm, spent = warm + 1, spent + forward_s
    reps = min(cfg.max_reps, max(cfg.reps, int(cfg.seconds_per_run / max(forward_s, 1e-9))))
    return warm, reps


def predict_run_s(cfg: SpeedConfig, arch, run: Run, protocol_factor: float = 1.0) -> float:
    """Predicted seconds of a whole run: warm-ups, timed forwards, first-call compilation."""
    density = 1.0 if run.variant in SDPA_VARIANTS else (
        cfg.variant_densities.get(run.variant, cfg.densities).get(run.seq_len, 0.5))
    t = predict_forward_s(arch, run.seq_len, run.variant, density) * protocol_factor
    warm, reps = forwards_per_run(cfg, t)
    return (warm + reps) * t + (0.0 if run.variant in SDPA_VARIANTS else FIRST_CALL_S)


def schedule(cfg: SpeedConfig, archs: dict) -> list[tuple[Run, float, float]]:
    """(run, predicted seconds, cumulative predicted seconds incl. model builds) in order; ``archs``: model ->
    :class:`benchmarks.speed.models.Architecture`."""
    out, total, current = [], 0.0, None
    for run in plan_runs(cfg):
        if run.model != current:
            total += BUILD_S
            current = run.model
        seconds = predict_run_s(cfg, archs[run.model], run)
        total += seconds
        out.append((run, seconds, total))
    return out
