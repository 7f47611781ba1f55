"""One evaluation job of the Hydra app: resolve the model, skip the job if its results exist, evaluate, store the
results, log to wandb.

Called by ``experiments/eval.py`` with the job's :class:`pbs.eval.config.EvalConfig` (built once by Hydra, the
method's config object included); never imports hydra. A failure (an exception, CUDA out of memory) is recorded as
a failed run and returned, so a sweep goes on.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path

from .config import EvalConfig, ModelConfig, RulerTask
from .results import RunStore, run_id

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding models/, conf/, results/

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """A hub model that cannot be reached: says which, and how to use a local copy."""


def resolve_model_path(model: ModelConfig) -> str:
    """The model folder or hub id; ``path: null`` means the embedded tiny model (built on first use).

    A hub id must be in the local Hugging Face cache or reachable; otherwise one clear error names it.
    """
    path = model.path
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
                f"model {path!r} ({model.name}) is not in the local Hugging Face cache and the hub is "
                f"offline (HF_HUB_OFFLINE=1). Point the config at a local copy: model.path=/path/to/{Path(path).name} "
                f"(a folder with config.json, the weights and the tokenizer), or download it where the hub is "
                f"reachable (huggingface-cli download {path})."
            ) from None
        return str(path)


def run_job(cfg: EvalConfig, *, command: str, group: str, job_num: int = 0, evaluate=None) -> dict:
    """Run (or skip) one job; returns {"run_id", "status", "metrics"?, "error"?}.

    ``job_num`` picks the GPU of ``device="auto"`` (job number modulo the visible GPUs); ``evaluate`` replaces
    :func:`pbs.eval.harness.evaluate` (tests).
    """
    from ..devices import resolve_device
    from ..provenance import provenance

    run_cfg = cfg.run_config()
    rid = run_id(run_cfg)
    method = cfg.method_name
    store = RunStore(cfg.results_dir)
    if store.is_finished(rid) and not cfg.rerun:
        log.info("run %s (%s) already finished: skipped", rid, method)
        return {"run_id": rid, "status": "skipped"}
    prov = provenance(command)
    if evaluate is None:
        from .harness import evaluate
    device = resolve_device(cfg.device, job_num)
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    start = time.perf_counter()
    try:
        model_path = resolve_model_path(cfg.model)  # raises ModelUnavailableError: recorded below
        task = cfg.task
        ruler = task if isinstance(task, RulerTask) else None
        result = evaluate(
            model_path,
            method=method,
            method_config=cfg.method,
            tasks=list(task.tasks),
            backend=cfg.backend,
            max_length=cfg.model.max_length,
            limit=cfg.limit,
            device=str(device),
            dtype=dtype,
            apply_chat_template=cfg.model.chat_template,
            data=None if ruler else task.data,
            v2=None if ruler else task.v2,
            ruler=ruler,
            model_kwargs={
                "short_seq_policy": cfg.short_seq_policy,
                "max_length_v2": cfg.model.max_length_v2,
                "chat_template_kwargs": cfg.model.chat_template_kwargs,
                "rope_scaling": cfg.model.rope_scaling,
            },
        )
    except Exception as exc:  # noqa: BLE001  (any failure is recorded and the sweep goes on)
        error = f"{type(exc).__name__}: {exc}"
        log.error("run %s (%s) failed: %s", rid, method, error)
        store.save(rid, run_cfg, "failed", prov, error=error + "\n" + traceback.format_exc())
        _log_wandb(cfg, run_cfg, rid, group, None, error)
        return {"run_id": rid, "status": "failed", "error": error}
    metrics = {key: result[key] for key in ("scores", "longbench", "longbench_v2", "density", "prefill_ms")
               if result.get(key)}
    metrics["wall_s"] = time.perf_counter() - start
    store.save(rid, run_cfg, "ok", prov, metrics=metrics, generations=result.get("generations", []))
    _log_wandb(cfg, run_cfg, rid, group, metrics, None)
    return {"run_id": rid, "status": "ok", "metrics": metrics}


def _log_wandb(cfg: EvalConfig, run_cfg: dict, rid: str, group: str, metrics: dict | None, error: str | None) -> None:
    """One wandb run per job, one group per sweep; keys: score/<task>, density/mean, density/layer_<i>, prefill_ms."""
    wb = cfg.wandb
    if wb.mode == "disabled":
        return
    import wandb

    run = wandb.init(project=wb.project, group=wb.group or group, name=rid, id=rid, config=run_cfg, mode=wb.mode,
                     dir=wb.dir or cfg.results_dir, reinit="finish_previous", resume="allow")
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
