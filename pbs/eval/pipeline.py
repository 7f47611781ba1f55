"""One evaluation job: resolve the model, skip it if its results exist, evaluate, store, log to wandb.

Called by ``experiments/eval.py`` (Hydra) with the resolved config as plain data; never imports hydra.
A failure (an exception, CUDA out of memory) is recorded as a failed run and returned, so a sweep goes on.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path

from .results import RunStore, run_id

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding models/, conf/, results/

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """A hub model that cannot be reached: says which, and how to use a local copy."""


def resolve_model_path(model_cfg: dict) -> str:
    """The model folder or hub id; ``path: null`` means the embedded tiny model (built on first use).

    A hub id must be in the local Hugging Face cache or reachable; otherwise one clear error names it.
    """
    path = model_cfg.get("path")
    if not path:
        from .tiny_model import build_tiny_model

        return str(build_tiny_model())
    if Path(path).is_dir():
        return str(path)
    in_project = PROJECT_ROOT / path
    if not Path(path).is_absolute() and in_project.is_dir():  # e.g. models/pbs-proxy-llama from another cwd
        return str(in_project)
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(str(path), local_files_only=True, allow_patterns=["config.json"])
        return str(path)
    except Exception:  # noqa: BLE001  (not cached: fine if the hub is reachable)
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise ModelUnavailableError(
                f"model {path!r} ({model_cfg.get('name')}) is not in the local Hugging Face cache and the hub is "
                f"offline (HF_HUB_OFFLINE=1). Point the config at a local copy: model.path=/path/to/{Path(path).name} "
                f"(a folder with config.json, the weights and the tokenizer), or download it where the hub is "
                f"reachable (huggingface-cli download {path})."
            ) from None
        return str(path)


def job_config(cfg: dict, method_name: str) -> dict:
    """The part of the config that defines a run (and its id): model, method, task, numerics."""
    keep = ("model", "method", "task", "backend", "device", "dtype", "limit", "short_seq_policy")
    out = {key: cfg[key] for key in keep if key in cfg}
    out["method_name"] = method_name
    return out


def resolve_device(device: str, dtype: str, job_num: int = 0) -> tuple[str, str]:
    """``auto``: GPU ``job_num % count`` (one GPU per parallel job) and bf16, else CPU and fp32."""
    import torch

    if device == "auto":
        count = torch.cuda.device_count()
        device = f"cuda:{job_num % count}" if count else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def run_job(cfg: dict, method_name: str, *, command: str, group: str, job_num: int = 0, evaluate=None) -> dict:
    """Run (or skip) one job; returns {"run_id", "status", "metrics"?, "error"?}."""
    from ..provenance import provenance

    run_cfg = job_config(cfg, method_name)
    rid = run_id(run_cfg)
    store = RunStore(cfg["results_dir"])
    if store.is_finished(rid) and not cfg.get("rerun", False):
        log.info("run %s (%s) already finished: skipped", rid, method_name)
        return {"run_id": rid, "status": "skipped"}
    prov = provenance(command)
    if evaluate is None:
        from .run import evaluate
    device, dtype = resolve_device(cfg["device"], cfg["dtype"], job_num)
    start = time.perf_counter()
    try:
        model_path = resolve_model_path(cfg["model"])  # raises ModelUnavailableError: recorded below
        _set_ruler_env(cfg["task"], model_path)
        model_cfg, task_cfg = cfg["model"], cfg["task"]
        v2_cfg = dict(task_cfg.get("v2") or {})
        model_kwargs = {
            "short_seq_policy": bool(cfg.get("short_seq_policy", False)),
            "max_length_v2": model_cfg.get("max_length_v2"),
            "chat_template_kwargs": model_cfg.get("chat_template_kwargs"),
            "rope_scaling": model_cfg.get("rope_scaling"),
            "seed": v2_cfg.pop("seed", None),
        }
        result = evaluate(
            model_path=model_path,
            method=method_name,
            method_kwargs=dict(cfg["method"]),
            tasks=list(cfg["task"]["tasks"]),
            data=cfg["task"].get("data", "hub"),
            backend=cfg["backend"],
            max_length=cfg["model"].get("max_length"),
            limit=cfg.get("limit"),
            device=device,
            dtype=dtype,
            apply_chat_template=model_cfg.get("chat_template", True),
            model_kwargs=model_kwargs,
            v2=v2_cfg,
        )
    except Exception as exc:  # noqa: BLE001  (any failure is recorded and the sweep goes on)
        error = f"{type(exc).__name__}: {exc}"
        log.error("run %s (%s) failed: %s", rid, method_name, error)
        store.save(rid, run_cfg, "failed", prov, error=error + "\n" + traceback.format_exc())
        _log_wandb(cfg, run_cfg, rid, group, None, error)
        return {"run_id": rid, "status": "failed", "error": error}
    metrics = {key: result[key] for key in ("scores", "longbench", "longbench_v2", "density", "prefill_ms")
               if result.get(key)}
    metrics["wall_s"] = time.perf_counter() - start
    store.save(rid, run_cfg, "ok", prov, metrics=metrics, generations=result.get("generations", []))
    _log_wandb(cfg, run_cfg, rid, group, metrics, None)
    return {"run_id": rid, "status": "ok", "metrics": metrics}


def _set_ruler_env(task_cfg: dict, model_path: str) -> None:
    """The RULER-style tasks read their lengths, sample count, seed and tokenizer from the environment."""
    if "lengths" in task_cfg:
        os.environ["PBS_RULER_LENGTH"] = ",".join(str(n) for n in task_cfg["lengths"])
        os.environ["PBS_RULER_SAMPLES"] = str(task_cfg.get("samples", 20))
        os.environ["PBS_RULER_SEED"] = str(task_cfg.get("seed", 42))
        os.environ["PBS_RULER_TOKENIZER"] = model_path


def _log_wandb(cfg: dict, run_cfg: dict, rid: str, group: str, metrics: dict | None, error: str | None) -> None:
    """One wandb run per job, one group per sweep; keys: score/<task>, density/mean, density/layer_<i>, prefill_ms."""
    wb = cfg.get("wandb", {})
    if wb.get("mode", "offline") == "disabled":
        return
    import wandb

    run = wandb.init(project=wb.get("project", "pbs"), group=wb.get("group") or group, name=rid, id=rid,
                     config=run_cfg, mode=wb.get("mode", "offline"), dir=wb.get("dir") or cfg["results_dir"],
                     reinit="finish_previous", resume="allow")
    summary = {"status": "failed" if error else "ok"}
    if error:
        summary["error"] = error
    if metrics:
        for task, entry in metrics.get("scores", {}).items():
            summary[f"score/{task}"] = entry.get("score")
        for key, value in metrics.get("longbench", {}).items():
            summary[f"longbench/{key}"] = value
        density = metrics.get("density", {})
        summary["density/mean"] = density.get("mean")
        for layer, value in (density.get("per_layer") or {}).items():
            summary[f"density/layer_{layer}"] = value
        summary["prefill_ms/mean"] = metrics.get("prefill_ms", {}).get("mean")
    run.log(summary)
    run.summary.update(summary)
    run.finish()
