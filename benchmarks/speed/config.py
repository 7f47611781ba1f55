"""The speed benchmark's settings: one dataclass (the Hydra schema ``conf/speed.yaml`` extends) and its parts.

    python -m experiments.speed only_models=[llama3.1-8b-instruct] 'only_lengths=[131072]' merge=true

Two density regimes, never mixed in one number:

- ``fixed``: architectures with random bf16 weights (attention is near-uniform, so a method's own threshold would
  select almost everything and mean nothing). Every method runs through its ``budget=`` mode at the paper's measured
  Llama-3.1-8B densities (PBS at τ 0.9, Table 5: 57.9% at 8K ... 21.9% at 128K), planning included.
- ``adaptive``: the trained proxy model on a RULER-style prompt, every method at its own default threshold: the
  densities the methods really choose (a tiny model, so its TTFT is a different regime from the 8B models').
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from pbs.methods import get_method

from ..config import MethodVariant

# Table 5 of the paper (Llama-3.1-8B, B = 128, τ = 0.9, with key permutation): selected / causal blocks
PAPER_DENSITIES = {8192: 0.579, 16384: 0.485, 32768: 0.405, 65536: 0.287, 131072: 0.219}
# Table 5 without permutation: what PBS selects at the same τ 0.9 (so at comparable accuracy) with permute="none"
PAPER_DENSITIES_NO_PERMUTATION = {8192: 0.649, 16384: 0.540, 32768: 0.460, 65536: 0.328, 131072: 0.256}
SDPA_VARIANTS = {"sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION",
                 "sdpa_efficient": "EFFICIENT_ATTENTION"}
REGIMES = ("fixed", "adaptive")
PROMPTS = ("random", "ruler")
PROTOCOLS = ("forward", "generate")
LLAMA, QWEN3, QWEN25, PROXY = "llama3.1-8b-instruct", "qwen3-8b", "qwen2.5-7b-instruct-1m", "pbs-proxy-llama-v2"
LENGTHS = [8192, 16384, 32768, 65536, 131072]


@dataclass
class SpeedModel:
    """One model of the sweep: an architecture JSON (random weights) or a folder with weights."""

    config: str | None = None  # models/configs/<name>.json: the model's public config.json, random bf16 weights
    path: str | None = None  # a local folder with weights (from_pretrained); used instead of config when set
    regime: str = "fixed"  # "fixed": methods at `densities` through budget=; "adaptive": their own thresholds
    lengths: list[int] = field(default_factory=lambda: list(LENGTHS))
    prompt: str = "random"  # "random" token ids | "ruler": a RULER niah sample in the model's tokenizer (needs path)
    config_overrides: dict[str, Any] = field(default_factory=dict)  # set on the transformers config before building

    def __post_init__(self) -> None:
        if (self.config is None) == (self.path is None):
            raise ValueError(f"a model needs exactly one of config (architecture JSON) or path (weights), got "
                             f"config={self.config!r}, path={self.path!r}")
        for name, value, choices in (("regime", self.regime, REGIMES), ("prompt", self.prompt, PROMPTS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")
        if self.prompt == "ruler" and self.path is None:
            raise ValueError("prompt='ruler' needs the model's tokenizer: set path (a folder with a tokenizer)")
        if not self.lengths or any(n < 2 for n in self.lengths):
            raise ValueError(f"lengths must be a non-empty list of lengths >= 2, got lengths={self.lengths!r}")


@dataclass
class Stage:
    """A block of the sweep's run order: these models x lengths x variants (None = all), one timing protocol."""

    models: list[str] = field(default_factory=list)
    variants: list[str] | None = None  # None: every SDPA variant and every method
    lengths: list[int] | None = None  # None: each model's lengths (longest first)
    protocol: str = "forward"  # "forward": model(ids, logits_to_keep=1); "generate": generate(max_new_tokens=1)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got protocol={self.protocol!r}")


def _default_models() -> dict[str, SpeedModel]:
    yarn = {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
            "max_position_embeddings": 131072}  # Qwen3-8B's model card for inputs over 32K
    return {
        LLAMA: SpeedModel(config=f"models/configs/{LLAMA}.json"),
        QWEN3: SpeedModel(config=f"models/configs/{QWEN3}.json", config_overrides=yarn),
        QWEN25: SpeedModel(config=f"models/configs/{QWEN25}.json"),
        PROXY: SpeedModel(path="models/pbs-proxy-llama-v2", regime="adaptive", lengths=[8192, 16384, 32768],
                          prompt="ruler"),
    }


def _default_methods() -> dict[str, MethodVariant]:
    return {
        "pbs": MethodVariant("pbs"),
        "pbs_permute_none": MethodVariant("pbs", {"permute": "none"}),
        # no permutation at the density it needs for PBS's accuracy (variant_densities): what permuting buys end to end
        "pbs_permute_none_paper_density": MethodVariant("pbs", {"permute": "none"}),
        "pbs_permute_query": MethodVariant("pbs", {"permute": "query"}),
        "pbs_antidiagonal": MethodVariant("pbs", {"scoring": "antidiagonal"}),  # PBS-Attn+
        "meanpool": MethodVariant("meanpool"),
        "xattention": MethodVariant("xattention"),  # stride 8, τ 0.9, block 128: the paper's efficiency settings
        "minference": MethodVariant("minference"),
        "flexprefill": MethodVariant("flexprefill"),
    }


_LONG = [131072, 65536, 32768]
_OTHERS = ["pbs_antidiagonal", "meanpool", "xattention", "flexprefill", "pbs_permute_none", "pbs_permute_query",
           "minference"]


def _default_stages() -> list[Stage]:
    """Most important first: Llama, PBS vs the (expected) fastest SDPA at 32K-128K at the paper's densities."""
    return [
        Stage([LLAMA], ["sdpa_cudnn", "pbs"], _LONG),
        Stage([LLAMA], _OTHERS, _LONG),
        Stage([LLAMA], ["sdpa_cudnn", "pbs"], [32768], "generate"),
        Stage([PROXY]),
        Stage([LLAMA], None, [16384, 8192]),
        Stage([LLAMA], ["sdpa_flash", "sdpa_efficient"], _LONG),
        Stage([QWEN3], ["sdpa_cudnn", "pbs"]),  # Table 9's layout
        Stage([QWEN3], ["sdpa_cudnn", "pbs"], [32768], "generate"),
        Stage([QWEN25], ["sdpa_cudnn", "pbs"]),
        Stage([LLAMA], ["pbs_permute_none_paper_density"], _LONG),
        Stage([QWEN3, QWEN25]),
    ]


@dataclass
class SpeedConfig:
    """Time to first token per model, length and variant (an SDPA backend or a method), batch 1, on one GPU (or on
    ``tensor_parallel`` GPUs under torchrun)."""

    models: dict[str, SpeedModel] = field(default_factory=_default_models)
    stages: list[Stage] = field(default_factory=_default_stages)
    only_models: list[str] | None = None  # restrict every stage to these models / lengths / variants
    only_lengths: list[int] | None = None
    only_variants: list[str] | None = None
    sdpa_variants: list[str] = field(default_factory=lambda: list(SDPA_VARIANTS))
    methods: dict[str, MethodVariant] = field(default_factory=_default_methods)
    densities: dict[int, float] = field(default_factory=lambda: dict(PAPER_DENSITIES))  # regime "fixed": budget per N
    # regime "fixed": a variant's own budget per N instead of `densities`
    variant_densities: dict[str, Any] = field(  # {variant: {N: density}}
        default_factory=lambda: {"pbs_permute_none_paper_density": dict(PAPER_DENSITIES_NO_PERMUTATION)})
    device: str = "cuda"
    dtype: str = "bfloat16"
    backend: str = "auto"  # pbs.hf.enable's attention backend (auto: triton on CUDA)
    short_seq_policy: bool = False  # False: every method runs sparse at every length (the method is what is timed)
    seed: int = 0
    warmup: int = 2  # warm-up forwards (autotune, compilation); the first always runs, later ones only while cheap
    max_warmup_s: float = 10.0  # no further warm-up once the warm-up has taken this long
    reps: int = 5  # timed forwards, at least
    max_reps: int = 20  # at most: more than `reps` only while a run stays within seconds_per_run
    seconds_per_run: float = 4.0
    flush_l2: bool = False  # a forward of >= 100 ms is not helped by a warm L2
    time_budget_s: float | None = None  # stop starting runs that would end past this many seconds from the start
    out_dir: str = "results/speed"
    merge: bool = False  # keep an existing CSV's rows of the runs this command does not measure
    skip_done: bool = False  # skip runs the CSV already holds (ok, unavailable or failed); resume a split sweep
    retry_failed: bool = False  # with skip_done: run the failed ones again
    dry_run: bool = False  # print the run order with the predicted H200 seconds and exit
    progress: bool = True
    # > 1: run under `torchrun --nproc_per_node <tensor_parallel>`: transformers' tp_plan="auto" splits heads and MLP
    # over the ranks, each rank runs the method on its heads, latency = the slowest rank; results to <gpu>-tp<k>.csv
    tensor_parallel: int = 1
    tp_weights_dir: str = "/tmp/pbs-speed-weights"  # random weights saved once by rank 0 for the ranks to load

    def __post_init__(self) -> None:
        self.models = {n: m if isinstance(m, SpeedModel) else SpeedModel(**m) for n, m in self.models.items()}
        self.methods = {n: v if isinstance(v, MethodVariant) else MethodVariant(**v) for n, v in self.methods.items()}
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in self.stages]
        self.densities = {int(n): float(d) for n, d in self.densities.items()}
        self.variant_densities = {v: {int(n): float(d) for n, d in per_n.items()}
                                  for v, per_n in self.variant_densities.items()}
        unknown = [v for v in self.sdpa_variants if v not in SDPA_VARIANTS]
        if unknown:
            raise ValueError(f"sdpa_variants must be drawn from {list(SDPA_VARIANTS)}, got sdpa_variants="
                             f"{self.sdpa_variants!r}")
        clash = set(self.methods) & set(SDPA_VARIANTS)
        if clash:
            raise ValueError(f"methods must not reuse the SDPA variant names {sorted(clash)}")
        for name, v in self.methods.items():
            get_method(v.method)  # an unknown method is a ValueError naming it
            fields = {f.name for f in dataclasses.fields(get_method(v.method).config_cls)}
            bad = sorted(set(v.kwargs or {}) - fields)
            if bad:
                raise ValueError(f"methods.{name}.kwargs: unknown kwarg {bad[0]!r} for method {v.method!r}; valid: "
                                 f"{sorted(fields)}")
        variants = self.variant_names()
        for i, stage in enumerate(self.stages):
            for m in stage.models:
                if m not in self.models:
                    raise ValueError(f"stages[{i}].models names {m!r}, not one of models {sorted(self.models)}")
            for v in stage.variants or []:
                if v not in variants and v not in SDPA_VARIANTS:
                    raise ValueError(f"stages[{i}].variants names {v!r}, not one of {variants}")
        for name, value, allowed in (("only_models", self.only_models, list(self.models)),
                                     ("only_variants", self.only_variants, variants)):
            bad = [x for x in value or [] if x not in allowed]
            if bad:
                raise ValueError(f"{name} must be drawn from {allowed}, got {name}={value!r}")
        if not isinstance(getattr(torch, str(self.dtype), None), torch.dtype):
            raise ValueError(f"dtype must name a torch dtype (e.g. bfloat16), got dtype={self.dtype!r}")
        for name in ("warmup", "reps", "max_reps"):
            if getattr(self, name) < (0 if name == "warmup" else 1):
                raise ValueError(f"{name} must be >= {0 if name == 'warmup' else 1}, got {name}={getattr(self, name)!r}")
        if self.max_reps < self.reps:
            raise ValueError(f"max_reps must be >= reps ({self.reps}), got max_reps={self.max_reps}")
        if any(not 0 < d <= 1 for d in self.densities.values()):
            raise ValueError(f"densities must be in (0, 1], got densities={self.densities!r}")
        for v, per_n in self.variant_densities.items():
            if v not in self.methods:
                raise ValueError(f"variant_densities names {v!r}, not one of methods {sorted(self.methods)}")
            if any(not 0 < d <= 1 for d in per_n.values()):
                raise ValueError(f"variant_densities.{v} must be in (0, 1], got {per_n!r}")
        if not isinstance(self.tensor_parallel, int) or self.tensor_parallel < 1:
            raise ValueError(f"tensor_parallel must be an integer >= 1, got tensor_parallel={self.tensor_parallel!r}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be > 0 or null, got time_budget_s={self.time_budget_s!r}")

    def variant_names(self) -> list[str]:
        """Every variant in table order: the SDPA backends, then the methods."""
        return [*self.sdpa_variants, *self.methods]

    def method_kwargs(self, variant: str, seq_len: int, regime: str) -> tuple[str, dict]:
        """(method, kwargs) of a method variant; regime "fixed" adds ``budget`` = the density at ``seq_len``."""
        entry = self.methods[variant]
        kwargs = dict(entry.kwargs or {})
        if regime == "fixed" and "budget" in {f.name for f in dataclasses.fields(get_method(entry.method).config_cls)}:
            kwargs["budget"] = self.density(variant, seq_len)
        return entry.method, kwargs

    def density(self, variant: str, seq_len: int) -> float:
        """The fixed regime's target density of a method variant at ``seq_len`` (``variant_densities`` first)."""
        own = variant in self.variant_densities
        table, name = ((self.variant_densities[variant], f"variant_densities.{variant}") if own
                       else (self.densities, "densities"))
        if seq_len not in table:
            raise ValueError(f"regime 'fixed' needs a target density for N={seq_len}: add it to {name} (now {table})")
        return table[seq_len]
