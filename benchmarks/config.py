"""The benchmark's settings: one dataclass, registered as the Hydra schema that ``conf/bench_kernels.yaml`` extends.

    python -m experiments.bench_kernels 'seq_lens=[65536,131072]' merge=true +methods.pbs.kwargs.threshold=0.95
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from pbs.methods import get_method
from pbs.synthetic import Structure

from .rows import SECTIONS
from .variants import DENSE_VARIANTS

KERNEL_BACKENDS = ("triton", "torch", "flex")
PLANNERS = ("auto", "torch", "triton")


@dataclass
class MethodVariant:
    """A row of the ``methods`` section: ``pbs.sparse_attention(method=method, **kwargs)``."""

    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def _default_methods() -> dict[str, MethodVariant]:
    return {
        "pbs": MethodVariant("pbs"),
        "pbs_permute_none": MethodVariant("pbs", {"permute": "none"}),
        "pbs_antidiagonal": MethodVariant("pbs", {"scoring": "antidiagonal"}),
        "meanpool": MethodVariant("meanpool"),
        "xattention": MethodVariant("xattention"),
        "minference": MethodVariant("minference"),
        "flexprefill": MethodVariant("flexprefill"),
    }


@dataclass
class BenchConfig:
    """Defaults: Llama-3.1-8B's attention (32 query / 8 KV heads, D = 128), B = 1, bf16, 4K-128K, on CUDA."""

    seq_lens: list[int] = field(default_factory=lambda: [4096, 8192, 16384, 32768, 65536, 131072])
    batch: int = 1
    q_heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    dtype: str = "bfloat16"
    device: str = "cuda"
    seed: int = 0
    kernel_backend: str = "triton"  # our kernel: triton (CUDA) | torch (the reference; CPU smoke runs) | flex
    planner: str = "auto"  # pbs.plan's planner: auto | torch | triton
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    dense_variants: list[str] = field(default_factory=lambda: list(DENSE_VARIANTS))
    kv_repeat_fallback: bool = True  # an SDPA backend that rejects enable_gqa is retried on repeated K/V (_kvrep)
    flex_compile: bool = True  # compiled FlexAttention (create_block_mask(_compile=True)); false: eager, CPU smoke
    block_size: int = 128  # tiles of ours_dense and of the random block masks
    densities: list[float] = field(default_factory=lambda: [0.1, 0.22, 0.4, 0.6])
    warmup: int = 5
    reps: int = 20
    max_seconds_per_measurement: float = 10.0  # caps the reps (never below 5) and warm-up of a slow measurement
    flush_l2: bool = True
    # pbs.synthetic.Structure's fields: logit strengths of the planted patterns. Heavy hitters on 15% of the keys,
    # scattered (what key permutation gathers into few blocks); long-range recency (RoPE-like low frequencies) puts
    # PBS near the paper's density.
    structure: dict[str, float] = field(default_factory=lambda: {
        "sink_logit": 10.0, "local_logit": 6.0, "heavy_logit": 12.0, "heavy_fraction": 0.15, "noise": 1.0,
        "recency_logit": 8.0})
    # applied to every method whose config has the field; null = the method's default
    common_method_kwargs: dict[str, Any] = field(default_factory=lambda: {"block_size": None, "segment_size": None})
    methods: dict[str, MethodVariant] = field(default_factory=_default_methods)  # row name -> method and kwargs
    out_dir: str = "results/kernels"
    merge: bool = False  # keep an existing CSV's rows for the lengths this run does not measure
    progress: bool = True

    def __post_init__(self) -> None:
        self.methods = {name: v if isinstance(v, MethodVariant) else MethodVariant(**v)
                        for name, v in self.methods.items()}
        for name, value, choices in (("sections", self.sections, SECTIONS),
                                     ("dense_variants", self.dense_variants, DENSE_VARIANTS)):
            unknown = [x for x in value if x not in choices]
            if unknown:
                raise ValueError(f"{name} must be drawn from {list(choices)}, got {name}={list(value)!r}")
        for name, value, choices in (("kernel_backend", self.kernel_backend, KERNEL_BACKENDS),
                                     ("planner", self.planner, PLANNERS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")
        if not isinstance(getattr(torch, str(self.dtype), None), torch.dtype):
            raise ValueError(f"dtype must name a torch dtype (e.g. bfloat16), got dtype={self.dtype!r}")
        try:
            Structure(**self.structure)
        except TypeError as err:
            raise ValueError(f"structure takes pbs.synthetic.Structure's fields "
                             f"{[f.name for f in dataclasses.fields(Structure)]}, got structure={self.structure!r}"
                             ) from err
        for name in ("batch", "q_heads", "kv_heads", "head_dim", "block_size", "reps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={getattr(self, name)!r}")
        if self.q_heads % self.kv_heads:
            raise ValueError(f"q_heads must be a multiple of kv_heads ({self.kv_heads}), got q_heads={self.q_heads}")


def method_kwargs(cfg: BenchConfig, name: str) -> tuple[str, dict]:
    """(method, kwargs) of ``cfg.methods[name]``, with the non-null common_method_kwargs its config has as fields."""
    entry = cfg.methods[name]
    fields = {f.name for f in dataclasses.fields(get_method(entry.method).config_cls)}
    kwargs = {k: v for k, v in (cfg.common_method_kwargs or {}).items() if v is not None and k in fields}
    kwargs.update(entry.kwargs or {})
    return entry.method, kwargs
