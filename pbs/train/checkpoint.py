"""Checkpoints (resumable: model, optimizer, step, trained seconds, RNG states), the training log, and the export
of a trained proxy (safetensors + tokenizer + training log)."""

from __future__ import annotations

import copy
import csv
import random
import shutil
from pathlib import Path

import numpy as np
import torch

LOG_FIELDS = ["step", "length", "batch", "loss", "lm_loss", "ret_loss", "lr", "tokens_per_s", "elapsed_s", "eval_acc",
              "heldout_ppl"]


def _ckpt_dirs(run_dir: Path) -> list[Path]:
    d = run_dir / "checkpoints"
    return sorted(d.glob("step_*"), key=lambda p: int(p.name.split("_")[1])) if d.exists() else []


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    c = _ckpt_dirs(Path(run_dir))
    return c[-1] if c else None


def save_checkpoint(run_dir: Path, model, opt, step: int, elapsed: float, keep: int, config: dict,
                    warm_from: int = 0) -> Path:
    """``<run_dir>/checkpoints/step_XXXXXXXX/state.pt`` (written to a temporary folder, then renamed); keeps the
    newest ``keep`` checkpoints (0: all). ``warm_from``: the step the optimizer started at (its LR warm-up)."""
    path = run_dir / "checkpoints" / f"step_{step:08d}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "elapsed_s": elapsed,
        "warm_from": warm_from,
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "config": config,
    }
    torch.save(state, tmp / "state.pt")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    for old in _ckpt_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint in ``run_dir``, or None."""
    ckpt = latest_checkpoint(run_dir)
    return (ckpt, torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)) if ckpt else None


def restore(state: dict, model, opt) -> tuple[int, float]:
    """Load model, optimizer and RNG states; returns (step, trained seconds)."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"]), float(state["elapsed_s"])


def unwrap(model):
    """The module under ``torch.compile``'s wrapper (or the model itself)."""
    return getattr(model, "_orig_mod", model)


def init_weights_from(model, folder: Path, setting: str = "init_from") -> None:
    """Copy the weights of a saved model (e.g. the committed proxy) into ``model``; shapes must match exactly
    (``setting``: the config key named in the error)."""
    from transformers import AutoModelForCausalLM

    src = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    mine, theirs = model.state_dict(), src.state_dict()
    bad = sorted(k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape)
    if bad or set(theirs) - set(mine):
        raise ValueError(f"{setting}={str(folder)!r} does not match model config: differing weights {bad[:5]}")
    model.load_state_dict(theirs)
    print(f"[train_proxy] weights initialised from {folder} (fresh optimizer)")


def export(model, tokenizer, out_dir: Path, dtype: str, max_shard_size: str, log_path: Path | None) -> Path:
    """save_pretrained (safetensors, cast to `dtype`, sharded) + tokenizer + training_log.csv, nothing else."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(unwrap(model)).to("cpu", dtype=getattr(torch, dtype))
    m.config.use_cache = True
    m.save_pretrained(out_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out_dir)
    gen = out_dir / "generation_config.json"  # defaults only; fewer files to carry around
    if gen.exists():
        gen.unlink()
    if log_path is not None and log_path.exists() and log_path.resolve() != (out_dir / "training_log.csv").resolve():
        shutil.copyfile(log_path, out_dir / "training_log.csv")
    return out_dir


def milestone_position(folder: Path) -> tuple[int, float]:
    """(step, trained seconds) at which an exported milestone was saved, from its ``training_log.csv``."""
    path = folder / "training_log.csv"
    if not path.exists():
        raise ValueError(f"continue_from={str(folder)!r} has no training_log.csv: not an export of train_proxy")
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("step")]
    if not rows:
        raise ValueError(f"continue_from={str(folder)!r}: its training_log.csv has no rows")
    last = max(rows, key=lambda r: (int(r["step"]), float(r.get("elapsed_s") or 0)))
    return int(last["step"]), float(last.get("elapsed_s") or 0.0)


class CsvLog:
    """``training_log.csv``: one row per logged step (columns :data:`LOG_FIELDS`), flushed as written."""

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
