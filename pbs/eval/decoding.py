"""Next-token choice for the ``pbs`` lm-eval model: greedy, or temperature / top-p sampling with a seeded generator.

LongBench v1 decodes greedily; LongBench v2's ``pred.py`` samples every call at temperature 0.1 (top-p unset:
1.0). Sampling here draws from a CPU :class:`torch.Generator` seeded per request from ``(seed, task, doc_id,
stage)``, so a run is reproducible whatever the request order, ``limit`` or device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """``temperature`` > 0 and 0 < ``top_p`` <= 1; ``None`` in place of a Sampling means greedy."""

    temperature: float
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got temperature={self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got top_p={self.top_p!r}")


def sampling_from_gen_kwargs(gen: dict) -> Sampling | None:
    """lm-eval ``generation_kwargs`` -> Sampling, or None for greedy (``do_sample`` false, or temperature 0, which
    the reference's server also treats as greedy)."""
    if not gen.get("do_sample"):
        return None
    temperature = float(gen.get("temperature", 1.0))
    if temperature == 0.0:
        return None
    return Sampling(temperature=temperature, top_p=float(gen.get("top_p", 1.0) or 1.0))


def request_seed(seed: int, *parts) -> int:
    """A 63-bit seed from the run's ``seed`` and the request's identity (task, doc id, stage)."""
    blob = "/".join(str(p) for p in (seed, *parts)).encode()
    return int(hashlib.sha256(blob).hexdigest()[:16], 16) & ((1 << 63) - 1)


def next_token(logits: torch.Tensor, sampling: Sampling | None, generator: torch.Generator | None) -> int:
    """argmax of ``logits`` (vocab,), or a draw from softmax(logits / T) restricted to the smallest set of tokens
    whose probability reaches ``top_p`` (the most likely token always stays)."""
    if sampling is None:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.detach().float().cpu() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of the tokens ranked above each token
        sorted_p[before >= sampling.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))
