"""One config dataclass per method: the single source of truth for its kwargs and defaults.

Defaults are the paper's settings (arXiv 2510.21270, §4.1 and the baselines' configurations there).
Hydra configs in ``conf/method/`` mirror these classes; nothing is duplicated by hand.
Cross-field rules live in ``__post_init__`` and raise ``ValueError`` naming the field and its value.
Stdlib only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PERMUTE_MODES = ("key", "query", "key+query", "none")
SCORING_MODES = ("mean", "antidiagonal")
SHARE_MODES = ("q_head", "kv_head")
XATTENTION_ACCOUNTING = ("original", "corrected")
SLASH_LAYOUTS = ("windows", "aligned")
QUERY_MEANS = ("padded", "real")


def _is_pow2(x: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0 and (x & (x - 1)) == 0


def _check_block_size(name: str, value) -> None:
    if not (_is_pow2(value) and value >= 16):
        raise ValueError(f"{name} must be a power of two >= 16, got {name}={value!r}")


def _check_threshold(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"threshold must be a number > 0 (>= 1 selects every causal block), got threshold={value!r}")


def _check_budget(value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"budget must be None or a target density in (0, 1], got budget={value!r}")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")


def _check_segment_size(segment_size, block_size) -> None:
    _check_positive_int("segment_size", segment_size)
    if segment_size % block_size:
        raise ValueError(f"segment_size must be a multiple of block_size ({block_size}), got segment_size={segment_size!r}")


def _check_stride(stride, block_size) -> None:
    if not _is_pow2(stride) or stride > block_size:
        raise ValueError(f"stride must be a power of two <= block_size ({block_size}), got stride={stride!r}")


@dataclass
class FullConfig:
    """Dense causal attention (no kwargs)."""


@dataclass
class PBSConfig:
    """Permuted block-sparse attention (PBS-Attn; PBS-Attn+ with ``scoring="antidiagonal"``)."""

    block_size: int = 128  # §4.1: B=128 is best overall in the block-size ablation
    segment_size: int = 256  # §4.1: S=256; keys are permuted only inside segments, so causality survives
    threshold: float = 0.9  # §4.1: cumulative block mass τ=0.9 "through all experiments"; >= 1 selects all
    permute: str = "key"  # §4.3: key-only permutation; query permutation needs an inverse and is worse under GQA
    scoring: str = "mean"  # mean-pooled block scores; "antidiagonal" is PBS-Attn+ (XAttention's scoring)
    stride: int = 8  # antidiagonal stride, used only with scoring="antidiagonal" (PBS-Attn+ uses XAttention's 8)
    share_permutation: str = "q_head"  # the paper's default; "kv_head" is App. G (one permutation per GQA group)
    force_sink: bool = True  # the block holding original token 0 (the attention sink) is always computed
    budget: float | None = None  # target density: per row the forced tiles + top tiles up to budget·(causal tiles)

    def __post_init__(self):
        _check_block_size("block_size", self.block_size)
        _check_segment_size(self.segment_size, self.block_size)
        _check_threshold(self.threshold)
        _check_budget(self.budget)
        _check_choice("permute", self.permute, PERMUTE_MODES)
        _check_choice("scoring", self.scoring, SCORING_MODES)
        _check_stride(self.stride, self.block_size)
        _check_choice("share_permutation", self.share_permutation, SHARE_MODES)


@dataclass
class MeanPoolConfig:
    """The paper's MeanPooling baseline: PBS's scoring and selection without permutation."""

    block_size: int = 128  # as PBS
    threshold: float = 0.9  # as PBS
    force_sink: bool = True  # block 0 always computed (the paper notes this makes it a strong baseline)
    force_current: bool = True  # the diagonal block always computed
    budget: float | None = None  # target density instead of the threshold (as PBSConfig.budget)

    def __post_init__(self):
        _check_block_size("block_size", self.block_size)
        _check_threshold(self.threshold)
        _check_budget(self.budget)


@dataclass
class XAttentionConfig:
    """XAttention: strided antidiagonal block scoring + cumulative threshold (arXiv 2503.16428)."""

    block_size: int = 128  # XAttention asserts 128
    stride: int = 8  # the paper's baseline setting (PBS-Attn eval configs)
    threshold: float = 0.9  # scalar τ (the per-head Llama tables are model-specific)
    chunk_size: int | None = None  # tokens per estimation chunk; None = the original's default from Nk (one
    #   chunk up to 16K, 8K at 32K, 2K at 128K); it decides which rows follow the first chunk's accounting
    accounting: str = "original"  # "original": the first chunk's rows credit only the diagonal and take one tile
    #   more (x-attention utils.py); "corrected": every row credits sink + diagonal, no extra tile
    budget: float | None = None  # target density instead of the threshold: sink + diagonal + top-scoring tiles

    def __post_init__(self):
        _check_block_size("block_size", self.block_size)
        _check_stride(self.stride, self.block_size)
        _check_threshold(self.threshold)
        _check_budget(self.budget)
        if self.chunk_size is not None:
            _check_positive_int("chunk_size", self.chunk_size)
            if self.chunk_size % self.block_size:
                raise ValueError(f"chunk_size must be a multiple of block_size ({self.block_size}), "
                                 f"got chunk_size={self.chunk_size!r}")
        _check_choice("accounting", self.accounting, XATTENTION_ACCOUNTING)


@dataclass
class MInferenceConfig:
    """MInference vertical-slash, estimated from the last queries for every head (PBS-Attn's baseline setting)."""

    vertical_size: int = 1000  # top key columns per head
    slash_size: int = 6096  # top diagonals per head
    last_q: int = 64  # queries used to estimate the pattern
    block_size: int = 64  # slash blocks are 64 wide, as in MInference's kernel
    num_sink_columns: int = 30  # first columns always kept
    num_local_diagonals: int = 100  # last diagonals always kept
    budget: float | None = None  # target density instead of vertical/slash sizes: aligned tiles scored by their
    #   estimated vertical + slash mass, sink + diagonal forced (pbs.methods.minference)
    slash_layout: str = "windows"  # "windows": unaligned key windows merged as the original's index builder
    #   (csrc/vertical_slash_index.cu); "aligned": aligned key blocks (more tiles; FlexAttention-friendly)

    def __post_init__(self):
        _check_positive_int("vertical_size", self.vertical_size)
        _check_positive_int("slash_size", self.slash_size)
        _check_positive_int("last_q", self.last_q)
        _check_block_size("block_size", self.block_size)
        _check_positive_int("num_sink_columns", self.num_sink_columns, 0)
        _check_positive_int("num_local_diagonals", self.num_local_diagonals, 1)
        _check_choice("slash_layout", self.slash_layout, SLASH_LAYOUTS)
        _check_budget(self.budget)


@dataclass
class FlexPrefillConfig:
    """FlexPrefill: per-head query-aware pooled blocks or vertical-slash, chosen by JS divergence (arXiv 2502.20766)."""

    gamma: float = 0.95  # cumulative-mass budget (the paper's Llama setting, used by PBS-Attn's baseline)
    tau: float = 0.1  # sqrt-JS divergence below which a head is query-aware
    block_size: int = 128
    min_budget: int = 1  # tokens, as the original (ceil(min_budget / block_size) blocks); PBS-Attn's setting
    max_budget: int | None = None  # tokens; None = no cap
    budget_unit: int | None = 128  # positions per budgeted block: the original's literal 128 (~line 1708);
    #   None = block_size (the corrected rule; differs only when block_size != 128)
    query_mean: str = "padded"  # pooled query of a ragged last block: "padded" sums its rows / block_size (PBS-Attn's
    #   vendored copy, which the paper ran); "real" averages its real rows (ByteDance's upstream fix)
    include_crossing_tile: bool = False  # query-aware cover: False drops the tile that crosses gamma, as the
    #   original's score_cover_idx; True keeps it (the set then covers gamma, as the budgets do)
    budget: float | None = None  # target *density* instead of gamma (not min/max_budget): per head its own tile
    #   scores (pooled attention if query-aware, else vertical + slash mass), block 0 + diagonal forced

    def __post_init__(self):
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not self.gamma > 0:
            raise ValueError(f"gamma must be a number > 0 (>= 1 selects everything), got gamma={self.gamma!r}")
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or self.tau < 0:
            raise ValueError(f"tau must be a number >= 0, got tau={self.tau!r}")
        _check_block_size("block_size", self.block_size)
        _check_positive_int("min_budget", self.min_budget)
        if self.max_budget is not None:
            _check_positive_int("max_budget", self.max_budget, self.min_budget)
        if self.budget_unit is not None:
            _check_positive_int("budget_unit", self.budget_unit)
        _check_choice("query_mean", self.query_mean, QUERY_MEANS)
        _check_budget(self.budget)
        if not isinstance(self.include_crossing_tile, bool):
            raise ValueError(
                f"include_crossing_tile must be a bool, got include_crossing_tile={self.include_crossing_tile!r}"
            )


@dataclass
class OracleConfig:
    """Blocks chosen by the exact attention mass (the upper bound of the paper's analyses; modest N only)."""

    block_size: int = 128
    segment_size: int = 256  # segments of the key permutation, as PBS
    threshold: float = 0.9  # fraction of each query block's exact attention mass to cover
    permute: str = "none"  # "none" or "key" (PBS's key permutation)
    budget: float | None = None  # target density instead of the threshold (as PBSConfig.budget)

    def __post_init__(self):
        _check_block_size("block_size", self.block_size)
        _check_segment_size(self.segment_size, self.block_size)
        _check_threshold(self.threshold)
        _check_budget(self.budget)
        _check_choice("permute", self.permute, ("none", "key"))


def make_config(config_cls: type, kwargs: dict):
    """Build ``config_cls(**kwargs)``, turning an unknown kwarg into a ValueError that lists the valid ones."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        name = unknown[0]
        raise ValueError(
            f"unknown kwarg {name}={kwargs[name]!r} for {config_cls.__name__}; valid kwargs: {sorted(fields) or 'none'}"
        )
    return config_cls(**kwargs)
