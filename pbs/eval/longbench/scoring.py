"""LongBench scores as its sources compute them: per sample, per dataset, per category, Table 1's "Avg", and v2
accuracy (THUDM/LongBench ``LongBench/eval.py`` and ``result.py``, re-implemented from their description).

v1, per sample: for trec, triviaqa, samsum and lsht the prediction is first stripped of leading newlines and cut at
the first newline; the sample's score is the maximum of the dataset's metric (:data:`.metrics.DATASET2METRIC`) over
every reference answer. A dataset score is ``round(100 * mean, 2)``. LongBench-E buckets the same per-sample scores
by the record's ``length`` field (words or characters, not tokens): ``0-4k`` (< 4000), ``4-8k`` (< 8000), ``8k+``.

Aggregation (:func:`summarize`): a category's score is the mean of its dataset scores; Table 1's "Avg" is the mean
of the six category means (LongBench's README table, the paper's OpenCompass summarizer), not the mean over the 21
datasets (kept as ``dataset_mean``).

v2: accuracy in percent with one decimal for overall, easy, hard, short, medium and long. An empty output is left
out of the denominators, as the reference's ``pred.py`` never writes it (``empty_outputs="wrong"`` counts it wrong
instead).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .metrics import DATASET2METRIC, extract_v2_answer

#: the 21 v1 datasets, in LongBench's order
DATASETS: tuple[str, ...] = tuple(DATASET2METRIC)

#: the six categories (lm-eval's group names without the prefix) and their datasets
CATEGORIES: dict[str, tuple[str, ...]] = {
    "single": ("narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh"),
    "multi": ("hotpotqa", "2wikimqa", "musique", "dureader"),
    "summarization": ("gov_report", "qmsum", "multi_news", "vcsum"),
    "fewshot": ("trec", "triviaqa", "samsum", "lsht"),
    "synthetic": ("passage_count", "passage_retrieval_en", "passage_retrieval_zh"),
    "code": ("lcc", "repobench-p"),
}
CATEGORY_TITLES: dict[str, str] = {
    "single": "Single-Document QA",
    "multi": "Multi-Document QA",
    "summarization": "Summarization",
    "fewshot": "Few-shot Learning",
    "synthetic": "Synthetic Tasks",
    "code": "Code Completion",
}

#: the 13 LongBench-E datasets (hub configs ``<name>_e``)
LONGBENCH_E: tuple[str, ...] = (
    "qasper",
    "multifieldqa_en",
    "hotpotqa",
    "2wikimqa",
    "gov_report",
    "multi_news",
    "trec",
    "triviaqa",
    "samsum",
    "passage_count",
    "passage_retrieval_en",
    "lcc",
    "repobench-p",
)

#: datasets whose prediction is cut to its first line (after leading newlines) before scoring
FIRST_LINE_DATASETS: frozenset[str] = frozenset({"trec", "triviaqa", "samsum", "lsht"})

LENGTH_BUCKETS: tuple[str, ...] = ("0-4k", "4-8k", "8k+")


def base_dataset(name: str) -> str:
    """``hotpotqa_e`` -> ``hotpotqa``; unknown names raise ``ValueError``."""
    base = name[:-2] if name.endswith("_e") and name[:-2] in DATASET2METRIC else name
    if base not in DATASET2METRIC:
        raise ValueError(f"unknown LongBench dataset={name!r}; known: {sorted(DATASET2METRIC)} (+ '_e' variants)")
    return base


def category_of(dataset: str) -> str:
    base = base_dataset(dataset)
    return next(c for c, names in CATEGORIES.items() if base in names)


def length_bucket(length: float) -> str:
    """LongBench-E bucket of a record's ``length`` field (words or characters)."""
    if length < 4000:
        return "0-4k"
    if length < 8000:
        return "4-8k"
    return "8k+"


# --------------------------------------------------------------------------------------------------- v1 scoring


def postprocess_prediction(dataset: str, prediction: str) -> str:
    """The first-line rule for trec / triviaqa / samsum / lsht; other datasets unchanged."""
    if base_dataset(dataset) in FIRST_LINE_DATASETS:
        return prediction.lstrip("\n").split("\n")[0]
    return prediction


def score_sample(
    dataset: str, prediction: str, answers: Sequence[str] | str, all_classes: Sequence[str] | None = None
) -> float:
    """One sample's score in [0, 1]: the first-line rule where it applies, then the max over reference answers."""
    metric = DATASET2METRIC[base_dataset(dataset)]
    prediction = postprocess_prediction(dataset, prediction)
    if isinstance(answers, str):
        answers = [answers]
    best = 0.0
    for ref in answers:
        best = max(best, metric(prediction, ref, all_classes=all_classes))
    return best


def aggregate(sample_scores: Iterable[float], digits: int = 2) -> float:
    """Dataset score: ``round(100 * mean, digits)``; NaN for no samples."""
    scores = list(sample_scores)
    if not scores:
        return math.nan
    return round(100 * sum(scores) / len(scores), digits)


def score_dataset(
    dataset: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    all_classes: Sequence[Sequence[str] | None] | Sequence[str] | None = None,
) -> float:
    """A v1 dataset score (0-100, 2 decimals). ``all_classes`` may be one label list shared by all samples."""
    if len(predictions) != len(answers):
        raise ValueError(f"predictions ({len(predictions)}) and answers ({len(answers)}) differ in length")
    per_sample = _per_sample_classes(all_classes, len(predictions))
    return aggregate(score_sample(dataset, p, a, c) for p, a, c in zip(predictions, answers, per_sample))


def score_dataset_e(
    dataset: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    lengths: Sequence[int],
    all_classes: Sequence[Sequence[str] | None] | Sequence[str] | None = None,
) -> dict[str, float]:
    """LongBench-E: ``{"0-4k": .., "4-8k": .., "8k+": ..}`` (each ``round(100*mean, 2)``; NaN for an empty bucket)."""
    if not (len(predictions) == len(answers) == len(lengths)):
        raise ValueError("predictions, answers and lengths must have the same length")
    buckets: dict[str, list[float]] = {b: [] for b in LENGTH_BUCKETS}
    per_sample = _per_sample_classes(all_classes, len(predictions))
    for p, a, n, c in zip(predictions, answers, lengths, per_sample):
        buckets[length_bucket(n)].append(score_sample(dataset, p, a, c))
    return {b: aggregate(s) for b, s in buckets.items()}


def _per_sample_classes(all_classes, n: int) -> list:
    if all_classes is None:
        return [None] * n
    if all_classes and all(isinstance(c, str) for c in all_classes):  # one shared label list
        return [list(all_classes)] * n
    if len(all_classes) != n:
        raise ValueError(f"all_classes has {len(all_classes)} entries for {n} predictions")
    return list(all_classes)


def summarize(dataset_scores: dict[str, float]) -> dict:
    """LongBench v1 aggregation as its sources report it.

    ``<category>``: the mean of the category's dataset scores present; ``average``: the mean of the category means
    present -- Table 1's "Avg" (LongBench's README table, the paper's OpenCompass summarizer); ``dataset_mean``: the
    plain mean over the datasets present (what lm-eval's flat group would give; differs when categories have
    different sizes); ``n_datasets``: how many of the 21 datasets were scored. Values are rounded to 2 decimals
    at the end (the category means feeding ``average`` are not rounded first). NaN dataset scores are left out.
    """
    present = {base_dataset(d): s for d, s in dataset_scores.items() if not math.isnan(s)}
    out: dict = {}
    means = {}
    for cat, names in CATEGORIES.items():
        vals = [present[n] for n in names if n in present]
        if vals:
            means[cat] = sum(vals) / len(vals)
            out[cat] = round(means[cat], 2)
    if present:
        out["average"] = round(sum(means.values()) / len(means), 2)
        out["dataset_mean"] = round(sum(present.values()) / len(present), 2)
    out["n_datasets"] = len(present)
    return out



# --------------------------------------------------------------------------------------------------- LongBench v2

V2_BREAKDOWN: tuple[str, ...] = ("overall", "easy", "hard", "short", "medium", "long")

#: what happens to an item whose generation is the empty string: the reference's ``pred.py`` leaves it out of the
#: results file (``if output == '': continue``), so ``result.py`` never counts it ("drop"); "wrong" scores it 0
EMPTY_OUTPUT_RULES: tuple[str, ...] = ("drop", "wrong")


def check_empty_outputs(empty_outputs: str) -> str:
    if empty_outputs not in EMPTY_OUTPUT_RULES:
        raise ValueError(f"empty_outputs must be one of {EMPTY_OUTPUT_RULES}, got empty_outputs={empty_outputs!r}")
    return empty_outputs


def v2_accuracy(
    records: Sequence[dict],
    predictions: Sequence[str | None] | None = None,
    *,
    compensated: bool = False,
    empty_outputs: str = "drop",
) -> dict[str, float]:
    """Accuracy in percent (1 decimal) for overall / easy / hard / short / medium / long, plus ``n_scored`` and
    ``n_empty`` (items whose raw generation ``output`` is exactly ``""``).

    ``records`` carry ``difficulty``, ``length`` and ``answer``, optionally ``output`` (the raw generation);
    ``predictions`` are the extracted letters (or None). Without ``predictions`` each record's ``pred`` (extracted
    letter) or ``response`` (text) is used. ``empty_outputs="drop"`` (the reference) leaves empty outputs out of
    every denominator, ``"wrong"`` scores them 0. ``compensated=True`` counts an unanswered question as 0.25 (the
    reference's option, off by default). As in ``result.py``, a difficulty other than "easy" counts as hard and a
    length other than short/medium as long. A breakdown with no questions is NaN.
    """
    check_empty_outputs(empty_outputs)
    if predictions is None:
        predictions = [
            r["pred"] if "pred" in r else extract_v2_answer(r.get("response", r.get("output", ""))) for r in records
        ]
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    sums = {k: 0.0 for k in V2_BREAKDOWN}
    counts = {k: 0 for k in V2_BREAKDOWN}
    n_empty = 0
    for rec, pred in zip(records, predictions):
        if rec.get("output") == "":
            n_empty += 1
            if empty_outputs == "drop":
                continue
            pred = None
        if pred is None and compensated:
            acc = 0.25
        else:
            acc = 1.0 if pred == rec["answer"] else 0.0
        difficulty = "easy" if rec["difficulty"] == "easy" else "hard"
        length = rec["length"] if rec["length"] in ("short", "medium") else "long"
        for key in ("overall", difficulty, length):
            sums[key] += acc
            counts[key] += 1
    out: dict = {k: (round(100 * sums[k] / counts[k], 1) if counts[k] else math.nan) for k in V2_BREAKDOWN}
    out["n_scored"] = counts["overall"]
    out["n_empty"] = n_empty
    return out
