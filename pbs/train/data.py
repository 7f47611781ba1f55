"""The proxy's training data: corpus, tokenizer, and batches of LM windows and RULER-task samples.

Each batch row is either a plain LM window of the corpus (the shipped KJV by default; loss on every token) or a
sample of one of the RULER tasks of the evaluation suite, built in token space by :mod:`pbs.train.tasks` on
haystacks from the first 95% of the KJV verses (loss on the answer and eos only). Batches are pure functions of
(seed, step) and are built ahead of the GPU in worker processes (:class:`BatchPool`).
"""

from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path
from typing import Any

import numpy as np

from pbs.train.config import DataConfig, ProxyModelConfig
from pbs.train.tasks import TASKS, TaskSampler

PKG = Path(__file__).resolve().parent.parent  # .../pbs
KJV_PATH = PKG / "eval" / "ruler" / "data" / "kjv.txt.gz"
FIXTURES = PKG / "eval" / "longbench" / "fixtures"

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|eos|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# ----------------------------------------------------------------------------------------------- corpus


def load_corpus_text(corpus: str = "auto", max_chars: int | None = None) -> tuple[str, str]:
    """(text, source). 'auto': the KJV file if present, else the LongBench fixture contexts; or a .txt, .txt.gz or
    .txt.xz file (e.g. ``corpus/train.txt.xz`` from ``scripts/build_corpus.py``), or several, comma separated
    (joined with a blank line, in the order given)."""
    if corpus not in (None, "auto"):
        texts = []
        for part in (c.strip() for c in str(corpus).split(",") if c.strip()):
            p = Path(part)
            if not p.is_file():
                raise FileNotFoundError(f"corpus: no file {part!r}")
            if p.suffix in (".gz", ".xz"):  # .xz: the corpus builder's output (pbs.train.corpus)
                with (gzip.open if p.suffix == ".gz" else lzma.open)(p, "rt", encoding="utf-8") as f:
                    texts.append(f.read())
            else:
                texts.append(p.read_text(encoding="utf-8"))
        text, source = "\n\n".join(texts), str(corpus)
    elif KJV_PATH.exists():
        with gzip.open(KJV_PATH, "rt", encoding="utf-8") as f:
            text, source = f.read(), str(KJV_PATH)
    else:
        parts = []
        for f in sorted((FIXTURES / "v1").glob("*.jsonl")):
            if f.stem.endswith("_zh"):
                continue
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    parts.append(json.loads(line).get("context", ""))
        v2 = FIXTURES / "v2.json"
        if v2.exists():
            parts += [r.get("context", "") for r in json.loads(v2.read_text(encoding="utf-8"))]
        text, source = "\n\n".join(p for p in parts if p), str(FIXTURES)
    if not text:
        raise RuntimeError(f"empty corpus from {source}")
    if max_chars:
        text = text[:max_chars]
    return text, source


def _chunks(text: str, size: int = 8192) -> list[str]:
    """Split at newlines into pieces of roughly `size` chars (lossless: ''.join(out) == text)."""
    out, i = [], 0
    while i < len(text):
        j = text.find("\n", i + size)
        j = len(text) if j < 0 else j + 1
        out.append(text[i:j])
        i = j
    return out


# -------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(text: str, vocab_size: int = 4096, min_frequency: int = 2,
                    model_max_length: int = ProxyModelConfig.max_position_embeddings):
    """Byte-level BPE (every byte in the base alphabet, so nothing is unknown), digits split one per token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # every newline its own pre-token: a learned "\n\n" merge would tokenize a template's trailing blank line
    # differently alone (token-space task samples) and before text (the evaluation's prompt)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_chunks(text), trainer=trainer)
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
        model_max_length=model_max_length,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def encode_corpus(tokenizer, text: str) -> np.ndarray:
    enc = tokenizer.backend_tokenizer.encode_batch(_chunks(text), add_special_tokens=False)
    return np.concatenate([np.asarray(e.ids, dtype=np.int32) for e in enc])


def lm_split(ids: np.ndarray, dcfg: DataConfig) -> np.ndarray:
    """The LM training part of the corpus tokens (the tail, ``heldout_fraction`` of it, is never trained on)."""
    return ids[: max(1, int(len(ids) * (1.0 - dcfg.heldout_fraction)))]


def lm_heldout(ids: np.ndarray, dcfg: DataConfig) -> np.ndarray:
    """The held-out tail of the corpus tokens (what :func:`lm_split` leaves out; at least one token)."""
    return ids[min(len(ids) - 1, max(1, int(len(ids) * (1.0 - dcfg.heldout_fraction)))) :]


# ------------------------------------------------------------------------------------------------- batches


class ProxyData:
    """Training batches: plain LM windows of the corpus and RULER-task samples (:mod:`pbs.train.tasks`).

    LM rows have loss on every token; task rows on the answer (+ eos) only. Task haystacks come from the first
    ``1 - heldout_fraction`` of the KJV verses, held-out samples (:meth:`heldout_sampler`) from the rest.
    Every batch is a pure function of ``(batch, length, seed)``, so any process can build it.
    """

    def __init__(self, tokenizer, lm_ids: np.ndarray, dcfg: DataConfig):
        unknown = sorted(set(dcfg.task_weights) - set(TASKS))
        if unknown:
            raise ValueError(f"data.task_weights names unknown tasks {unknown}; known: {list(TASKS)}")
        self.tok, self.cfg = tokenizer, dcfg
        self.lm_ids = lm_ids
        self.tasks = [t for t, w in dcfg.task_weights.items() if w > 0]
        w = np.array([dcfg.task_weights[t] for t in self.tasks], dtype=float)
        self.task_p = w / w.sum()
        self.sampler = TaskSampler(tokenizer, (0.0, 1.0 - dcfg.heldout_fraction))

    def heldout_windows(self, ids: np.ndarray, length: int, n: int) -> np.ndarray:
        """(n, length) int64: ``n`` LM windows of ``ids`` (held-out text) at evenly spaced starts, bos first."""
        starts = (np.arange(n) * max(1, len(ids) - length + 1)) // max(n, 1)
        x = np.empty((n, length), dtype=np.int64)
        x[:, 0] = self.tok.bos_token_id
        x[:, 1:] = ids[(starts[:, None] + np.arange(length - 1)) % len(ids)]
        return x

    def heldout_sampler(self) -> TaskSampler:
        return TaskSampler(self.tok, (1.0 - self.cfg.heldout_fraction, 1.0))

    def batch(self, batch: int, length: int, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids [B, L] int64, labels [B, L] int64 with -100 where no loss, is_task [B] bool)."""
        rng = np.random.default_rng(seed)
        pad = self.tok.pad_token_id
        x = np.full((batch, length), pad, dtype=np.int64)
        y = np.full((batch, length), -100, dtype=np.int64)
        lm_fraction = 1.0 if length < self.cfg.lm_only_below else self.cfg.lm_fraction
        is_task = rng.random(batch) >= lm_fraction
        for r in range(batch):
            if is_task[r]:
                s = self.sampler.sample(self.tasks[rng.choice(len(self.tasks), p=self.task_p)], length, rng)
                x[r, : len(s.ids)] = s.ids
                y[r, s.prompt_len : len(s.ids)] = s.ids[s.prompt_len :]
            else:
                start = int(rng.integers(0, len(self.lm_ids)))
                idx = (start + np.arange(length - 1)) % len(self.lm_ids)  # wraps: short corpora still fill
                x[r, 0] = self.tok.bos_token_id
                x[r, 1:] = self.lm_ids[idx]
                y[r] = x[r]
        return x, y, is_task


def batch_workers(workers, device_type: str) -> int:
    """Worker processes for ``data.workers``: ``"auto"`` = min(12, cpus - 2) on CUDA, 0 (in-process) on CPU."""
    if workers in (None, "auto"):
        import os

        return max(0, min(12, (os.cpu_count() or 1) - 2)) if device_type == "cuda" else 0
    return int(workers)


class BatchPool:
    """Builds batches in worker processes ahead of the GPU (``workers=0``: in this process, on demand)."""

    def __init__(self, data: ProxyData, tok_dir: Path, dcfg: DataConfig, corpus_ids: Path, workers: int):
        """``corpus_ids``: the encoded corpus (.npy), memory-mapped by every worker."""
        self.data, self.workers, self.ahead = data, workers, workers + 4
        self.pending: dict[tuple, Any] = {}
        self.pool = None
        if workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                            initargs=(str(tok_dir), dcfg, str(corpus_ids)))

    def get(self, step: int, batch: int, length: int, seed: int):
        """The batch of ``step``; queues the next ``ahead`` steps' batches (same batch/length) meanwhile."""
        key = (step, batch, length)
        if self.pool is None:
            return self.data.batch(batch, length, [seed, step])
        for s in range(step, step + self.ahead):
            k = (s, batch, length)
            if k not in self.pending:
                self.pending[k] = self.pool.submit(_worker_batch, batch, length, [seed, s])
        fut = self.pending.pop(key)
        for k in [k for k in self.pending if k[0] <= step or k[2] != length]:  # stale (other length / past)
            self.pending.pop(k).cancel()
        return fut.result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


_WORKER_DATA: ProxyData | None = None


def _worker_init(tok_dir: str, dcfg: DataConfig, corpus_ids: str) -> None:
    import os

    import torch

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the tokenizers library's own switch, in this worker only
    torch.set_num_threads(1)
    from transformers import PreTrainedTokenizerFast

    global _WORKER_DATA
    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    _WORKER_DATA = ProxyData(tok, lm_split(np.load(corpus_ids, mmap_mode="r"), dcfg), dcfg)


def _worker_batch(batch: int, length: int, seed):
    return _WORKER_DATA.batch(batch, length, seed)
