"""pbs: permuted block-sparse attention (PBS-Attn) and the sparse-prefill baselines it is compared with."""

from . import hf  # noqa: F401  transformers integration; imports transformers only inside its functions
from .api import AttentionStats, sparse_attention
from .config import (
    FlexPrefillConfig,
    FullConfig,
    MeanPoolConfig,
    MInferenceConfig,
    OracleConfig,
    PBSConfig,
    XAttentionConfig,
)
from .methods import available_methods
from .plan import SparsePlan

__version__ = "0.1.0"

__all__ = [
    "AttentionStats",
    "FlexPrefillConfig",
    "FullConfig",
    "MInferenceConfig",
    "MeanPoolConfig",
    "OracleConfig",
    "PBSConfig",
    "SparsePlan",
    "XAttentionConfig",
    "__version__",
    "available_methods",
    "sparse_attention",
]
