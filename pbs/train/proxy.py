"""Train a small long-context proxy Llama (byte-level BPE, GQA, RoPE 500K) on LM + synthetic retrieval.

Library only (no Hydra): ``train(cfg)`` takes a plain nested dict shaped like conf/train_proxy.yaml
(missing keys fall back to DEFAULT_CONFIG). Hydra front end: experiments/train_proxy.py.

Data: a text corpus (the RULER helper's KJV text at pbs/eval/ruler/data/kjv.txt.gz when present, else the
LongBench fixture contexts) is tokenized once; each batch row is either a plain LM window (loss on every
token) or a retrieval sample: a haystack window with 1-4 inserted needles
"The special magic number for <uuid> is <7 digits>." and a final question, loss on the answer only.
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
    "tokenizer": {"vocab_size": 4096, "min_frequency": 2},
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
        "retrieval_fraction": 0.5,
        "retrieval_loss_weight": 0.5,
        "min_needles": 1,
        "max_needles": 4,
        "value_digits": 7,
        "heldout_fraction": 0.05,
    },
    "curriculum": [
        {"length": 1024, "until": 0.3},
        {"length": 2048, "until": 0.5},
        {"length": 4096, "until": 0.7},
        {"length": 8192, "until": 0.85},
        {"length": 16384, "until": 1.0},
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
    "eval": {"every": 500, "n_samples": 16, "final": True},
    "checkpoint": {"every": 1000, "keep": 2},
    "resume": False,
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


class RetrievalData:
    """LM windows and passkey/key-value retrieval samples over a tokenized corpus (train / held-out split)."""

    def __init__(self, tokenizer, ids: np.ndarray, dcfg: dict):
        self.tok = tokenizer
        self.cfg = dcfg
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        n = len(ids)
        h = min(n // 2, max(int(n * dcfg["heldout_fraction"]), 8192))
        self.train_ids, self.held_ids = ids[: n - h], ids[n - h :]
        # sentence / line ends: needles go right after them
        ends = np.zeros(len(tokenizer), dtype=bool)
        for t, i in tokenizer.get_vocab().items():
            s = tokenizer.convert_tokens_to_string([t])
            ends[i] = s.endswith((".", "\n", "!", "?"))
        self.train_ends, self.held_ends = ends[self.train_ids], ends[self.held_ids]

    def _enc(self, s: str) -> list[int]:
        return self.tok.backend_tokenizer.encode(s, add_special_tokens=False).ids

    @staticmethod
    def _window(ids: np.ndarray, ends: np.ndarray, n: int, rng: np.random.Generator):
        if n <= 0:
            return ids[:0], ends[:0]
        start = int(rng.integers(0, len(ids)))
        idx = (start + np.arange(n)) % len(ids)  # wraps: short corpora still give long windows
        return ids[idx], ends[idx]

    def lm_sample(self, length: int, rng: np.random.Generator, held: bool = False):
        ids = self.held_ids if held else self.train_ids
        w, _ = self._window(ids, self.train_ends if not held else self.held_ends, length - 1, rng)
        x = np.concatenate([[self.bos], w]).astype(np.int64)
        return x, x.copy()

    def retrieval_sample(self, length: int, rng: np.random.Generator, held: bool = False):
        """(input_ids, labels, answer_start, value): labels are -100 except the answer (value, '.', eos)."""
        d = self.cfg
        k = int(rng.integers(d["min_needles"], d["max_needles"] + 1))
        keys = []
        for _ in range(k):
            h = rng.bytes(16).hex()
            keys.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
        lo, hi = 10 ** (d["value_digits"] - 1), 10 ** d["value_digits"]
        values = [str(v) for v in rng.integers(lo, hi, size=k)]
        # short lengths: fewer needles (a needle is ~50 tokens), so that a quarter of the sample stays haystack
        while k > 1 and length - (k + 2) * 56 < length // 4:
            k -= 1
        keys, values = keys[:k], values[:k]
        q = int(rng.integers(0, k))
        texts = [f" The special magic number for {kk} is {v}." for kk, v in zip(keys, values)] + [
            (
                f"\n\nWhat is the special magic number for {keys[q]} mentioned in the provided text? "
                f"The special magic number for {keys[q]} is"
            ),
            f" {values[q]}.",
        ]
        enc = [e.ids for e in self.tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
        needles, question, answer = enc[:k], enc[k], enc[k + 1] + [self.eos]
        n_hay = length - 1 - sum(map(len, needles)) - len(question) - len(answer)
        if n_hay < 0:
            raise ValueError(f"length {length} too short for {k} needles")
        ids, ends = (self.held_ids, self.held_ends) if held else (self.train_ids, self.train_ends)
        hay, hay_ends = self._window(ids, ends, n_hay, rng)
        cand = np.flatnonzero(hay_ends) + 1
        if len(cand) < k:
            cand = np.arange(n_hay + 1)
        pos = np.sort(rng.choice(cand, size=k, replace=len(cand) < k))
        order = rng.permutation(k)  # needle order independent of key order
        pieces, prev = [[self.bos]], 0
        for p, j in zip(pos, order):
            pieces += [hay[prev:p], needles[j]]
            prev = int(p)
        pieces += [hay[prev:], question]
        prompt = np.concatenate([np.asarray(x, dtype=np.int64) for x in pieces])
        x = np.concatenate([prompt, np.asarray(answer, dtype=np.int64)])
        y = np.full_like(x, -100)
        y[len(prompt) :] = x[len(prompt) :]
        assert len(x) == length, (len(x), length)
        return x, y, len(prompt), values[q]

    def batch(self, batch: int, length: int, rng: np.random.Generator):
        """(input_ids [B, L], labels [B, L], is_retrieval [B]) as CPU tensors."""
        xs, ys, kinds = [], [], []
        for _ in range(batch):
            if rng.random() < self.cfg["retrieval_fraction"]:
                x, y, _, _ = self.retrieval_sample(length, rng)
                kinds.append(True)
            else:
                x, y = self.lm_sample(length, rng)
                kinds.append(False)
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), torch.tensor(kinds)


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
def evaluate_retrieval(
    model, data: RetrievalData, length: int, n_samples: int, seed: int, device, autocast_dtype=None
) -> float:
    """Greedy-decode the answer of n held-out retrieval samples at `length`; exact match on the value."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng([seed, 10_000, length])
    correct = 0
    for _ in range(n_samples):
        x, _, a0, value = data.retrieval_sample(length, rng, held=True)
        prompt = torch.from_numpy(x[None, :a0]).to(device)
        n_new = len(x) - a0 + 2
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=n_new,
                do_sample=False,
                pad_token_id=data.tok.pad_token_id,
                eos_token_id=data.eos,
            )
        text = data.tok.decode(out[0, a0:], skip_special_tokens=True)
        correct += int(text.strip().split()[0].rstrip(".") == value if text.strip() else 0)
    model.train(was_training)
    return correct / max(n_samples, 1)


# ------------------------------------------------------------------------------------------ checkpoints


def _ckpt_dirs(run_dir: Path) -> list[Path]:
    d = run_dir / "checkpoints"
    return sorted(d.glob("step_*"), key=lambda p: int(p.name.split("_")[1])) if d.exists() else []


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    c = _ckpt_dirs(Path(run_dir))
    return c[-1] if c else None


def save_checkpoint(run_dir: Path, model, opt, step: int, elapsed: float, data_rng, keep: int, cfg: dict) -> Path:
    path = run_dir / "checkpoints" / f"step_{step:08d}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "elapsed_s": elapsed,
        "data_rng": data_rng.bit_generator.state,
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


def train(cfg: dict | None = None) -> dict:
    """Run (or resume) training; returns a summary dict (step, out_dir, last eval accuracy, ...)."""
    cfg = merge_config(cfg)
    t_start = time.time()
    tcfg, ecfg, ccfg = cfg["train"], cfg["eval"], cfg["checkpoint"]
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

    text, source = load_corpus_text(cfg["corpus"], cfg["max_corpus_chars"])
    tok_dir = run_dir / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(text, **cfg["tokenizer"])
        tokenizer.save_pretrained(tok_dir)
    ids = encode_corpus(tokenizer, text)
    data = RetrievalData(tokenizer, ids, cfg["data"])
    print(f"[train_proxy] corpus {source}: {len(text):,} chars -> {len(ids):,} tokens; device {device}")

    model = build_model(cfg["model"], tokenizer).to(device)
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
    data_rng = np.random.default_rng(cfg["seed"])
    step, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        data_rng.bit_generator.state = state["data_rng"]
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
    while progress() < 1.0:
        t0 = time.time()
        length = length_at(progress(), cfg["curriculum"])
        if length > cfg["model"]["max_position_embeddings"]:
            raise ValueError(f"curriculum length {length} > max_position_embeddings")
        bsz = max(1, tcfg["tokens_per_step"] // length)
        x, y, is_ret = data.batch(bsz, length, data_rng)
        has_ret, has_lm = bool(is_ret.any()), bool((~is_ret).any())
        if device.type == "cuda":
            x, y, is_ret = (t.pin_memory().to(device, non_blocking=True) for t in (x, y, is_ret))
        lr = lr_at(step, progress(), tcfg)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = fwd(input_ids=x, use_cache=False).logits
        loss, parts = loss_fn(logits, y, is_ret, cfg["data"]["retrieval_loss_weight"], has_lm, has_ret)
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
                bar.set_postfix(loss=row["loss"], len=length, lr=row["lr"], tok_s=row["tokens_per_s"])
            else:
                print("[train_proxy] " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        elapsed += time.time() - t0
        if ecfg["every"] and step % ecfg["every"] == 0:
            last_acc = evaluate_retrieval(model, data, length, ecfg["n_samples"], cfg["seed"], device, amp)
            row = row or {"step": step, "length": length, "batch": bsz, "lr": f"{lr:.3e}"}
            row["eval_acc"] = f"{last_acc:.4f}"
            if bar is not None:
                bar.write(f"[train_proxy] step {step} length {length}: retrieval accuracy {last_acc:.3f}")
            else:
                print(f"[train_proxy] step {step} length {length}: retrieval accuracy {last_acc:.3f}", flush=True)
        if row is not None:
            row["elapsed_s"] = f"{elapsed:.1f}"
            log.write(row)
        if bar is not None:
            bar.update(1)
        if ccfg["every"] and step % ccfg["every"] == 0:
            save_checkpoint(run_dir, _unwrap(model), opt, step, elapsed, data_rng, ccfg["keep"], cfg)
            last_saved = step
    if bar is not None:
        bar.close()
    stopped_by = "time" if budget and elapsed >= budget else "steps"
    if ecfg["final"] and ecfg["n_samples"]:
        last_acc = evaluate_retrieval(model, data, length, ecfg["n_samples"], cfg["seed"], device, amp)
        log.write({"step": step, "length": length, "elapsed_s": f"{elapsed:.1f}", "eval_acc": f"{last_acc:.4f}"})
        print(f"[train_proxy] final retrieval accuracy at length {length}: {last_acc:.3f}")
    if last_saved != step:
        save_checkpoint(run_dir, _unwrap(model), opt, step, elapsed, data_rng, ccfg["keep"], cfg)
    log.close()
    export(model, tokenizer, out_dir, cfg["export_dtype"], cfg["max_shard_size"], run_dir / "training_log.csv")
    summary = {
        "step": step,
        "length": length,
        "eval_acc": last_acc,
        "stopped_by": stopped_by,
        "train_s": elapsed,
        "wall_s": time.time() - t_start,
        "out_dir": str(out_dir),
        "run_dir": str(run_dir),
        "params": n_params,
        "corpus": source,
    }
    print(f"[train_proxy] done: {json.dumps(summary)}")
    return summary
