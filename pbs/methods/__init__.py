"""Sparse-attention methods: one small module each, every one builds a SparsePlan from (q, k).

To add a method: write ``pbs/methods/<name>.py`` with a planner decorated by ``@register_method("<name>",
<Name>Config)`` (optionally a fused GPU planner decorated by ``@register_fused("<name>")``), add
``<Name>Config`` to ``pbs/config.py``, import the module below, and add ``conf/method/<name>.yaml``.
"""

from . import flexprefill, full, meanpool, minference, oracle, pbs, xattention  # noqa: F401  (registration)
from .registry import Dense, Method, NotFused, available_methods, get_method, register_fused, register_method

__all__ = ["Dense", "Method", "NotFused", "available_methods", "get_method", "register_fused", "register_method"]
