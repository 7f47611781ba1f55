"""LongBench per-sample metrics (v1) and answer extraction (v2), re-implemented from the published rules.

The rules are those of THUDM/LongBench ``LongBench/metrics.py`` (v1) and ``result.py`` (v2); this module is written
from their description, not copied. Every v1 metric has the signature ``metric(prediction, reference, **kwargs)
-> float`` in [0, 1]; :data:`DATASET2METRIC` is ``LongBench/eval.py``'s table. v2: the answer letter is extracted
from the response (``*`` removed, ``The correct answer is (X)`` then ``The correct answer is X``; nothing found
counts as wrong). Aggregation (dataset scores, categories, Table 1's "Avg", v2 accuracy): :mod:`.scoring`.

``jieba``, ``rouge`` and ``fuzzywuzzy`` (the reference's dependencies, ``pip install lm-eval[longbench]``) are imported
lazily, so this module imports without them.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
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


# --------------------------------------------------------------------------------------------------- LongBench v2

_V2_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_V2_BARE = re.compile(r"The correct answer is ([A-D])")


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
