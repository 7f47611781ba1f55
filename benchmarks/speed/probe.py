"""Attention's share of a forward, measured inside it without synchronising.

While active, :class:`AttentionProbe` replaces the model's registered attention function (transformers'
``AttentionInterface`` entry of its ``attn_implementation``: ``sdpa`` or ``pbs_<method>``) by a wrapper that records
a pair of CUDA events around every call, and, for the pbs functions, a pair around the planning step
(``pbs.plan`` as ``pbs.hf.attention`` calls it). Events are recorded on the stream, never waited on: the forward
runs as it would unobserved (one event pair per layer costs microseconds against a forward of milliseconds to
seconds). After the timed forwards have been synchronised, :meth:`AttentionProbe.per_call` sums, per forward, the
attention time (planning + kernel) and the planning time. On the CPU the same is done with ``time.perf_counter``.
"""

from __future__ import annotations

import time
from typing import Self

import torch


class _Stamp:
    """A point in time on the device's stream (CUDA event) or on the host clock (CPU)."""

    def __init__(self, cuda: bool):
        self.event = torch.cuda.Event(enable_timing=True) if cuda else None
        if cuda:
            self.event.record()
        self.t = None if cuda else time.perf_counter()

    def ms_until(self, other: _Stamp) -> float:
        if self.event is not None:
            return self.event.elapsed_time(other.event)
        return (other.t - self.t) * 1e3


def _planner(plan) -> str:
    if hasattr(plan, "planner"):
        return plan.planner + (f" ({plan.planner_note})" if plan.planner_note else "")
    return f"dense ({getattr(plan, 'reason', '')})"


class AttentionProbe:
    """Context manager timing the attention (and planning) calls of each forward of ``model``.

    Call :meth:`new_call` at the start of each forward; :meth:`per_call` then gives one
    ``{"attention_ms", "plan_ms", "calls"}`` per forward (read after a synchronisation).
    """

    def __init__(self, model, cuda: bool):
        self.name = model.config._attn_implementation
        self.cuda = cuda
        self._calls: list[dict[str, list]] = []
        self._saved = None
        self.planners: set[str] = set()  # what built the plans: "triton", "torch (<why>)", "dense (<why>)"

    def new_call(self) -> None:
        self._calls.append({"attention": [], "plan": []})

    def _log(self, kind: str, start: _Stamp, end: _Stamp) -> None:
        if self._calls:
            self._calls[-1][kind].append((start, end))

    def __enter__(self) -> Self:
        from transformers import AttentionInterface

        import pbs.hf.attention as hf_attention

        original = AttentionInterface._global_mapping[self.name]
        plan = hf_attention.plan

        def timed_attention(*args, **kwargs):
            start = _Stamp(self.cuda)
            out = original(*args, **kwargs)
            self._log("attention", start, _Stamp(self.cuda))
            return out

        def timed_plan(*args, **kwargs):
            start = _Stamp(self.cuda)
            out = plan(*args, **kwargs)
            self._log("plan", start, _Stamp(self.cuda))
            self.planners.add(_planner(out))
            return out

        self._saved = (original, plan)
        AttentionInterface.register(self.name, timed_attention)
        hf_attention.plan = timed_plan
        return self

    def __exit__(self, *exc) -> None:
        from transformers import AttentionInterface

        import pbs.hf.attention as hf_attention

        original, plan = self._saved
        AttentionInterface.register(self.name, original)
        hf_attention.plan = plan

    def per_call(self, last: int | None = None) -> list[dict]:
        """Per forward (the last ``last`` ones): summed attention and planning milliseconds, attention calls."""
        calls = self._calls if last is None else self._calls[-last:]
        return [{"attention_ms": sum(s.ms_until(e) for s, e in c["attention"]),
                 "plan_ms": sum(s.ms_until(e) for s, e in c["plan"]),
                 "calls": len(c["attention"])} for c in calls]
