"""LongBench v1 / LongBench-E / LongBench v2 scoring, re-implemented from the published rules.

The rules (``shared/research/baselines.md`` §4.5 and §4.6) are those of THUDM/LongBench ``metrics.py``, ``eval.py``
and ``result.py``; this module is written from their description, not copied.

v1, per sample: for trec, triviaqa, samsum and lsht the prediction is first stripped of leading newlines and cut at
the first newline; the sample's score is the maximum of the dataset's metric over every reference answer. A dataset
score is ``round(100 * mean, 2)``. LongBench-E buckets the same per-sample scores by the record's ``length`` field
(words or characters, not tokens): ``0-4k`` (< 4000), ``4-8k`` (< 8000), ``8k+``.

Aggregation (:func:`summarize`): a category's score is the mean of its dataset scores; Table 1's "Avg" is the mean
of the six category means (LongBench's README table, the paper's OpenCompass summarizer), not the mean over the 21
datasets (kept as ``dataset_mean``).

v2: the answer letter is extracted from the response (``*`` removed, ``The correct answer is (X)`` then
``The correct answer is X``; nothing found counts as wrong) and accuracy is reported in percent with one decimal for
overall, easy, hard, short, medium and long. An empty output is left out of the denominators, as the reference's
``pred.py`` never writes it (``empty_outputs="wrong"`` counts it wrong instead).

Middle truncation: v1 keeps ``int(L/2)`` tokens from each end (L - 1 for an odd budget L), v2 ``ids[:L//2] +
ids[-L//2:]`` (L tokens): :func:`middle_truncate_ids`'s ``rule``.

``jieba``, ``rouge`` and ``fuzzywuzzy`` (the reference's dependencies, ``pip install lm-eval[longbench]``) are imported
lazily, so this module imports without them.
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

# --------------------------------------------------------------------------------------------------- normalization

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)
# Chinese / full-width punctuation stripped by the zh normalization (in addition to ASCII punctuation).
_ZH_PUNCT = frozenset(
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_ALL_PUNCT = _ASCII_PUNCT | _ZH_PUNCT


def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_zh_answer(text: str) -> str:
    """Chinese: lower case, drop ASCII and Chinese punctuation, remove all whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _ALL_PUNCT)
    return "".join(text.split())


def _token_f1(prediction_tokens: Sequence[str], reference_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1; 0 when nothing overlaps (including when either side is empty)."""
    overlap = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _jieba():
    try:
        import jieba
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("the Chinese LongBench metrics need jieba: pip install 'lm-eval[longbench]'") from e
    jieba.setLogLevel(60)  # silence "Building prefix dict ..." on first use
    return jieba


def _cut(text: str) -> list[str]:
    return list(_jieba().cut(text, cut_all=False))


# --------------------------------------------------------------------------------------------------- v1 metrics
# Every metric has the signature metric(prediction, reference, **kwargs) -> float in [0, 1].


def qa_f1_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """Token F1 after SQuAD normalization, whitespace tokens."""
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """Token F1 over jieba words, each normalized (``normalize_zh_answer``), empty ones dropped."""
    pred = [t for t in (normalize_zh_answer(w) for w in _cut(prediction)) if t]
    ref = [t for t in (normalize_zh_answer(w) for w in _cut(ground_truth)) if t]
    return _token_f1(pred, ref)


@lru_cache(maxsize=1)
def _rouge():
    try:
        from rouge import Rouge
    except ImportError as e:  # pragma: no cover
        raise ImportError("the LongBench ROUGE metrics need the `rouge` package: pip install 'lm-eval[longbench]'") from e
    return Rouge()


def rouge_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """ROUGE-L F of the ``rouge`` package (``get_scores([pred], [ref], avg=True)``); any exception scores 0."""
    try:
        scores = _rouge().get_scores([prediction], [ground_truth], avg=True)
    except Exception:  # noqa: BLE001 - the reference treats every failure (e.g. an empty or punctuation-only side) as 0
        return 0.0
    return float(scores["rouge-l"]["f"])


def rouge_zh_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """``rouge_score`` on jieba words joined by spaces."""
    return rouge_score(" ".join(_cut(prediction)), " ".join(_cut(ground_truth)))


def classification_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None, **kwargs) -> float:
    """trec / lsht: 1/#matched labels if the gold label is among the labels found in the prediction, else 0.

    The labels found are those of ``all_classes`` that occur as substrings of the prediction. A found label that is
    a substring of the gold label but differs from it is then dropped -- the reference does this by removing items
    from the list it is iterating over, so the item right after each removed one is never examined. That quirk is
    reproduced here on purpose (it changes scores when two such labels are adjacent).
    """
    matches = [label for label in (all_classes or []) if label in prediction]
    i = 0
    while i < len(matches):  # a list iterator that keeps its index while the list shrinks under it
        term = matches[i]
        if term in ground_truth and term != ground_truth:
            matches.remove(term)  # removes the first equal item; the index still advances
        i += 1
    if ground_truth in matches:
        return 1.0 / len(matches)
    return 0.0


def _fraction_equal(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return sum(1 for n in numbers if n == target) / len(numbers)


def retrieval_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """passage_retrieval_en: fraction of the integers in the prediction equal to N of the reference "Paragraph N"."""
    gold = re.findall(r"Paragraph (\d+)", ground_truth)[0]
    return _fraction_equal(prediction, gold)


def retrieval_zh_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """passage_retrieval_zh: as ``retrieval_score`` with the reference pattern "段落N"."""
    gold = re.findall(r"段落(\d+)", ground_truth)[0]
    return _fraction_equal(prediction, gold)


def count_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """passage_count: fraction of the integers in the prediction equal to the reference count."""
    return _fraction_equal(prediction, str(ground_truth))


@lru_cache(maxsize=1)
def _fuzz():
    with warnings.catch_warnings():  # "Using slow pure-python SequenceMatcher": that is what the reference uses
        warnings.simplefilter("ignore")
        try:
            from fuzzywuzzy import fuzz
        except ImportError as e:  # pragma: no cover
            raise ImportError("code_sim_score needs fuzzywuzzy: pip install 'lm-eval[longbench]'") from e
    return fuzz


def first_code_line(prediction: str) -> str:
    """The first line (after stripping leading newlines) containing none of "`", "#", "//"; "" if there is none.

    Blank lines are not skipped (they qualify), as in the reference (lm-eval's v6 task skips them deliberately).
    """
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def code_sim_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """lcc / repobench-p: ``fuzzywuzzy.fuzz.ratio(first_code_line(prediction), reference) / 100``."""
    return _fuzz().ratio(first_code_line(prediction), ground_truth) / 100


# --------------------------------------------------------------------------------------------------- v1 tables

DATASET2METRIC: dict[str, Callable[..., float]] = {
    "narrativeqa": qa_f1_score,
    "qasper": qa_f1_score,
    "multifieldqa_en": qa_f1_score,
    "multifieldqa_zh": qa_f1_zh_score,
    "hotpotqa": qa_f1_score,
    "2wikimqa": qa_f1_score,
    "musique": qa_f1_score,
    "dureader": rouge_zh_score,
    "gov_report": rouge_score,
    "qmsum": rouge_score,
    "multi_news": rouge_score,
    "vcsum": rouge_zh_score,
    "trec": classification_score,
    "triviaqa": qa_f1_score,
    "samsum": rouge_score,
    "lsht": classification_score,
    "passage_retrieval_en": retrieval_score,
    "passage_count": count_score,
    "passage_retrieval_zh": retrieval_zh_score,
    "lcc": code_sim_score,
    "repobench-p": code_sim_score,
}

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

_V2_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_V2_BARE = re.compile(r"The correct answer is ([A-D])")

V2_BREAKDOWN: tuple[str, ...] = ("overall", "easy", "hard", "short", "medium", "long")


def extract_v2_answer(response: str) -> str | None:
    """The answer letter of a v2 response, or None (counted wrong).

    ``*`` is removed first (markdown bold), then ``The correct answer is (X)`` is searched, then
    ``The correct answer is X``.
    """
    response = response.replace("*", "")
    m = _V2_PAREN.search(response) or _V2_BARE.search(response)
    return m.group(1) if m else None


def v2_correct(response: str, answer: str) -> bool:
    return extract_v2_answer(response) == answer


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


# --------------------------------------------------------------------------------------------------- truncation


#: middle-truncation rules: "v1" = LongBench v1 ``pred.py`` (``half = int(L/2)`` tokens from each end, so an odd
#: budget keeps L - 1 tokens; each half decoded on its own), "v2" = LongBench v2 ``pred.py``
#: (``ids[:L//2] + ids[-L//2:]``: Python's floor division makes the tail ``ceil(L/2)``, so L tokens are kept; the
#: joined ids decoded at once)
TRUNCATION_RULES: tuple[str, ...] = ("v1", "v2")


def middle_truncate_ids(ids: Sequence[int], max_length: int, rule: str = "v1") -> tuple[list, list] | None:
    """LongBench middle truncation on a token list: ``(head, tail)`` -- ``max_length // 2`` tokens from the start and
    ``max_length // 2`` (rule "v1") or ``max_length - max_length // 2`` (rule "v2") from the end.

    Returns None when ``len(ids) <= max_length`` (nothing is cut).
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got max_length={max_length!r}")
    if rule not in TRUNCATION_RULES:
        raise ValueError(f"rule must be one of {TRUNCATION_RULES}, got rule={rule!r}")
    if len(ids) <= max_length:
        return None
    head = max_length // 2
    tail = head if rule == "v1" else max_length - head
    return list(ids[:head]), list(ids[-tail:])


def middle_truncate(prompt: str, tokenizer, max_length: int, *, rule: str = "v1") -> tuple[str, bool]:
    """Middle-truncate a prompt string to ``max_length`` tokens, before any chat template.

    The prompt is tokenized as the references do (the tokenizer's default special tokens). If it has more than
    ``max_length`` tokens, the halves of :func:`middle_truncate_ids` are decoded with ``skip_special_tokens=True``:
    each half separately and the strings concatenated (rule "v1", v1 ``pred.py``), or the joined halves at once
    (rule "v2", v2 ``pred.py``; differs only where a character spans the cut). Returns ``(prompt, truncated)``.
    """
    ids = tokenizer(prompt, truncation=False)["input_ids"]
    halves = middle_truncate_ids(ids, max_length, rule)
    if halves is None:
        return prompt, False
    head, tail = halves
    if rule == "v2":
        return tokenizer.decode(head + tail, skip_special_tokens=True), True
    return tokenizer.decode(head, skip_special_tokens=True) + tokenizer.decode(tail, skip_special_tokens=True), True
