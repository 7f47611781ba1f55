"""Functions the ``pbs_ruler_*`` task YAMLs point at (``!function utils.<name>``).

Samples are generated on the fly by :mod:`pbs.eval.ruler.generate` (nothing is downloaded). Settings, first found
wins: task metadata (``TaskManager(metadata={...})``, lm-eval's ``--metadata '{...}'``, or the YAML), then the
environment, then the default:

- length(s) in tokens: ``length`` / ``max_seq_lengths`` (an int, a list, or "4096,8192"); ``$PBS_RULER_LENGTH``;
  4096. Several lengths give ``num_samples`` samples at each, scored per length as ``score_<length>``.
- samples per length: ``num_samples``; ``$PBS_RULER_SAMPLES``; 20
- seed: ``seed``; ``$PBS_RULER_SEED``; 42
- tokenizer that measures the length: ``tokenizer`` (a path or hub id); ``$PBS_RULER_TOKENIZER``; else a
  whitespace approximation (ceil(1.3 x words)). Use the evaluated model's tokenizer for exact lengths.

Generated samples are cached on disk (:mod:`pbs.eval.ruler.cache`, ``$PBS_RULER_CACHE``).
"""

from __future__ import annotations

import os

from pbs.eval import metrics as _metrics
from pbs.eval.ruler import generate as _gen
from pbs.eval.ruler.cache import cached_generate

LENGTH_BUCKETS = (4096, 8192, 16384, 32768, 65536, 131072)  # per-length metrics listed in the YAMLs


def _first(*values):
    return next((v for v in values if v not in (None, "", [])), None)


def parse_lengths(value) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        return [int(x) for x in value.replace(" ", "").split(",") if x]
    return [int(x) for x in value]


def settings(length=None, max_seq_lengths=None, num_samples=None, seed=None, tokenizer=None) -> dict:
    lengths = parse_lengths(_first(length, max_seq_lengths, os.environ.get("PBS_RULER_LENGTH"), 4096))
    return {
        "lengths": lengths,
        "num_samples": int(_first(num_samples, os.environ.get("PBS_RULER_SAMPLES"), 20)),
        "seed": int(_first(seed, os.environ.get("PBS_RULER_SEED"), 42)),
        "tokenizer": _first(tokenizer, os.environ.get("PBS_RULER_TOKENIZER")),
    }


def load(ruler_task: str, length=None, max_seq_lengths=None, num_samples=None, seed=None, tokenizer=None,
         **_ignored):
    """``custom_dataset``: ``{"test": Dataset}`` of generated samples (``input``, ``outputs``, ``length``,
    ``max_length``, ``task``, ``index``, ``depth``). Other metadata (lm-eval passes the model args too) is
    ignored."""
    import datasets

    s = settings(length, max_seq_lengths, num_samples, seed, tokenizer)
    tok = str(s["tokenizer"]) if s["tokenizer"] else None
    records = []
    for n in s["lengths"]:
        records += cached_generate(ruler_task, n, s["num_samples"], s["seed"], tok)
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


def aggregate_score(items: list) -> float:
    """RULER's task score: ``round(100 * mean, 2)`` (None entries -- other lengths -- skipped); NaN if empty."""
    return _metrics.aggregate(x for x in items if x is not None)
