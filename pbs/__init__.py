"""pbs: permuted block-sparse attention (PBS-Attn) and the sparse-prefill baselines it is compared with."""

from . import hf  # noqa: F401  transformers integration; imports transformers only inside its functions
from .api import AttentionStats, attend, plan, sparse_attention
from .config import (
    FlexPrefillConfig,
    FullConfig,
    MeanPoolConfig,
    MInferenceConfig,
    OracleConfig,
    PBSConfig,
    XAttentionConfig,
)
from .methods import Dense, available_methods
from .plan import SparsePlan

__version__ = "0.1.0"

__all__ = [
    "AttentionStats",
    "Dense",
    "FlexPrefillConfig",
    "FullConfig",
    "MInferenceConfig",
    "MeanPoolConfig",
    "OracleConfig",
    "PBSConfig",
    "SparsePlan",
    "XAttentionConfig",
    "__version__",
    "attend",
    "available_methods",
    "plan",
    "sparse_attention",
]
