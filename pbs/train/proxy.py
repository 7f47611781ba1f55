"""Train a small long-context proxy Llama (byte-level BPE, GQA, RoPE 500K) on LM + synthetic retrieval.

Library only (no Hydra): ``train(cfg)`` takes a :class:`pbs.train.config.TrainProxyConfig`; the Hydra front end
is experiments/train_proxy.py. Data: :mod:`pbs.train.data`; checkpoints, training log and export:
:mod:`pbs.train.checkpoint`; this module: the model, the loss, the schedules and the training loop.

The sequence length follows a curriculum over training progress, with batch = tokens_per_step // length.
Progress is max(step / max_steps, train_seconds / (60 * max_minutes)), so LR schedule and curriculum also
work under a time budget. Checkpoints (model, optimizer, step, elapsed, RNG states) are resumable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pbs.devices import resolve_device
from pbs.train.checkpoint import (
    CsvLog,
    export,
    init_weights_from,
    load_checkpoint,
    milestone_position,
    restore,
    save_checkpoint,
    unwrap,
)
from pbs.train.config import CurriculumStage, OptimizationConfig, ProxyModelConfig, TrainProxyConfig
from pbs.train.data import (
    BatchPool,
    ProxyData,
    batch_workers,
    encode_corpus,
    lm_heldout,
    lm_split,
    load_corpus_text,
    train_tokenizer,
)
from pbs.train.tasks import TaskSampler

# ------------------------------------------------------------------------------------------------ model, loss


def build_model(mcfg: ProxyModelConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    m = dataclasses.asdict(mcfg)
    attn = m.pop("attn_implementation")
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


def lr_at(step: int, progress: float, tcfg: OptimizationConfig, warm_from: int = 0) -> float:
    """Linear warm-up over ``warmup_steps`` from step ``warm_from`` (where the optimizer started), then cosine over
    progress."""
    base = tcfg.lr
    if step - warm_from < tcfg.warmup_steps:
        return base * (step - warm_from + 1) / tcfg.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    r = tcfg.min_lr_ratio
    return base * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * p)))


def length_at(progress: float, curriculum: list[CurriculumStage]) -> int:
    for stage in curriculum:
        if progress < stage.until:
            return int(stage.length)
    return int(curriculum[-1].length)


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


@torch.no_grad()
def heldout_perplexity(model, windows: np.ndarray, device, autocast_dtype=None, batch: int = 1) -> float:
    """exp(mean next-token cross-entropy) over the held-out windows (n, L), every position after the first."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        x = torch.from_numpy(windows[i : i + batch]).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=x, use_cache=False).logits
        ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                             reduction="sum")
        total += float(ce)
        count += x[:, 1:].numel()
    model.train(was_training)
    return math.exp(total / max(count, 1))


# ------------------------------------------------------------------------------------------------ training


@dataclass
class _Run:
    """What the loop needs, set up once by :func:`train`."""

    cfg: TrainProxyConfig
    device: torch.device
    amp: torch.dtype | None
    tokenizer: object
    data: ProxyData
    heldout: TaskSampler  # held-out task samples for the evaluations
    heldout_ids: np.ndarray  # held-out LM tokens for the perplexity evaluation
    pool: BatchPool
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    log: CsvLog
    run_dir: Path
    out_dir: Path
    step: int = 0
    elapsed: float = 0.0  # seconds spent in training steps (not in evaluation or checkpoints)
    last_saved: int = -1
    last_acc: float | None = None
    length: int = 0
    warm_from: int = 0  # the step the optimizer started at (LR warm-up): 0, or a continued milestone's step
    start_elapsed: float = 0.0  # trained seconds when this invocation began (train.stop_after_minutes)

    @property
    def budget(self) -> float | None:
        minutes = self.cfg.train.max_minutes
        return 60.0 * minutes if minutes else None

    def progress(self) -> float:
        p = self.step / self.cfg.train.max_steps
        return max(p, self.elapsed / self.budget) if self.budget else p

    def session_over(self) -> bool:
        stop = self.cfg.train.stop_after_minutes
        return stop is not None and self.elapsed - self.start_elapsed >= 60.0 * stop


def train(cfg: TrainProxyConfig | None = None) -> dict:
    """Run (or resume) training; returns a summary dict (step, out_dir, final task scores, ...)."""
    cfg = cfg or TrainProxyConfig()
    t_start = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    resumed = load_checkpoint(run_dir) if cfg.resume else None
    # a checkpoint of this run_dir is newer than the milestone it continued from
    milestone = milestone_position(Path(cfg.continue_from)) if cfg.continue_from and resumed is None else None
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    tokenizer, data, source, sizes, heldout_ids = _prepare_data(cfg, run_dir)
    heldout = data.heldout_sampler()
    pool = BatchPool(data, run_dir / "tokenizer", cfg.data, run_dir / "corpus_ids.npy",
                     batch_workers(cfg.data.workers, device.type))
    print(f"[train_proxy] corpus {source}: {sizes}; device {device}; {pool.workers} data workers")
    model, opt = _model_and_optimizer(cfg, tokenizer, device, init=resumed is None)  # continue_from: its weights
    step, elapsed, warm_from, keep_log = 0, 0.0, 0, False
    if resumed is not None:
        step, elapsed = restore(resumed[1], model, opt)
        warm_from, keep_log = int(resumed[1].get("warm_from", 0)), True
        print(f"[train_proxy] resumed from {resumed[0]} at step {step} ({elapsed:.0f} s trained)")
    elif milestone is not None:
        step, elapsed = milestone
        warm_from, keep_log = step, True
        shutil.copyfile(Path(cfg.continue_from) / "training_log.csv", run_dir / "training_log.csv")
        print(f"[train_proxy] continuing {cfg.continue_from} at step {step} ({elapsed:.0f} s trained; fresh "
              f"optimizer, LR re-warmed over {cfg.train.warmup_steps} steps)")
    log = CsvLog(run_dir / "training_log.csv", keep_until_step=step if keep_log else None)
    amp = getattr(torch, cfg.autocast_dtype) if device.type == "cuda" and cfg.autocast_dtype else None
    run = _Run(cfg=cfg, device=device, amp=amp, tokenizer=tokenizer, data=data, heldout=heldout,
               heldout_ids=heldout_ids, pool=pool,
               model=model, opt=opt, log=log, run_dir=run_dir, out_dir=Path(cfg.out_dir or run_dir / "export"),
               step=step, elapsed=elapsed, last_saved=step if resumed is not None else -1, warm_from=warm_from,
               start_elapsed=elapsed)
    try:
        _loop(run)
    finally:
        pool.close()
    final, final_ppl = _final_eval(run)
    if run.last_saved != run.step:
        save_checkpoint(run_dir, unwrap(model), opt, run.step, run.elapsed, cfg.checkpoint.keep,
                        dataclasses.asdict(cfg), run.warm_from)
    run.log.close()
    export(model, tokenizer, run.out_dir, cfg.export_dtype, cfg.max_shard_size, run_dir / "training_log.csv")
    summary = {
        "step": run.step,
        "length": run.length,
        "eval_acc": run.last_acc,
        "final_scores": {str(n): v for n, v in final.items()},
        "final_heldout_ppl": {str(n): v for n, v in final_ppl.items()},
        "stopped_by": ("time" if run.budget and run.elapsed >= run.budget else "steps") if run.progress() >= 1.0
        else "stop_after_minutes",
        "progress": min(run.progress(), 1.0),
        "train_s": run.elapsed,
        "wall_s": time.time() - t_start,
        "out_dir": str(run.out_dir),
        "run_dir": str(run_dir),
        "params": sum(p.numel() for p in model.parameters()),
        "corpus": source,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"[train_proxy] done: {json.dumps(summary)}")
    return summary


def _prepare_data(cfg: TrainProxyConfig, run_dir: Path) -> tuple[object, ProxyData, str, str, np.ndarray]:
    """Tokenizer (trained once per run dir, reloaded on resume) and the batch source over the encoded corpus;
    the corpus's source and its size; the held-out LM tokens (``data.heldout_corpus``, else the corpus's tail)."""
    from transformers import PreTrainedTokenizerFast

    tok_dir, text, source = run_dir / "tokenizer", None, None
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    elif cfg.continue_from or cfg.tokenizer.path:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(cfg.continue_from or cfg.tokenizer.path)
    else:
        text, source = load_corpus_text(cfg.corpus, cfg.max_corpus_chars)
        tokenizer = train_tokenizer(text, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency,
                                    ProxyModelConfig.max_position_embeddings)
    if not (tok_dir / "tokenizer.json").exists():
        tokenizer.save_pretrained(tok_dir)
    ids, source, sizes = _corpus_ids(cfg, run_dir, tokenizer, text, source)
    data = ProxyData(tokenizer, lm_split(ids, cfg.data), cfg.data)
    data.sampler.verify(min(1024, cfg.curriculum[0].length))
    if cfg.data.heldout_corpus:
        heldout_ids = encode_corpus(tokenizer, load_corpus_text(cfg.data.heldout_corpus)[0])
    else:
        heldout_ids = np.asarray(lm_heldout(ids, cfg.data))
    return tokenizer, data, source, sizes, heldout_ids


def _corpus_ids(cfg: TrainProxyConfig, run_dir: Path, tokenizer, text: str | None, source: str | None):
    """The corpus's token ids, memory-mapped from ``<run_dir>/corpus_ids.npy`` (encoded once per run dir, corpus
    and tokenizer: a resumed command and the batch workers skip the encoding); (ids, source, size text)."""
    path, key_path = run_dir / "corpus_ids.npy", run_dir / "corpus_ids.json"
    key = {"corpus": cfg.corpus, "max_corpus_chars": cfg.max_corpus_chars,
           "tokenizer_sha256": hashlib.sha256((run_dir / "tokenizer" / "tokenizer.json").read_bytes()).hexdigest()}
    cached = json.loads(key_path.read_text()) if key_path.exists() and path.exists() else {}
    if {k: cached.get(k) for k in key} != key:
        if text is None:
            text, source = load_corpus_text(cfg.corpus, cfg.max_corpus_chars)
        np.save(path, encode_corpus(tokenizer, text))
        cached = {**key, "source": source, "chars": len(text)}
        key_path.write_text(json.dumps(cached))
    ids = np.load(path, mmap_mode="r")
    return ids, cached["source"], f"{cached['chars']:,} chars -> {len(ids):,} tokens"


def _model_and_optimizer(cfg: TrainProxyConfig, tokenizer, device, init: bool):
    """The model (weights from ``init_from`` or ``continue_from`` on a fresh start) on ``device``, and AdamW (decay
    on matrices only)."""
    model = build_model(cfg.model, tokenizer)
    for name in ("init_from", "continue_from"):
        if getattr(cfg, name) and init:
            init_weights_from(model, Path(getattr(cfg, name)), name)
    model = model.to(device)
    print(f"[train_proxy] model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.train.lr,
        betas=tuple(cfg.train.betas),
        fused=device.type == "cuda",
    )
    return model, opt


def _loop(run: _Run) -> None:
    """Steps until progress reaches 1: a CSV row every ``log_every`` steps, task scores every ``eval.every``,
    a checkpoint (and an export of its weights) every ``checkpoint.every``."""
    cfg = run.cfg
    fwd = torch.compile(run.model) if cfg.compile else run.model
    run.model.train()
    bar = None
    if cfg.progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.train.max_steps, initial=run.step, dynamic_ncols=True, desc="train_proxy")
    tok_count, t_win = 0, time.time()
    run.length = length_at(run.progress(), cfg.curriculum)
    while run.progress() < 1.0 and not run.session_over():
        t0 = time.time()
        run.length = length_at(run.progress(), cfg.curriculum)
        bsz = max(1, cfg.train.tokens_per_step // run.length)
        loss, parts, lr = _step(run, fwd, bsz)
        run.step += 1
        tok_count += bsz * run.length
        row = None
        if run.step % cfg.train.log_every == 0 or run.step == 1:
            row = _log_row(run, loss, parts, lr, bsz, tok_count / max(time.time() - t_win, 1e-9), bar)
            tok_count, t_win = 0, time.time()
        run.elapsed += time.time() - t0
        if cfg.eval.every and run.step % cfg.eval.every == 0 and (cfg.eval.n_samples or cfg.eval.perplexity_windows):
            row = row or {"step": run.step, "length": run.length, "batch": bsz, "lr": f"{lr:.3e}"}
            if cfg.eval.n_samples:
                scores = evaluate_tasks(run.model, run.heldout, run.data.tasks, run.length,
                                        cfg.eval.n_samples, cfg.seed, run.device, run.amp)
                run.last_acc = _log_eval(scores, run.step, run.length, bar)
                row["eval_acc"] = f"{run.last_acc:.4f}"
            if cfg.eval.perplexity_windows:
                row["heldout_ppl"] = f"{_perplexity(run, run.length):.4f}"
        if row is not None:
            row["elapsed_s"] = f"{run.elapsed:.1f}"
            run.log.write(row)
        if bar is not None:
            bar.update(1)
        if cfg.checkpoint.every and run.step % cfg.checkpoint.every == 0:
            save_checkpoint(run.run_dir, unwrap(run.model), run.opt, run.step, run.elapsed, cfg.checkpoint.keep,
                            dataclasses.asdict(cfg), run.warm_from)
            # the export always holds the newest checkpoint's weights: a run killed later still leaves a model
            export(run.model, run.tokenizer, run.out_dir, cfg.export_dtype, cfg.max_shard_size, run.log.path)
            run.last_saved = run.step
    if bar is not None:
        bar.close()


def _step(run: _Run, fwd, bsz: int):
    """One optimizer step on the batch of ``run.step``; returns (loss, its LM / retrieval parts, lr)."""
    cfg = run.cfg
    x, y, is_ret = (torch.from_numpy(a) for a in run.pool.get(run.step, bsz, run.length, cfg.seed))
    has_ret, has_lm = bool(is_ret.any()), bool((~is_ret).any())
    if run.device.type == "cuda":
        x, y, is_ret = (t.pin_memory().to(run.device, non_blocking=True) for t in (x, y, is_ret))
    lr = lr_at(run.step, run.progress(), cfg.train, run.warm_from)
    for g in run.opt.param_groups:
        g["lr"] = lr
    with torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
        logits = fwd(input_ids=x, use_cache=False).logits
    loss, parts = loss_fn(logits, y, is_ret, cfg.data.retrieval_loss_weight, has_lm, has_ret)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
    run.opt.step()
    return loss, parts, lr


def _log_row(run: _Run, loss, parts, lr: float, bsz: int, tokens_per_s: float, bar) -> dict:
    lv = loss.item()  # syncs
    if not math.isfinite(lv):
        raise FloatingPointError(f"non-finite loss at step {run.step}")
    row = {
        "step": run.step,
        "length": run.length,
        "batch": bsz,
        "loss": f"{lv:.4f}",
        "lm_loss": f"{parts['lm'].item():.4f}" if parts["lm"] is not None else "",
        "ret_loss": f"{parts['ret'].item():.4f}" if parts["ret"] is not None else "",
        "lr": f"{lr:.3e}",
        "tokens_per_s": f"{tokens_per_s:.0f}",
    }
    if bar is not None:
        bar.set_postfix(loss=row["loss"], ret=row["ret_loss"], len=run.length, tok_s=row["tokens_per_s"])
    else:
        print("[train_proxy] " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def _perplexity(run: _Run, length: int) -> float:
    windows = run.data.heldout_windows(run.heldout_ids, length, run.cfg.eval.perplexity_windows)
    return heldout_perplexity(run.model, windows, run.device, run.amp)


def _final_eval(run: _Run) -> tuple[dict[int, dict[str, float]], dict[int, float]]:
    """Task scores and held-out perplexity after the last step at each of ``eval.final_lengths`` (those the
    model's context holds)."""
    ecfg, final, ppl = run.cfg.eval, {}, {}
    if not ecfg.final:
        return final, ppl
    for n in ecfg.final_lengths or [run.length]:
        if n > run.cfg.model.max_position_embeddings:
            continue
        row = {"step": run.step, "length": n, "elapsed_s": f"{run.elapsed:.1f}"}
        if ecfg.n_samples:
            final[n] = evaluate_tasks(run.model, run.heldout, run.data.tasks, n, ecfg.n_samples, run.cfg.seed,
                                      run.device, run.amp)
            run.last_acc = _log_eval(final[n], run.step, n, None)
            row["eval_acc"] = f"{run.last_acc:.4f}"
        if ecfg.perplexity_windows:
            ppl[n] = _perplexity(run, n)
            row["heldout_ppl"] = f"{ppl[n]:.4f}"
            print(f"[train_proxy] step {run.step} length {n}: held-out perplexity {ppl[n]:.2f}")
        run.log.write(row)
    return final, ppl


def _log_eval(scores: dict[str, float], step: int, length: int, bar) -> float:
    mean = float(np.mean(list(scores.values()))) if scores else float("nan")
    msg = (f"[train_proxy] step {step} length {length}: task score {mean:.3f} ("
           + ", ".join(f"{t} {v:.2f}" for t, v in scores.items()) + ")")
    (bar.write if bar is not None else print)(msg)
    return mean
