"""Dense causal attention: the baseline every sparse method is measured against."""

from ..config import FullConfig
from .registry import Dense, register_method


@register_method("full", FullConfig)
def plan(q, k, cfg: FullConfig, scale: float) -> Dense:
    return Dense()
