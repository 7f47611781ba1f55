"""LongBench's middle truncation of an over-long prompt, before any chat template: v1 keeps ``int(L/2)`` tokens
from each end (L - 1 for an odd budget L), v2 ``ids[:L//2] + ids[-L//2:]`` (L tokens), as the two ``pred.py`` do."""

from __future__ import annotations

from collections.abc import Sequence

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
