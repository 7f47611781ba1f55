"""Method registry: a name maps to its config dataclass, a torch planner and optionally a fused (GPU) planner.

A planner ``plan(q, k, cfg, scale)`` returns a :class:`~pbs.plan.SparsePlan`, or :class:`Dense` when the method
runs dense attention (``reason`` says why, e.g. the sequence is too short to be worth a sparse plan). The torch
planner is the reference; the fused planner (Triton kernels, ``@register_fused``) must return the same plan and
raises :class:`NotFused` for settings it does not cover, before doing any work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..plan import SparsePlan


@dataclass(frozen=True)
class Dense:
    """Run dense causal attention; ``reason`` is None when dense is the method itself."""

    reason: str | None = None


Planner = Callable[[Tensor, Tensor, object, float], "SparsePlan | Dense"]


class NotFused(Exception):
    """A fused planner does not cover these settings; the message says which (the torch planner runs instead)."""


@dataclass
class Method:
    name: str
    config_cls: type
    plan: Planner
    fused_plan: Planner | None = None


_REGISTRY: dict[str, Method] = {}


def register_method(name: str, config_cls: type) -> Callable[[Planner], Planner]:
    """Decorator: ``@register_method("pbs", PBSConfig)`` on a planner."""

    def wrap(fn: Planner) -> Planner:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        _REGISTRY[name] = Method(name, config_cls, fn)
        return fn

    return wrap


def register_fused(name: str) -> Callable[[Planner], Planner]:
    """Decorator: ``@register_fused("pbs")`` on the fused planner of an already registered method."""

    def wrap(fn: Planner) -> Planner:
        get_method(name).fused_plan = fn
        return fn

    return wrap


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method={name!r}; available methods: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def available_methods() -> list[str]:
    return sorted(_REGISTRY)
