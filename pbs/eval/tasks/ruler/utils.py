"""Functions the ``pbs_ruler_*`` task YAMLs point at (``!function utils.<name>``).

Samples are generated on the fly by :mod:`pbs.eval.ruler.generate` (nothing is downloaded) and cached on disk
(:mod:`pbs.eval.ruler.cache`). Settings come from the task metadata only (``TaskManager(metadata={...})``,
lm-eval's ``--metadata '{...}'``, :func:`pbs.eval.harness.evaluate`'s ``ruler=``): lengths ``max_seq_lengths``
(or ``length``), ``num_samples``, ``seed``; what is absent takes :class:`pbs.eval.ruler.settings.RulerSettings`'s
defaults. ``tokenizer`` (a path or hub id; ``evaluate`` passes the evaluated model's) measures the lengths; without
it a whitespace approximation (ceil(1.3 x words)) does.
"""

from __future__ import annotations

from pbs.eval.ruler import generate as _gen
from pbs.eval.ruler.cache import cached_generate
from pbs.eval.ruler.settings import RulerSettings
from pbs.eval.tasks.common import aggregate_score

__all__ = ["aggregate_score"]  # the YAMLs point at it here

LENGTH_BUCKETS = (4096, 8192, 16384, 32768, 65536, 131072)  # per-length metrics listed in the YAMLs


def load(ruler_task: str, tokenizer=None, **metadata):
    """``custom_dataset``: ``{"test": Dataset}`` of generated samples (``input``, ``outputs``, ``length``,
    ``max_length``, ``task``, ``index``, ``depth``) at each length of the settings in ``metadata``."""
    import datasets

    settings = RulerSettings.from_metadata(**metadata)
    tok = str(tokenizer) if tokenizer else None
    records = []
    for n in settings.lengths:
        records += cached_generate(ruler_task, n, settings.samples, settings.seed, tok)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})


def doc_to_text(doc: dict) -> str:
    return doc["input"]


def doc_to_target(doc: dict) -> list[str]:
    return list(doc["outputs"])


def process_results(doc: dict, results: list[str]) -> dict:
    metric = _gen.TASKS[doc["task"]]["metric"]
    value = _gen.METRICS[metric](results[0], list(doc["outputs"]))
    out = {"score": value, metric: value}
    for n in LENGTH_BUCKETS:
        out[f"score_{n}"] = value if doc["max_length"] == n else None
    return out
