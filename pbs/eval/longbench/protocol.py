"""LongBench v2's protocol settings: one dataclass, used by :func:`pbs.eval.harness.evaluate` and as the ``v2``
part of a LongBench task config (``conf/task/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..decoding import Sampling
from .prompts import V2_TEMPERATURE
from .scoring import check_empty_outputs

V2_DECODINGS = ("sample", "greedy")


@dataclass
class V2Protocol:
    """LongBench v2 settings (defaults: the reference's ``pred.py`` / ``result.py``).

    ``decoding``: ``"sample"`` (temperature ``temperature``, top-p ``top_p``; seeded per question from ``seed``,
    which ``pred.py`` does not set) or ``"greedy"``; ``empty_outputs``: ``"drop"`` an empty generation from the
    denominators or count it ``"wrong"``; ``rag_top_n``: retrieved chunks per question for
    ``pbs_longbench_v2_rag`` (the official ``--rag N``; required there).
    """

    decoding: str = "sample"
    temperature: float = V2_TEMPERATURE
    top_p: float = 1.0
    seed: int = 42
    empty_outputs: str = "drop"
    rag_top_n: int | None = None

    def __post_init__(self) -> None:
        if self.decoding not in V2_DECODINGS:
            raise ValueError(f"decoding must be one of {V2_DECODINGS}, got decoding={self.decoding!r}")
        Sampling(self.temperature, self.top_p)  # validates both
        check_empty_outputs(self.empty_outputs)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got seed={self.seed!r}")
        if self.rag_top_n is not None and (isinstance(self.rag_top_n, bool) or not isinstance(self.rag_top_n, int)
                                           or self.rag_top_n < 1):
            raise ValueError(f"rag_top_n must be an integer >= 1 or None, got rag_top_n={self.rag_top_n!r}")

    def gen_kwargs(self) -> dict | None:
        """lm-eval ``gen_kwargs`` for every task: only tasks that sample (v2) are affected -- greedy tasks ignore a
        temperature, and ``do_sample=False`` turns the v2 tasks greedy."""
        if self.decoding == "greedy":
            return {"do_sample": False}
        if (self.temperature, self.top_p) != (V2_TEMPERATURE, 1.0):
            return {"temperature": self.temperature, "top_p": self.top_p}
        return None

    def metadata(self) -> dict:
        """The lm-eval task metadata the v2 task loaders read."""
        out: dict = {"v2_empty_outputs": self.empty_outputs}
        if self.rag_top_n is not None:
            out["rag_top_n"] = self.rag_top_n
        return out
