"""The RULER-style suite's settings: one dataclass, the single source of their defaults.

Used by the lm-eval tasks ``pbs_ruler_*`` (built from the task metadata, :meth:`RulerSettings.from_metadata`), by
:func:`pbs.eval.harness.evaluate` (``ruler=``, passed to the tasks as metadata: never through the environment, so
two configurations in one process cannot leak into each other) and by the Hydra task config ``conf/task/ruler.yaml``
(:class:`pbs.eval.config.RulerTask` extends it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _parse_lengths(value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        return [int(x) for x in value.replace(" ", "").split(",") if x]
    return [int(x) for x in value]


@dataclass
class RulerSettings:
    """``lengths``: context lengths in tokens of the evaluated model's tokenizer, each scored on its own
    (``score_<length>``); ``samples``: samples per task and length; ``seed``: every sample is a pure function of
    (task, length, index, seed)."""

    lengths: list[int] = field(default_factory=lambda: [4096, 8192, 16384, 32768])
    samples: int = 20
    seed: int = 42

    def __post_init__(self) -> None:
        try:
            self.lengths = _parse_lengths(self.lengths)
        except (TypeError, ValueError):
            raise ValueError(f"lengths must be token counts, e.g. lengths=[4096, 8192] (task.lengths=[4096,8192]), "
                             f"got lengths={self.lengths!r}") from None
        if not self.lengths or any(n < 64 for n in self.lengths):
            raise ValueError(f"lengths must be a non-empty list of token counts >= 64, got lengths={self.lengths!r}")
        for name in ("samples", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "samples" else 0):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'samples' else 0}, got "
                                 f"{name}={value!r}")

    def metadata(self) -> dict:
        """lm-eval task metadata (the keys of lm-eval's own RULER tasks: ``max_seq_lengths``, ``num_samples``)."""
        return {"max_seq_lengths": list(self.lengths), "num_samples": self.samples, "seed": self.seed}

    @classmethod
    def from_metadata(cls, length=None, max_seq_lengths=None, num_samples=None, seed=None, **_ignored) -> RulerSettings:
        """Settings from lm-eval task metadata (``--metadata '{"max_seq_lengths": [4096], "num_samples": 5}'``;
        ``length`` is an alias of ``max_seq_lengths``; an int, a list or "4096,8192"); what is absent takes the
        defaults. Other metadata (lm-eval passes the model args too) is ignored."""
        given = {"lengths": next((v for v in (length, max_seq_lengths) if v not in (None, "", [])), None),
                 "samples": None if num_samples in (None, "") else int(num_samples),
                 "seed": None if seed in (None, "") else int(seed)}
        return cls(**{k: v for k, v in given.items() if v is not None})
