"""One evaluation job of the Hydra app: check the settings, resolve the model, skip the job if its result exists
(or another process is computing it), evaluate, store the result, log to wandb.

Called by ``experiments/eval.py`` with the job's :class:`pbs.eval.config.EvalConfig` (built once by Hydra, the
method's config object included); never imports hydra. A failure (an exception, CUDA out of memory) is recorded as
a failed run and returned, so a sweep goes on; the app's exit status and summary come from the returned outcomes.

The run id hashes the resolved config with its identity -- the code (git commit + uncommitted changes), the model
(weights hash or hub revision), the data (content hash) and the numerics (device type, dtype) -- so a finished run
is reused only when all of them match (``rerun=true`` runs it again anyway).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .claims import new_execution_id, owner_info, read_claim, try_claim
from .config import EvalConfig, ModelConfig, RulerTask
from .results import RunStore, run_id

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding models/, conf/, results/

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """A model that cannot be found: says which, and what to point ``model.path`` at."""


class SettingsError(ValueError):
    """A setting that cannot work (a missing local path, ...): names the key, its value and what to do."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (``owner/name``)."""
    return Path(path).is_absolute() or path.startswith((".", "~")) or path.count("/") > 1


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def resolve_model(model: ModelConfig) -> tuple[str, str]:
    """(what to load, its identity): a local folder and its content hash, or a hub snapshot and ``hub:<id>@<rev>``.

    ``path: null`` means the embedded tiny model (built on first use). A missing local folder, or a hub id that is
    neither cached nor reachable, raises one :class:`ModelUnavailableError` naming ``model.path``.
    """
    from .identity import model_identity

    path = model.path
    if not path:
        from .tiny_model import build_tiny_model

        folder = str(build_tiny_model())
        return folder, model_identity(folder)
    for folder in (Path(path).expanduser(), PROJECT_ROOT / path):  # relative: the cwd, then the project root
        if folder.is_dir():
            return str(folder), model_identity(str(folder))
    if _looks_local(path):
        raise ModelUnavailableError(
            f"model.path={path!r} ({model.name}): no such folder. Point model.path at a folder holding config.json, "
            f"the weights and the tokenizer (relative paths are tried from the working directory, then from "
            f"{PROJECT_ROOT}), or at a hub id such as meta-llama/Llama-3.1-8B-Instruct."
        )
    from huggingface_hub import snapshot_download

    try:  # loaded by its id (transformers finds the cache); identified by the cached snapshot's revision
        snapshot = snapshot_download(str(path), local_files_only=True, allow_patterns=["config.json"])
        return str(path), model_identity(snapshot)
    except Exception:  # noqa: BLE001  (not cached: fine if the hub is reachable)
        if _hub_offline():
            raise ModelUnavailableError(
                f"model.path={path!r} ({model.name}) is not in the local Hugging Face cache and the hub is offline "
                f"(HF_HUB_OFFLINE=1). Point model.path at a local copy (a folder with config.json, the weights and "
                f"the tokenizer), or download it where the hub is reachable: huggingface-cli download {path}"
            ) from None
    from huggingface_hub import HfApi

    try:
        revision = HfApi().model_info(str(path)).sha
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailableError(
            f"model.path={path!r} ({model.name}): not a local folder and not found on the hub "
            f"({type(exc).__name__}). Point model.path at a local copy or a hub id."
        ) from None
    return str(path), f"hub:{path}@{revision}"


def resolve_model_path(model: ModelConfig) -> str:
    """The model folder or hub id to load (see :func:`resolve_model`)."""
    return resolve_model(model)[0]


def check_settings(cfg: EvalConfig) -> None:
    """What can be checked before a job starts (seconds): local paths exist. Raises :class:`SettingsError` or
    :class:`ModelUnavailableError` naming the key."""
    path = cfg.model.path
    if path and _looks_local(path) and not Path(path).expanduser().is_dir() and not (PROJECT_ROOT / path).is_dir():
        resolve_model(cfg.model)  # raises the error naming model.path
    data = getattr(cfg.task, "data", None)
    if data not in (None, "hub", "fixtures") and not str(data).startswith("hub:") \
            and not Path(str(data)).expanduser().exists():
        raise SettingsError(f"task.data={data!r}: no such file or folder. Use task.data=hub (the Hugging Face Hub), "
                            f"task.data=fixtures (the shipped records) or a local copy of the data.")


def run_label(cfg: EvalConfig) -> str:
    """A readable name: method, its non-default settings, the RULER lengths (or the task), e.g. ``pbs permute=none
    2K``."""
    import dataclasses

    from .report import non_default_kwargs

    kwargs = non_default_kwargs(cfg.method_name, dataclasses.asdict(cfg.method))
    parts = [cfg.method_name] + [f"{k}={v}" for k, v in sorted(kwargs.items())]
    if isinstance(cfg.task, RulerTask):
        parts.append(",".join(f"{n // 1024}K" if n % 1024 == 0 else str(n) for n in cfg.task.lengths))
    else:
        parts.append(cfg.task.name)
    return " ".join(parts)


def run_job(cfg: EvalConfig, *, command: str, group: str, job_num: int = 0, evaluate=None) -> dict:
    """Run (or skip) one job; returns ``{"run_id", "status": "ok" | "failed" | "skipped", "label", "reason",
    "metrics"?}`` (``reason``: one line).

    ``group``: the sweep's name (wandb group). ``job_num`` picks the GPU of ``device="auto"`` (job number modulo
    the visible GPUs); ``evaluate`` replaces :func:`pbs.eval.harness.evaluate` (tests).
    """
    from ..devices import resolve_device
    from .identity import code_version, data_identity

    label = run_label(cfg)
    try:  # before a run starts: a failure here has no run id and is not stored
        check_settings(cfg)
        model_path, model_id = resolve_model(cfg.model)
        device = resolve_device(cfg.device, job_num)
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
        run_cfg = cfg.run_config()
        run_cfg["identity"] = {"code": code_version(), "model": model_id, "data": data_identity(cfg.task),
                               "numerics": {"device_type": device.type, "dtype": dtype}}
    except Exception as exc:  # noqa: BLE001  (reported in the summary; the sweep goes on)
        reason = str(exc) if isinstance(exc, (SettingsError, ModelUnavailableError)) else f"{type(exc).__name__}: {exc}"
        log.error("%s: %s", label, reason)
        return {"run_id": None, "status": "failed", "label": label, "reason": reason.splitlines()[0]}
    rid = run_id(run_cfg)
    store = RunStore(cfg.results_dir)
    if (done := _finished(store, rid, cfg, label)) is not None:
        return done
    execution = new_execution_id()
    claim = try_claim(store.claim_path(rid), owner_info(execution))
    if claim is None:
        held = read_claim(store.claim_path(rid)) or {}
        reason = (f"being computed by another process (pid {held.get('pid')} on {held.get('host')}, since "
                  f"{held.get('started_utc')}): not computed twice")
        log.info("run %s (%s) %s", rid, label, reason)
        return {"run_id": rid, "status": "skipped", "label": label, "reason": reason}
    try:
        if (done := _finished(store, rid, cfg, label)) is not None:  # finished while we were claiming
            return done
        if store.state(rid) == "interrupted":
            was = store.record(rid) or {}
            log.warning("run %s (%s): its previous attempt was interrupted (started %s on %s, pid %s, never "
                        "finished): running it again", rid, label, was.get("started_utc"), was.get("host"),
                        was.get("pid"))
        record = dict(claim.owner, device=str(device), dtype=dtype)
        store.start(rid, run_cfg, record)
        claim.start_heartbeat()
        return _evaluate_and_store(cfg, store, rid, run_cfg, record, model_path, label, group, command, evaluate)
    finally:
        claim.release()


def _finished(store: RunStore, rid: str, cfg: EvalConfig, label: str) -> dict | None:
    if cfg.rerun or store.state(rid) != "ok":
        return None
    rec = store.record(rid) or {}
    reason = (f"already finished ({rec.get('finished_utc') or (rec.get('provenance') or {}).get('date_utc')}, "
              f"{store.run_dir(rid)}): skipped; rerun=true runs it again")
    log.info("run %s (%s) %s", rid, label, reason)
    return {"run_id": rid, "status": "skipped", "label": label, "reason": reason}


def _evaluate_and_store(cfg, store, rid, run_cfg, record, model_path, label, group, command, evaluate) -> dict:
    from ..provenance import provenance
    from .logs import quiet_logs

    if evaluate is None:
        from .harness import evaluate
    prov = provenance(command)
    start = time.perf_counter()
    with quiet_logs(cfg.verbose):
        try:
            task = cfg.task
            ruler = task if isinstance(task, RulerTask) else None
            result = evaluate(
                model_path,
                method=cfg.method_name,
                method_config=cfg.method,
                tasks=list(task.tasks),
                backend=cfg.backend,
                max_length=cfg.model.max_length,
                limit=cfg.limit,
                device=record["device"],
                dtype=record["dtype"],
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
            log.error("run %s (%s) failed: %s", rid, label, error)
            record = dict(record, finished_utc=_now())
            store.save(rid, run_cfg, "failed", prov, error=error + "\n" + traceback.format_exc(), record=record)
            _log_wandb(cfg, run_cfg, rid, record, group, label, None, error)
            return {"run_id": rid, "status": "failed", "label": label, "reason": error.splitlines()[0]}
        metrics = {key: result[key] for key in ("scores", "per_length", "longbench", "longbench_v2", "aggregate",
                                                "density", "prefill_ms") if result.get(key)}
        metrics["wall_s"] = time.perf_counter() - start
        record = dict(record, finished_utc=_now())
        store.save(rid, run_cfg, "ok", prov, metrics=metrics, generations=result.get("generations", []),
                   record=record)
        _log_wandb(cfg, run_cfg, rid, record, group, label, metrics, None)
    return {"run_id": rid, "status": "ok", "label": label, "reason": "", "metrics": metrics}


def _log_wandb(cfg: EvalConfig, run_cfg: dict, rid: str, record: dict, group: str, label: str,
               metrics: dict | None, error: str | None) -> None:
    """One wandb run per execution (id ``<run id>-<execution>``: a retry never inherits a failed attempt's keys),
    grouped by the sweep's name, named by :func:`run_label`; keys ``score/aggregate``, ``score/length_<n>``,
    ``score/<task>``, ``longbench/<key>``, ``density/mean``, ``density/layer_<i>``, ``prefill_ms/mean``."""
    wb = cfg.wandb
    if wb.mode == "disabled":
        return
    import wandb

    code = run_cfg["identity"]["code"]
    config = dict(run_cfg, run_id=rid, execution=record["execution"], device=record["device"], dtype=record["dtype"],
                  git_commit=code.get("git_commit") or code.get("package"), git_dirty=code.get("git_dirty"))
    run = wandb.init(project=wb.project, group=group, name=label, id=f"{rid}-{record['execution']}", config=config,
                     mode=wb.mode, dir=wb.dir or cfg.results_dir, reinit="finish_previous",
                     settings=wandb.Settings(silent=not cfg.verbose, quiet=not cfg.verbose))
    summary = {"status": "failed" if error else "ok"}
    if error:
        summary["error"] = error
    if metrics:
        agg = metrics.get("aggregate") or {}
        summary["score/aggregate"] = agg.get("score")
        for n, entry in (agg.get("per_length") or {}).items():
            summary[f"score/length_{n}"] = entry["score"]
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
