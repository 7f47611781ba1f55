"""Train a small long-context proxy Llama (byte-level BPE, GQA, RoPE 500K) on LM + synthetic retrieval.

Library only (no Hydra): ``train(cfg)`` takes a plain nested dict shaped like conf/train_proxy.yaml
(missing keys fall back to DEFAULT_CONFIG). Hydra front end: experiments/train_proxy.py.

Data (:class:`ProxyData`): each batch row is either a plain LM window of the corpus (the shipped KJV by default;
loss on every token) or a sample of one of the RULER tasks of the evaluation suite, built in token space by
:mod:`pbs.train.tasks` on haystacks from the first 95% of the KJV verses (loss on the answer and eos only).
Batches are pure functions of (seed, step) and are built ahead of the GPU in worker processes.
The sequence length follows a curriculum over training progress, with batch = tokens_per_step // length.
Progress is max(step / max_steps, train_seconds / (60 * max_minutes)), so LR schedule and curriculum also
work under a time budget. Checkpoints (model, optimizer, step, elapsed, RNG states) are resumable.
"""

from __future__ import annotations

import copy
import csv
import gzip
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pbs.train.tasks import TASKS, TaskSampler

REPO_PKG = Path(__file__).resolve().parent.parent  # .../pbs
KJV_PATH = REPO_PKG / "eval" / "ruler" / "data" / "kjv.txt.gz"
FIXTURES = REPO_PKG / "eval" / "fixtures"

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|eos|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
LOG_FIELDS = ["step", "length", "batch", "loss", "lm_loss", "ret_loss", "lr", "tokens_per_s", "elapsed_s", "eval_acc"]

DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "autocast_dtype": "bfloat16",
    "compile": False,
    "corpus": "auto",
    "max_corpus_chars": None,
    "tokenizer": {"path": None, "vocab_size": 4096, "min_frequency": 2},
    "model": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "intermediate_size": 1024,
        "rope_theta": 500000.0,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "attn_implementation": "sdpa",
        "initializer_range": 0.02,
    },
    "data": {
        "lm_fraction": 0.1,
        # harder tasks weigh more (a 7-minute run with equal weights solved niah_single_* but never vt)
        "task_weights": {"niah_single_1": 0.5, "niah_single_2": 0.5, "niah_single_3": 1.0, "niah_multikey": 2.0,
                         "niah_multivalue": 1.0, "niah_multiquery": 1.0, "vt": 3.0, "kv_retrieval": 1.5},
        "retrieval_loss_weight": 0.8,
        "heldout_fraction": 0.05,
        "workers": "auto",
    },
    "curriculum": [
        {"length": 512, "until": 0.2},
        {"length": 1024, "until": 0.35},
        {"length": 2048, "until": 0.5},
        {"length": 4096, "until": 0.65},
        {"length": 8192, "until": 0.8},
        {"length": 16384, "until": 0.95},
        {"length": 32768, "until": 1.0},
    ],
    "train": {
        "tokens_per_step": 65536,
        "max_steps": 100000,
        "max_minutes": None,
        "lr": 1e-3,
        "min_lr_ratio": 0.1,
        "warmup_steps": 200,
        "weight_decay": 0.1,
        "betas": [0.9, 0.95],
        "grad_clip": 1.0,
        "log_every": 10,
    },
    "eval": {"every": 1000, "n_samples": 4, "final": True, "final_lengths": [4096, 16384]},
    "checkpoint": {"every": 1000, "keep": 2},
    "resume": False,
    "init_from": None,
    "run_dir": "outputs/train_proxy/run",
    "out_dir": None,
    "export_dtype": "bfloat16",
    "max_shard_size": "15MB",
    "progress_bar": True,
}


def merge_config(cfg: dict | None) -> dict:
    """DEFAULT_CONFIG deep-updated with cfg (lists replaced wholesale)."""

    def upd(base: dict, new: dict) -> dict:
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                upd(base[k], v)
            else:
                base[k] = copy.deepcopy(v)
        return base

    return upd(copy.deepcopy(DEFAULT_CONFIG), cfg or {})


# ----------------------------------------------------------------------------------------------- corpus


def load_corpus_text(corpus: str = "auto", max_chars: int | None = None) -> tuple[str, str]:
    """(text, source). 'auto': the KJV file if present, else the LongBench fixture contexts."""
    if corpus not in (None, "auto"):
        p = Path(corpus)
        if p.suffix == ".gz":
            with gzip.open(p, "rt", encoding="utf-8") as f:
                text = f.read()
        else:
            text = p.read_text(encoding="utf-8")
        source = str(p)
    elif KJV_PATH.exists():
        with gzip.open(KJV_PATH, "rt", encoding="utf-8") as f:
            text, source = f.read(), str(KJV_PATH)
    else:
        parts = []
        for f in sorted((FIXTURES / "longbench").glob("*.jsonl")):
            if f.stem.endswith("_zh"):
                continue
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    parts.append(json.loads(line).get("context", ""))
        v2 = FIXTURES / "longbench_v2.json"
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


def train_tokenizer(text: str, vocab_size: int = 4096, min_frequency: int = 2):
    """Byte-level BPE (every byte in the base alphabet, so nothing is unknown), digits split one per token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
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
        model_max_length=DEFAULT_CONFIG["model"]["max_position_embeddings"],
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def encode_corpus(tokenizer, text: str) -> np.ndarray:
    enc = tokenizer.backend_tokenizer.encode_batch(_chunks(text), add_special_tokens=False)
    return np.concatenate([np.asarray(e.ids, dtype=np.int32) for e in enc])


# ------------------------------------------------------------------------------------------------- data


class ProxyData:
    """Training batches: plain LM windows of the corpus and RULER-task samples (:mod:`pbs.train.tasks`).

    LM rows have loss on every token; task rows on the answer (+ eos) only. Task haystacks come from the first
    ``1 - heldout_fraction`` of the KJV verses, held-out samples (:meth:`heldout_sampler`) from the rest.
    Every batch is a pure function of ``(batch, length, seed)``, so any process can build it.
    """

    def __init__(self, tokenizer, lm_ids: np.ndarray, dcfg: dict):
        unknown = sorted(set(dcfg["task_weights"]) - set(TASKS))
        if unknown:
            raise ValueError(f"data.task_weights names unknown tasks {unknown}; known: {list(TASKS)}")
        self.tok, self.cfg = tokenizer, dcfg
        self.lm_ids = lm_ids
        self.tasks = [t for t, w in dcfg["task_weights"].items() if w > 0]
        w = np.array([dcfg["task_weights"][t] for t in self.tasks], dtype=float)
        self.task_p = w / w.sum()
        self.sampler = TaskSampler(tokenizer, (0.0, 1.0 - dcfg["heldout_fraction"]))

    def heldout_sampler(self) -> TaskSampler:
        return TaskSampler(self.tok, (1.0 - self.cfg["heldout_fraction"], 1.0))

    def batch(self, batch: int, length: int, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids [B, L] int64, labels [B, L] int64 with -100 where no loss, is_task [B] bool)."""
        rng = np.random.default_rng(seed)
        pad = self.tok.pad_token_id
        x = np.full((batch, length), pad, dtype=np.int64)
        y = np.full((batch, length), -100, dtype=np.int64)
        is_task = rng.random(batch) >= self.cfg["lm_fraction"]
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


class _BatchPool:
    """Builds batches in worker processes ahead of the GPU (``workers=0``: in this process, on demand)."""

    def __init__(self, data: ProxyData, tok_dir: Path, dcfg: dict, corpus: tuple, workers: int):
        self.data, self.workers, self.ahead = data, workers, workers + 4
        self.pending: dict[tuple, Any] = {}
        self.pool = None
        if workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                            initargs=(str(tok_dir), dcfg, corpus))

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


def _worker_init(tok_dir: str, dcfg: dict, corpus: tuple) -> None:
    import os

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)
    from transformers import PreTrainedTokenizerFast

    global _WORKER_DATA
    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    _WORKER_DATA = ProxyData(tok, _lm_split(encode_corpus(tok, load_corpus_text(*corpus)[0]), dcfg), dcfg)


def _worker_batch(batch: int, length: int, seed):
    return _WORKER_DATA.batch(batch, length, seed)


def _lm_split(ids: np.ndarray, dcfg: dict) -> np.ndarray:
    """The LM training part of the corpus tokens (the tail, ``heldout_fraction`` of it, is never trained on)."""
    return ids[: max(1, int(len(ids) * (1.0 - dcfg["heldout_fraction"])))]


# ------------------------------------------------------------------------------------------------ model


def build_model(mcfg: dict, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    m = dict(mcfg)
    attn = m.pop("attn_implementation", "sdpa")
    theta = m.pop("rope_theta")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        rope_parameters={"rope_type": "default", "rope_theta": float(theta)},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **m,
    )
    config._attn_implementation = attn
    return LlamaForCausalLM(config)


def resolve_device(spec: str) -> torch.device:
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def lr_at(step: int, progress: float, tcfg: dict) -> float:
    base = tcfg["lr"]
    if step < tcfg["warmup_steps"]:
        return base * (step + 1) / tcfg["warmup_steps"]
    p = min(max(progress, 0.0), 1.0)
    r = tcfg["min_lr_ratio"]
    return base * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * p)))


def length_at(progress: float, curriculum: list[dict]) -> int:
    for stage in curriculum:
        if progress < stage["until"]:
            return int(stage["length"])
    return int(curriculum[-1]["length"])


def loss_fn(
    logits: torch.Tensor,
    labels: torch.Tensor,
    is_ret: torch.Tensor,
    w_ret: float,
    has_lm: bool = True,
    has_ret: bool = True,
):
    """Next-token CE; LM rows and retrieval rows averaged separately, then mixed with weight w_ret.

    has_lm / has_ret (known on the host) say which row kinds the batch holds, so nothing here syncs the GPU.
    """
    lg = logits[:, :-1].float()
    tgt = labels[:, 1:]
    ce = F.cross_entropy(lg.reshape(-1, lg.size(-1)), tgt.reshape(-1), ignore_index=-100, reduction="none")
    ce = ce.view_as(tgt)
    valid = tgt != -100
    row_ret = is_ret[:, None].expand_as(tgt)
    parts = {}
    for name, m, present in (("lm", valid & ~row_ret, has_lm), ("ret", valid & row_ret, has_ret)):
        parts[name] = (ce * m).sum() / m.sum().clamp_min(1) if present else None
    if parts["lm"] is not None and parts["ret"] is not None:
        loss = (1 - w_ret) * parts["lm"] + w_ret * parts["ret"]
    else:
        loss = parts["lm"] if parts["lm"] is not None else parts["ret"]
    return loss, parts


@torch.no_grad()
def evaluate_tasks(model, sampler, tasks, length: int, n_per_task: int, seed: int, device,
                   autocast_dtype=None) -> dict[str, float]:
    """RULER score (0..1, string_match_all) of greedy decoding on ``n_per_task`` held-out samples per task at
    ``length``; returns {task: mean score}."""
    from pbs.eval.ruler import generate as ruler

    was_training = model.training
    model.eval()
    scores: dict[str, float] = {}
    for t, task in enumerate(tasks):
        rng = np.random.default_rng([seed, 10_000, length, t])
        total = 0.0
        for _ in range(n_per_task):
            s = sampler.sample(task, length, rng)
            prompt = torch.from_numpy(s.ids[None, : s.prompt_len]).to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = model.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=len(s.ids) - s.prompt_len + 4,
                    do_sample=False,
                    pad_token_id=sampler.tok.pad_token_id,
                    eos_token_id=sampler.eos,
                )
            text = sampler.tok.decode(out[0, s.prompt_len :], skip_special_tokens=True)
            total += ruler.score(task, text, s.outputs)
        scores[task] = total / max(n_per_task, 1)
    model.train(was_training)
    return scores


# ------------------------------------------------------------------------------------------ checkpoints


def _ckpt_dirs(run_dir: Path) -> list[Path]:
    d = run_dir / "checkpoints"
    return sorted(d.glob("step_*"), key=lambda p: int(p.name.split("_")[1])) if d.exists() else []


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    c = _ckpt_dirs(Path(run_dir))
    return c[-1] if c else None


def save_checkpoint(run_dir: Path, model, opt, step: int, elapsed: float, keep: int, cfg: dict) -> Path:
    path = run_dir / "checkpoints" / f"step_{step:08d}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "elapsed_s": elapsed,
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "config": cfg,
    }
    torch.save(state, tmp / "state.pt")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    for old in _ckpt_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _unwrap(model):
    return getattr(model, "_orig_mod", model)


# -------------------------------------------------------------------------------------------------- log


class CsvLog:
    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        rows = []
        if keep_until_step is not None and path.exists():  # resume: drop rows past the checkpoint
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until_step]
        self.f = path.open("w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=LOG_FIELDS)
        self.w.writeheader()
        for r in rows:
            self.w.writerow({k: r.get(k, "") for k in LOG_FIELDS})
        self.f.flush()

    def write(self, row: dict):
        self.w.writerow({k: row.get(k, "") for k in LOG_FIELDS})
        self.f.flush()

    def close(self):
        self.f.close()


# ------------------------------------------------------------------------------------------------ train


def export(model, tokenizer, out_dir: Path, dtype: str, max_shard_size: str, log_path: Path | None) -> Path:
    """save_pretrained (safetensors, cast to `dtype`, sharded) + tokenizer + training_log.csv, nothing else."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(_unwrap(model)).to("cpu", dtype=getattr(torch, dtype))
    m.config.use_cache = True
    m.save_pretrained(out_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out_dir)
    gen = out_dir / "generation_config.json"  # defaults only; fewer files to carry around
    if gen.exists():
        gen.unlink()
    if log_path is not None and log_path.exists() and log_path.resolve() != (out_dir / "training_log.csv").resolve():
        shutil.copyfile(log_path, out_dir / "training_log.csv")
    return out_dir


def _init_weights_from(model, folder: Path) -> None:
    """Copy the weights of a saved model (e.g. the committed proxy) into ``model``; shapes must match exactly."""
    from transformers import AutoModelForCausalLM

    src = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    mine, theirs = model.state_dict(), src.state_dict()
    bad = sorted(k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape)
    if bad or set(theirs) - set(mine):
        raise ValueError(f"init_from={str(folder)!r} does not match model config: differing weights {bad[:5]}")
    model.load_state_dict(theirs)
    print(f"[train_proxy] weights initialised from {folder} (fresh optimizer)")


def _workers(spec, device: torch.device) -> int:
    if spec in (None, "auto"):
        import os

        return max(0, min(12, (os.cpu_count() or 1) - 2)) if device.type == "cuda" else 0
    return int(spec)


def _log_eval(scores: dict[str, float], step: int, length: int, bar) -> float:
    mean = float(np.mean(list(scores.values()))) if scores else float("nan")
    msg = (f"[train_proxy] step {step} length {length}: task score {mean:.3f} ("
           + ", ".join(f"{t} {v:.2f}" for t, v in scores.items()) + ")")
    (bar.write if bar is not None else print)(msg)
    return mean


def train(cfg: dict | None = None) -> dict:
    """Run (or resume) training; returns a summary dict (step, out_dir, final task scores, ...)."""
    cfg = merge_config(cfg)
    t_start = time.time()
    tcfg, ecfg, ccfg, dcfg = cfg["train"], cfg["eval"], cfg["checkpoint"], cfg["data"]
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    out_dir = Path(cfg["out_dir"] or run_dir / "export")
    device = resolve_device(cfg["device"])
    amp = getattr(torch, cfg["autocast_dtype"]) if device.type == "cuda" and cfg["autocast_dtype"] else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ckpt = latest_checkpoint(run_dir) if cfg["resume"] else None
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False) if ckpt else None

    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])

    # tokenizer: trained once per run dir, reloaded on resume
    from transformers import PreTrainedTokenizerFast

    corpus = (cfg["corpus"], cfg["max_corpus_chars"])
    text, source = load_corpus_text(*corpus)
    tok_dir = run_dir / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    else:
        tcfg_tok = dict(cfg["tokenizer"])
        path = tcfg_tok.pop("path", None)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path) if path else train_tokenizer(text, **tcfg_tok)
        tokenizer.save_pretrained(tok_dir)
    ids = encode_corpus(tokenizer, text)
    data = ProxyData(tokenizer, _lm_split(ids, dcfg), dcfg)
    data.sampler.verify(min(1024, cfg["curriculum"][0]["length"]))
    heldout = data.heldout_sampler()
    pool = _BatchPool(data, tok_dir, dcfg, corpus, _workers(dcfg["workers"], device))
    print(f"[train_proxy] corpus {source}: {len(text):,} chars -> {len(ids):,} tokens; device {device}; "
          f"{pool.workers} data workers")

    model = build_model(cfg["model"], tokenizer)
    if cfg["init_from"] and state is None:
        _init_weights_from(model, Path(cfg["init_from"]))
    model = model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[train_proxy] model: {n_params / 1e6:.2f} M parameters")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tcfg["lr"],
        betas=tuple(tcfg["betas"]),
        fused=device.type == "cuda",
    )
    step, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        print(f"[train_proxy] resumed from {ckpt} at step {step} ({elapsed:.0f} s trained)")
    fwd = torch.compile(model) if cfg["compile"] else model
    model.train()

    log = CsvLog(run_dir / "training_log.csv", keep_until_step=step if state is not None else None)
    budget = 60.0 * tcfg["max_minutes"] if tcfg["max_minutes"] else None

    def progress() -> float:
        p = step / tcfg["max_steps"]
        return max(p, elapsed / budget) if budget else p

    bar = None
    if cfg["progress_bar"]:
        from tqdm.auto import tqdm

        bar = tqdm(total=tcfg["max_steps"], initial=step, dynamic_ncols=True, desc="train_proxy")
    last_acc, last_saved, tok_count, t_win = None, step if state is not None else -1, 0, time.time()
    length = length_at(progress(), cfg["curriculum"])
    try:
        while progress() < 1.0:
            t0 = time.time()
            length = length_at(progress(), cfg["curriculum"])
            if length > cfg["model"]["max_position_embeddings"]:
                raise ValueError(f"curriculum length {length} > max_position_embeddings")
            bsz = max(1, tcfg["tokens_per_step"] // length)
            x, y, is_ret = (torch.from_numpy(a) for a in pool.get(step, bsz, length, cfg["seed"]))
            has_ret, has_lm = bool(is_ret.any()), bool((~is_ret).any())
            if device.type == "cuda":
                x, y, is_ret = (t.pin_memory().to(device, non_blocking=True) for t in (x, y, is_ret))
            lr = lr_at(step, progress(), tcfg)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = fwd(input_ids=x, use_cache=False).logits
            loss, parts = loss_fn(logits, y, is_ret, dcfg["retrieval_loss_weight"], has_lm, has_ret)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
            opt.step()
            step += 1
            tok_count += bsz * length
            row = None
            if step % tcfg["log_every"] == 0 or step == 1:
                lv = loss.item()  # syncs
                if not math.isfinite(lv):
                    raise FloatingPointError(f"non-finite loss at step {step}")
                now = time.time()
                row = {
                    "step": step,
                    "length": length,
                    "batch": bsz,
                    "loss": f"{lv:.4f}",
                    "lm_loss": f"{parts['lm'].item():.4f}" if parts["lm"] is not None else "",
                    "ret_loss": f"{parts['ret'].item():.4f}" if parts["ret"] is not None else "",
                    "lr": f"{lr:.3e}",
                    "tokens_per_s": f"{tok_count / max(now - t_win, 1e-9):.0f}",
                }
                tok_count, t_win = 0, now
                if bar is not None:
                    bar.set_postfix(loss=row["loss"], ret=row["ret_loss"], len=length, tok_s=row["tokens_per_s"])
                else:
                    print("[train_proxy] " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            elapsed += time.time() - t0
            if ecfg["every"] and step % ecfg["every"] == 0 and ecfg["n_samples"]:
                scores = evaluate_tasks(model, heldout, data.tasks, length, ecfg["n_samples"], cfg["seed"], device,
                                        amp)
                last_acc = _log_eval(scores, step, length, bar)
                row = row or {"step": step, "length": length, "batch": bsz, "lr": f"{lr:.3e}"}
                row["eval_acc"] = f"{last_acc:.4f}"
            if row is not None:
                row["elapsed_s"] = f"{elapsed:.1f}"
                log.write(row)
            if bar is not None:
                bar.update(1)
            if ccfg["every"] and step % ccfg["every"] == 0:
                save_checkpoint(run_dir, _unwrap(model), opt, step, elapsed, ccfg["keep"], cfg)
                # the export always holds the newest checkpoint's weights: a run killed later still leaves a model
                export(model, tokenizer, out_dir, cfg["export_dtype"], cfg["max_shard_size"], log.path)
                last_saved = step
    finally:
        pool.close()
    if bar is not None:
        bar.close()
    stopped_by = "time" if budget and elapsed >= budget else "steps"
    final: dict[int, dict[str, float]] = {}
    if ecfg["final"] and ecfg["n_samples"]:
        for n in ecfg.get("final_lengths") or [length]:
            if n > cfg["model"]["max_position_embeddings"]:
                continue
            final[n] = evaluate_tasks(model, heldout, data.tasks, n, ecfg["n_samples"], cfg["seed"], device, amp)
            last_acc = _log_eval(final[n], step, n, None)
            log.write({"step": step, "length": n, "elapsed_s": f"{elapsed:.1f}", "eval_acc": f"{last_acc:.4f}"})
    if last_saved != step:
        save_checkpoint(run_dir, _unwrap(model), opt, step, elapsed, ccfg["keep"], cfg)
    log.close()
    export(model, tokenizer, out_dir, cfg["export_dtype"], cfg["max_shard_size"], run_dir / "training_log.csv")
    summary = {
        "step": step,
        "length": length,
        "eval_acc": last_acc,
        "final_scores": {str(n): v for n, v in final.items()},
        "stopped_by": stopped_by,
        "train_s": elapsed,
        "wall_s": time.time() - t_start,
        "out_dir": str(out_dir),
        "run_dir": str(run_dir),
        "params": n_params,
        "corpus": source,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"[train_proxy] done: {json.dumps(summary)}")
    return summary
