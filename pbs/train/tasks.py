"""Training samples of the RULER task family, assembled from token ids fast enough to feed a GPU.

Each sample mirrors the evaluation prompt of its task in :mod:`pbs.eval.ruler.generate` (same templates, needles,
key vocabulary, value kinds, haystacks), but is built from haystack *units* (KJV verses, noise sentences, JSON
pairs) tokenized one at a time and concatenated. Every unit starts with the space that joins it to its neighbour,
so each unit boundary is a pre-tokenizer boundary and the concatenation equals the tokenization of the whole text
(the first unit of a context is re-encoded without its space). A 16K-token sample costs about a millisecond
instead of the generator's binary search over the tokenizer.

Differences from evaluation samples, on purpose: needle depths and the queried pair are uniform at random (not
stratified); the haystack has whole units only, so the sample (prompt + answer + eos) is at most ``length`` tokens
and shorter by less than one unit; the answer is spelled out (``" 1234567, 7654321."``, ``"ABCDE FGHIJ ..."``,
the UUID) so that the model learns to stop with eos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pbs.eval.ruler import generate as ruler

TASKS = tuple(ruler.TASKS)


@dataclass
class TaskSample:
    """``ids`` [n] int64 = bos + prompt + answer + eos (n <= length); ``prompt_len`` includes bos."""

    task: str
    ids: np.ndarray
    prompt_len: int
    outputs: list[str]


class TaskSampler:
    """Samples of the RULER tasks (names of :data:`pbs.eval.ruler.generate.TASKS`) over a tokenizer.

    ``verse_range``: the [start, stop) fraction of the KJV verses haystacks are cut from (training and held-out
    samples use disjoint ranges).
    """

    def __init__(self, tokenizer, verse_range: tuple[float, float] = (0.0, 1.0)):
        self.tok = tokenizer
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        verses = [" ".join(v.split()) for v in ruler.corpus_verses()]
        lo, hi = (int(f * len(verses)) for f in verse_range)
        if hi - lo < 16:
            raise ValueError(f"verse_range {verse_range} leaves {hi - lo} verses")
        self.essay = _UnitStream(self, verses[lo:hi])
        self.noise = _UnitStream(self, ruler.NOISE_SENTENCES)
        self._fixed: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------------------------------------ helpers

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64)
                for e in self.tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _enc1(self, text: str) -> np.ndarray:
        if text not in self._fixed:  # templates repeat; keys and values do not
            if len(self._fixed) > 4096:
                self._fixed.clear()
            self._fixed[text] = self.encode([text])[0]
        return self._fixed[text]

    def _assemble(self, task, head, units, tail, answer, outputs) -> TaskSample:
        """head + context units (first one without its joining space) + tail, then answer + eos."""
        ctx = []
        if units:
            first_text, _ = units[0]
            ctx = [self.encode([first_text.lstrip(" ")])[0]] + [ids for _, ids in units[1:]]
        prompt = np.concatenate([[self.bos], head, *ctx, tail]).astype(np.int64)
        ids = np.concatenate([prompt, answer, [self.eos]]).astype(np.int64)
        return TaskSample(task, ids, len(prompt), outputs)

    def verify(self, length: int = 1024, seed: int = 0) -> None:
        """Raise RuntimeError unless one sample per task re-tokenizes, as text, to the same ids (a tokenizer whose
        unit boundaries are not pre-tokenizer boundaries would train on prompts the evaluation never shows)."""
        rng = np.random.default_rng(seed)
        for task in TASKS:
            s = self.sample(task, length, rng)
            prompt = s.ids[1 : s.prompt_len]
            again = self.encode([self.tok.decode(prompt)])[0]
            if not np.array_equal(again, prompt):
                i = int(np.argmax(again[: len(prompt)] != prompt[: len(again)])) if len(again) else 0
                raise RuntimeError(
                    f"{task}: token-space sample differs from the tokenized text at token {i}: "
                    f"{self.tok.decode(prompt[max(0, i - 3): i + 3])!r} vs {self.tok.decode(again[max(0, i - 3): i + 3])!r}"
                )

    # ------------------------------------------------------------------------------------------------ samples

    def sample(self, task: str, length: int, rng: np.random.Generator) -> TaskSample:
        """One sample of ``task`` with at most ``length`` tokens."""
        if task not in ruler.TASKS:
            raise ValueError(f"task={task!r} is not a RULER task; known: {list(TASKS)}")
        cfg = ruler.TASKS[task]
        kind = cfg["kind"]
        out = (self._niah(task, cfg, length, rng) if kind == "niah" else
               self._vt(task, cfg, length, rng) if kind == "vt" else self._kv(task, length, rng))
        if len(out.ids) > length:
            raise ValueError(f"length={length} is too short for a {task} sample ({len(out.ids)} tokens)")
        return out

    def _niah(self, task, cfg, length, rng) -> TaskSample:
        type_v = cfg["value"]
        keys = _distinct(lambda: f"{rng.choice(ruler.ADJECTIVES)}-{rng.choice(ruler.NOUNS)}", cfg["num_k"])
        make_v = (lambda: _number(rng)) if type_v == "numbers" else (lambda: _uuid(rng))
        flat = _distinct(make_v, len(keys) * cfg["num_v"])
        values = [flat[i * cfg["num_v"]:(i + 1) * cfg["num_v"]] for i in range(len(keys))]
        needles = [" " + ruler.NIAH_NEEDLE.format(type_v=type_v, key=k, value=v)
                   for k, vs in zip(keys, values) for v in vs]
        queried = keys[: cfg["num_q"]]
        outputs = [v for k, vs in zip(keys, values) if k in queried for v in vs]
        query = ruler._join_query(queried)
        head_text, tail_text = ruler.NIAH_TEMPLATE.format(type_v=type_v, context="\0", query=query).split("\0")
        head = self._enc1(head_text)
        tail = self.encode([tail_text + ruler.NIAH_ANSWER_PREFIX.format(type_v=type_v, query=query)])[0]
        answer = self.encode([" " + ", ".join(outputs) + "."])[0]
        stream = self.essay if cfg["haystack"] == "essay" else self.noise
        depths = rng.random(len(needles))
        return self._with_haystack(task, stream, head, tail, answer, needles, depths, outputs, length, rng)

    def _vt(self, task, cfg, length, rng) -> TaskSample:
        n_vars = cfg["num_hops"] + 1
        names = _distinct(lambda: "".join(rng.choice(list(ruler.VAR_ALPHABET), 5)), n_vars * cfg["num_chains"])
        values = _distinct(lambda: str(rng.integers(10_000, 100_000)), cfg["num_chains"])
        needles, depths = [], []
        for c in range(cfg["num_chains"]):
            vs = names[c * n_vars:(c + 1) * n_vars]
            chain = [f" VAR {vs[0]} = {values[c]}."] + [f" VAR {vs[i]} = VAR {vs[i - 1]}." for i in range(1, n_vars)]
            start = rng.random()
            needles += chain
            depths += sorted([start] + list(start + (1 - start) * rng.random(n_vars - 1)))
        outputs = names[:n_vars]
        head_text, tail_text = ruler.VT_TEMPLATE.format(context="\0", query=values[0]).split("\0")
        head = self._enc1(head_text)
        tail = self.encode([tail_text + ruler.VT_ANSWER_PREFIX.format(num_v=n_vars, query=values[0])])[0]
        answer = self.encode([" ".join(outputs)])[0]
        return self._with_haystack(task, self.noise, head, tail, answer, needles, np.asarray(depths), outputs,
                                   length, rng)

    def _with_haystack(self, task, stream, head, tail, answer, needles, depths, outputs, length, rng):
        """Fill the rest of ``length`` with whole haystack units; needles (in order) at the unit boundary nearest
        ``depth x units``."""
        needle_ids = self.encode(needles)
        fixed = 1 + len(head) + len(tail) + len(answer) + 1 + sum(map(len, needle_ids)) + 2  # +2: first-unit slack
        texts, ids = stream.window(length - fixed, rng)
        while True:
            at = np.rint(np.asarray(depths) * len(ids)).astype(int)
            units: list[tuple[str, np.ndarray]] = []
            order = np.argsort(at, kind="stable")
            j = 0
            for i in range(len(ids) + 1):
                while j < len(order) and at[order[j]] == i:
                    units.append((needles[order[j]], needle_ids[order[j]]))
                    j += 1
                if i < len(ids):
                    units.append((texts[i], ids[i]))
            out = self._assemble(task, head, units, tail, answer, outputs)
            if len(out.ids) <= length or not ids:
                return out
            texts, ids = texts[:-1], ids[:-1]  # the re-encoded first unit came out longer than the slack

    def _kv(self, task, length, rng) -> TaskSample:
        key, value = _uuid(rng), _uuid(rng)
        head_text, tail_text = ruler.KV_TEMPLATE.format(context="\0", query=key).split("\0")
        head = self._enc1(head_text)
        tail = self.encode([tail_text + ruler.KV_ANSWER_PREFIX])[0]
        answer = self.encode([value])[0]
        budget = length - (1 + len(head) + len(tail) + len(answer) + 1) - 4  # -4: first/last-pair re-encoding
        texts = [f' "{key}": "{value}",\n']
        ids = self.encode(texts)
        used, full = len(ids[0]), False
        while not full:
            n_new = max(1, (budget - used) // 40)  # a pair is >= ~40 tokens; extra pairs are dropped
            new_texts = [f' "{_uuid(rng)}": "{_uuid(rng)}",\n' for _ in range(n_new)]
            for t, i in zip(new_texts, self.encode(new_texts)):
                if used + len(i) > budget:
                    full = True
                    break
                texts.append(t)
                ids.append(i)
                used += len(i)
        # the queried pair (built first) goes to a random position
        q = int(rng.integers(0, len(texts)))
        texts.insert(q, texts.pop(0))
        ids.insert(q, ids.pop(0))
        # JSON framing: '{' opens the first pair, '}' closes the last one (no trailing comma)
        texts[0] = "{" + texts[0][1:]
        texts[-1] = texts[-1][: -len(",\n")] + "}"
        ids[0], ids[-1] = self.encode([texts[0], texts[-1]])
        out = self._assemble(task, head, list(zip(texts, ids)), tail, answer, [value])
        while len(out.ids) > length and len(texts) > 1:  # beyond the slack: drop an unqueried pair at an end
            drop = 0 if q == len(texts) - 1 else len(texts) - 1
            texts.pop(drop), ids.pop(drop)
            q -= drop < q
            texts[0] = "{" + texts[0].lstrip("{ ")
            texts[-1] = texts[-1].rstrip("},\n") + "}"
            ids[0], ids[-1] = self.encode([texts[0], texts[-1]])
            out = self._assemble(task, head, list(zip(texts, ids)), tail, answer, [value])
        return out


class _UnitStream:
    """An endless stream of haystack units (text with its joining space, token ids) with a random start."""

    def __init__(self, sampler: TaskSampler, unit_texts):
        self.texts = [" " + t for t in unit_texts]
        self.ids = sampler.encode(self.texts)
        lens = np.array([len(i) for i in self.ids], dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(np.concatenate([lens, lens]))])  # two laps: windows may wrap

    def window(self, n_tokens: int, rng: np.random.Generator) -> tuple[list[str], list[np.ndarray]]:
        """Consecutive whole units from a random start, as many as fit in ``n_tokens`` (wrapping around)."""
        n = len(self.texts)
        out_t, out_i = [], []
        start = int(rng.integers(0, n))
        left = n_tokens
        while left > 0:
            # units start.. with cumulative length <= left, within one lap
            stop = int(np.searchsorted(self.cum, self.cum[start] + left, side="right")) - 1
            stop = min(stop, start + n)
            if stop <= start:
                break
            for u in range(start, stop):
                out_t.append(self.texts[u % n])
                out_i.append(self.ids[u % n])
            left -= int(self.cum[stop] - self.cum[start])
            start = stop % n
        return out_t, out_i


def _distinct(make, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        x = make()
        if x not in out:
            out.append(x)
    return out


def _number(rng: np.random.Generator) -> str:
    return str(int(rng.integers(1_000_000, 10_000_000)))


def _uuid(rng: np.random.Generator) -> str:
    import uuid

    return str(uuid.UUID(bytes=rng.bytes(16), version=4))
