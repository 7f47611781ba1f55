"""Deterministic RULER-style synthetic samples (Hsieh et al. 2024, "RULER: What's the Real Context Size of Your
Long-Context Language Models?"), generated offline: nothing is downloaded.

Tasks (:data:`TASKS`):

- ``niah_single_1``   noise haystack ("The grass is green. ..."), one numeric needle
- ``niah_single_2``   KJV prose haystack, one numeric needle
- ``niah_single_3``   KJV prose haystack, one UUID-valued needle
- ``niah_multikey``   KJV haystack, the queried needle plus 3 distractor needles under other keys
- ``niah_multivalue`` KJV haystack, one key holding 4 values (all 4 expected)
- ``niah_multiquery`` KJV haystack, 4 keys queried at once (all 4 values expected)
- ``vt``              variable tracking: a chain ``VAR A = 12345``, ``VAR B = VAR A``, ... hidden in the noise
                      haystack; expected: every variable whose value is the number
- ``kv_retrieval``    a JSON object of UUID -> UUID pairs; expected: the value of one key (the last pair is cut
                      short, to a prefix of a UUID a side, to meet the length)

Prompts and needles follow RULER's templates (``synthetic.yaml``): each ``input`` is the whole prompt including
the question and the answer prefix. The haystack (the KJV, public domain, shipped at ``data/kjv.txt.gz``; see
``scripts/make_corpus.py``) is filled by binary search on the number of units (noise sentences, KJV words, JSON
pairs) so that ``count_tokens(input)`` is the largest value <= the target length; in practice within 2% of it.
Needles go in at unit boundaries (KJV: verse starts); over the samples of a task the (first) needle's depth is
stratified uniformly over [0, 1]. Every sample is a pure function of ``(task, length, index, seed)``.

Differences from RULER: no in-context example for ``vt``; the target is the length of the input itself (RULER
subtracts ``tokens_to_generate``); keys are adjective-noun pairs from a built-in list (RULER: ``wonderwords``).
"""

from __future__ import annotations

import gzip
import math
import random
import uuid
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "data" / "kjv.txt.gz"

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NOISE_SENTENCES = [s.strip() + "." for s in NOISE.split(".") if s.strip()]

TOLERANCE = 0.02  # |length - target| / target

# --------------------------------------------------------------------------------------------- templates (RULER)

NIAH_TEMPLATE = (
    "Some special magic {type_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_v} afterwards.\n{context}\n"
    "What are all the special magic {type_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = " The special magic {type_v} for {query} mentioned in the provided text are"
NIAH_NEEDLE = "One of the special magic {type_v} for {key} is: {value}."

VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned "
    "the value {query}, they are: "
)

KV_TEMPLATE = (
    "Extract the value corresponding to the specified key in the JSON object below.\n\n"
    "JSON data:\n{context}\n\nKey: \"{query}\"\n"
)
KV_ANSWER_PREFIX = "The value associated with the specified key is: "


def _niah_cfg(haystack: str, value: str, num_k: int = 1, num_v: int = 1, num_q: int = 1) -> dict:
    return {"kind": "niah", "haystack": haystack, "value": value, "num_k": num_k, "num_v": num_v, "num_q": num_q,
            "max_gen_toks": 128, "metric": "string_match_all"}


# task -> generator settings; ``metric``: RULER's scoring (niah / vt: all; RULER's qa tasks use part)
TASKS: dict[str, dict] = {
    "niah_single_1": _niah_cfg("noise", "numbers"),
    "niah_single_2": _niah_cfg("essay", "numbers"),
    "niah_single_3": _niah_cfg("essay", "uuids"),
    "niah_multikey": _niah_cfg("essay", "numbers", num_k=4),
    "niah_multivalue": _niah_cfg("essay", "numbers", num_v=4),
    "niah_multiquery": _niah_cfg("essay", "numbers", num_k=4, num_q=4),
    "vt": {"kind": "vt", "haystack": "noise", "num_chains": 1, "num_hops": 4, "max_gen_toks": 32,
           "metric": "string_match_all"},
    "kv_retrieval": {"kind": "kv", "max_gen_toks": 64, "metric": "string_match_all"},
}

# ----------------------------------------------------------------------------------------------------- scoring


def string_match_all(prediction: str, references: list[str]) -> float:
    """RULER's ``string_match_all`` for one sample: the fraction of references found (case-insensitive)."""
    if not references:
        return 0.0
    pred = prediction.lower()
    return sum(1.0 for r in references if r.lower() in pred) / len(references)


def string_match_part(prediction: str, references: list[str]) -> float:
    """RULER's ``string_match_part`` for one sample: 1 if any reference is found (case-insensitive)."""
    pred = prediction.lower()
    return 1.0 if any(r.lower() in pred for r in references) else 0.0


METRICS = {"string_match_all": string_match_all, "string_match_part": string_match_part}


def score(task: str, prediction: str, references: list[str]) -> float:
    """The sample's score in [0, 1] with the task's RULER metric (RULER reports 100 x the mean)."""
    return METRICS[TASKS[task]["metric"]](prediction, references)


# ------------------------------------------------------------------------------------------------ tokenizers


def approx_count_tokens(text: str) -> int:
    """Whitespace-based estimate: 1.3 tokens per plain word (letters and trailing punctuation; about right for
    English prose with Llama-style BPE), ``len / 2.5`` for any other piece (numbers, UUIDs, code). Pass a real
    tokenizer for exact lengths."""
    n = 0.0
    for w in text.split():
        if w.strip(_PUNCT).isalpha():
            n += 1.3
        else:
            n += max(1.0, len(w) / 2.5)
    return math.ceil(n)


_PUNCT = ".,;:!?'\"()[]{}"


@lru_cache(maxsize=4)
def hf_count_tokens(path: str) -> Callable[[str], int]:
    """``count_tokens`` of a Hugging Face tokenizer (a path or hub id; no special tokens counted; cached)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    return count


# ------------------------------------------------------------------------------------------------- vocabulary

ADJECTIVES = """abundant adorable agreeable ancient anxious aquatic bashful bitter blushing brave breezy bright
broad calm careful cheerful clever cloudy clumsy crooked curious damaged dazzling delicate dusty eager elegant
empty fancy fierce filthy fragile frantic friendly gentle gifted gleaming glossy graceful grumpy hollow honest
humble hungry icy jealous jolly juicy kind lively lonely loud lucky massive mellow mighty misty modern muddy
narrow nervous noisy obedient odd orange patient plain polite proud quaint quiet rapid rustic scarlet shaggy
shiny silent silky sleepy slimy smoky solid sour sparkling spicy steady sticky stormy sturdy swift tame tender
thoughtful tidy tiny tough wandering wary wealthy weary whimsical wicked wise witty wooden zealous""".split()  # noqa: SIM905
NOUNS = """acorn airport anchor apple arch badge bakery balloon banjo barn basket beacon bicycle blanket bottle
bracelet bridge bucket cabin camera candle canyon carpet castle cellar chimney circus cliff clock compass cottage
crater crown curtain daisy desert diamond dragon drum eagle engine falcon feather ferry fiddle forest fountain
garden garlic glacier goblet harbor helmet hammer island jacket jungle kettle kitten ladder lantern lemon library
lighthouse magnet marble meadow mirror monkey mountain needle notebook orchard oyster paddle palace parrot pebble
pencil pepper piano pillow pirate planet pocket pumpkin puzzle quilt rabbit radio raven ribbon river rocket saddle
sailboat scarf shelter shovel silver spider sponge statue sunflower teapot tiger tunnel umbrella valley violin
wagon walrus whistle window wizard""".split()  # noqa: SIM905
VAR_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _key(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def _number(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _distinct(make: Callable[[], str], n: int, avoid=()) -> list[str]:
    out: list[str] = []
    seen = set(avoid)
    while len(out) < n:
        x = make()
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


# --------------------------------------------------------------------------------------------------- haystacks


@lru_cache(maxsize=1)
def corpus_verses() -> tuple[str, ...]:
    """The KJV, one verse a line (31,102 lines)."""
    return tuple(gzip.decompress(CORPUS.read_bytes()).decode("utf-8").splitlines())


class _Units:
    """An endless, lazily extended stream of haystack units with the indices where a needle may go in."""

    def __init__(self, kind: str, rng: random.Random):
        self.kind = kind
        self.units: list[str] = []
        self.boundaries: list[int] = [0]  # unit indices starting a sentence / verse
        if kind == "essay":
            verses = corpus_verses()
            self._next = rng.randrange(len(verses))
        elif kind == "noise":
            self._next = 0
        else:
            raise ValueError(f"unknown haystack {kind!r}")

    def ensure(self, n: int) -> None:
        while len(self.units) < n:
            if self.kind == "noise":
                self.units.append(NOISE_SENTENCES[self._next % len(NOISE_SENTENCES)])
                self._next += 1
                self.boundaries.append(len(self.units))
            else:
                verses = corpus_verses()
                self.units.extend(verses[self._next % len(verses)].split())
                self._next += 1
                self.boundaries.append(len(self.units))

    def text(self, n: int, needles: list[tuple[float, str]]) -> str:
        """The first ``n`` units with each ``(depth, sentence)`` inserted at the boundary nearest depth x n
        (needles keep their given order at one boundary)."""
        self.ensure(n)
        allowed = [b for b in self.boundaries if b <= n]
        if allowed[-1] != n:
            allowed.append(n)
        at: dict[int, list[str]] = {}
        for depth, sentence in needles:
            target = depth * n
            pos = min(allowed, key=lambda b: (abs(b - target), b))
            at.setdefault(pos, []).append(sentence)
        parts: list[str] = []
        prev = 0
        for pos in sorted(at):
            parts.extend(self.units[prev:pos])
            parts.extend(at[pos])
            prev = pos
        parts.extend(self.units[prev:n])
        return " ".join(parts)


def _fit(build: Callable[[int], str], count_tokens: Callable[[str], int], target: int) -> tuple[int, str]:
    """Largest ``n`` with ``count_tokens(build(n)) <= target`` (exponential then binary search); its text."""
    lo, lo_text = 0, build(0)
    if count_tokens(lo_text) > target:
        raise ValueError(f"a RULER length of {target} tokens is shorter than the task's bare prompt "
                         f"({count_tokens(lo_text)} tokens): raise task.lengths (e.g. task.lengths=[1024])")
    hi = 64
    while True:
        text = build(hi)
        if count_tokens(text) > target:
            break
        lo, lo_text = hi, text
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        text = build(mid)
        if count_tokens(text) <= target:
            lo, lo_text = mid, text
        else:
            hi = mid
    return lo, lo_text


# -------------------------------------------------------------------------------------------------- generators


def _join_query(keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    return ", ".join(keys[:-1]) + ", and " + keys[-1]


def _niah(cfg: dict, rng: random.Random, depth: float, count_tokens, target: int) -> dict:
    type_v = cfg["value"]
    make_v = (lambda: _number(rng)) if type_v == "numbers" else (lambda: _uuid(rng))
    keys = _distinct(lambda: _key(rng), cfg["num_k"])
    flat = _distinct(make_v, len(keys) * cfg["num_v"])  # all values distinct, across keys too
    values = [flat[i * cfg["num_v"]:(i + 1) * cfg["num_v"]] for i in range(len(keys))]
    needles = [(k, v) for k, vs in zip(keys, values) for v in vs]
    # the first needle (a queried key's first value) gets the stratified depth, the others uniform random depths
    depths = [depth] + [rng.random() for _ in needles[1:]]
    order = list(range(len(needles)))
    sentences = [(d, NIAH_NEEDLE.format(type_v=type_v, key=k, value=v)) for d, (k, v) in zip(depths, needles)]
    rng.shuffle(order)  # needles sharing a boundary go in shuffled order
    sentences = [sentences[i] for i in order]
    queried = keys[: cfg["num_q"]]
    outputs = [v for k, vs in zip(keys, values) if k in queried for v in vs]
    query = _join_query(queried)
    units = _Units(cfg["haystack"], rng)
    suffix = NIAH_ANSWER_PREFIX.format(type_v=type_v, query=query)

    def build(n: int) -> str:
        ctx = units.text(n, sentences)
        return NIAH_TEMPLATE.format(type_v=type_v, context=ctx, query=query) + suffix

    _, text = _fit(build, count_tokens, target)
    return {"input": text, "outputs": outputs, "depth": round(depth, 4)}


def _vt(cfg: dict, rng: random.Random, depth: float, count_tokens, target: int) -> dict:
    n_vars = cfg["num_hops"] + 1
    names = _distinct(lambda: "".join(rng.choice(VAR_ALPHABET) for _ in range(5)), n_vars * cfg["num_chains"])
    values = _distinct(lambda: str(rng.randint(10_000, 99_999)), cfg["num_chains"])
    chains = []
    for c in range(cfg["num_chains"]):
        vs = names[c * n_vars:(c + 1) * n_vars]
        chains.append([f"VAR {vs[0]} = {values[c]}."] + [f"VAR {vs[i]} = VAR {vs[i - 1]}." for i in range(1, n_vars)])
    sentences = []
    for c, chain in enumerate(chains):
        # chain 0 starts at the stratified depth; statements keep their order further in
        start = depth if c == 0 else rng.random()
        ds = sorted([start] + [start + (1 - start) * rng.random() for _ in chain[1:]])
        sentences += list(zip(ds, chain))
    outputs = names[:n_vars]
    query = values[0]
    units = _Units(cfg["haystack"], rng)
    suffix = VT_ANSWER_PREFIX.format(num_v=n_vars, query=query)

    def build(n: int) -> str:
        return VT_TEMPLATE.format(context=units.text(n, sentences), query=query) + suffix

    _, text = _fit(build, count_tokens, target)
    return {"input": text, "outputs": outputs, "depth": round(depth, 4)}


def _kv(cfg: dict, rng: random.Random, depth: float, count_tokens, target: int) -> dict:
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    key, value = _distinct(lambda: _uuid(rng), 2)
    seen.update((key, value))

    def ensure(n: int) -> None:
        while len(pairs) < n:
            k, v = _distinct(lambda: _uuid(rng), 2, avoid=seen)
            seen.update((k, v))
            pairs.append((k, v))

    def build(n: int, m: int = 0) -> str:
        """``n`` pairs with the queried one at depth x n, then the next pair cut to ``m`` characters a side."""
        ensure(n + 1)
        items = list(pairs[:n])
        items.insert(min(n, round(depth * n)), (key, value))
        if m:
            items.append((pairs[n][0][:m], pairs[n][1][:m]))
        ctx = "{" + ",\n ".join(f'"{k}": "{v}"' for k, v in items) + "}"
        return KV_TEMPLATE.format(context=ctx, query=key) + KV_ANSWER_PREFIX

    # a pair is many tokens (~50 with Llama-style BPE): fill the remainder with a shortened last pair
    n, text = _fit(build, count_tokens, target)
    lo, hi = 0, 36
    while hi - lo > 1:
        mid = (lo + hi) // 2
        cand = build(n, mid)
        if count_tokens(cand) <= target:
            lo, text = mid, cand
        else:
            hi = mid
    return {"input": text, "outputs": [value], "depth": round(depth, 4)}


_KINDS = {"niah": _niah, "vt": _vt, "kv": _kv}


def generate_sample(task: str, length: int, index: int, *, num_samples: int = 20, seed: int = 42,
                    count_tokens: Callable[[str], int] | None = None) -> dict:
    """Sample ``index`` of ``num_samples`` of ``task`` at ``length`` target tokens (depends only on these and
    ``seed``): ``{"input", "outputs", "length", "max_length", "task", "index", "depth"}``."""
    if task not in TASKS:
        raise KeyError(f"unknown RULER task {task!r}; known: {sorted(TASKS)}")
    count_tokens = count_tokens or approx_count_tokens
    cfg = TASKS[task]
    rng = random.Random(f"pbs-ruler/{seed}/{task}/{length}/{index}")
    depth = (index + rng.random()) / max(num_samples, 1)  # stratified: one sample per 1/num_samples slice
    sample = _KINDS[cfg["kind"]](cfg, rng, depth, count_tokens, length)
    sample.update(length=count_tokens(sample["input"]), max_length=length, task=task, index=index)
    return sample


def generate(task: str, length: int = 4096, num_samples: int = 20, seed: int = 42,
             count_tokens: Callable[[str], int] | None = None) -> list[dict]:
    """``num_samples`` samples of ``task`` at ``length`` target tokens (see :func:`generate_sample`)."""
    return [generate_sample(task, length, i, num_samples=num_samples, seed=seed, count_tokens=count_tokens)
            for i in range(num_samples)]
