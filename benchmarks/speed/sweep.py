"""The sweep: every run of the config in order, each timed as time to first token, failures recorded.

One run = one (model, protocol, N, variant) on one model instance (built once per model, random weights or loaded):

- ``sdpa_<backend>``: transformers' own ``sdpa`` attention (GQA-native, ``is_causal``) forced to one backend with
  ``torch.nn.attention.sdpa_kernel``; a backend that cannot run these inputs is ``unavailable``, not failed.
- a method: ``pbs.hf.enable(model, method, config=...)`` with its fused planner; in regime ``fixed`` with
  ``budget`` = the target density at N (planning included in the time), in regime ``adaptive`` its own threshold.
- protocol ``forward``: ``model(ids, logits_to_keep=1, use_cache=True)`` (the prefill: the cache is written, only
  the last position's logits computed); ``generate``: ``model.generate(ids, max_new_tokens=1, do_sample=False)``,
  the paper's timing call, to check once that both agree.

Protocol: the first forward is a warm-up (compilation, autotuning; its peak memory is recorded), more warm-ups only
while cheap (``warmup``, ``max_warmup_s``); then ``reps`` to ``max_reps`` timed forwards
(``benchmarks.timing.time_cuda``: CUDA events, median / p10 / p90). Attention and planning times come from events
inside the forward (:mod:`.probe`), densities from the method's stats collector over the timed forwards. An
exception (OOM, a method's error) is recorded with the run and the sweep goes on. The CSV is rewritten after every
run, so a command stopped at its time limit keeps what it measured; with ``time_budget_s`` a run predicted not to
end inside the budget is not started (``skip_done`` picks it up in the next command).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import time
from pathlib import Path

import torch

import pbs.hf
from pbs.config import make_config
from pbs.methods import get_method

from ..report import gpu_slug
from ..timing import describe, on_cuda, time_cuda
from . import parallel
from .config import SDPA_VARIANTS, SpeedConfig
from .models import architecture, hf_config, load_model, prompt_ids
from .probe import AttentionProbe
from .results import PROVENANCE, key, merge_rows, new_row, read_csv, write_csv
from .runs import BUILD_S, Run, plan_runs, predict_run_s

_UNAVAILABLE = ("No available kernel", "No viable backend")


class _OutOfTime(Exception):
    """The run's first forward showed it would end past the time budget."""


def csv_path(cfg: SpeedConfig, prov: dict) -> Path:
    tp = f"-tp{cfg.tensor_parallel}" if cfg.tensor_parallel > 1 else ""
    return Path(cfg.out_dir) / f"{gpu_slug(prov['gpu'])}{tp}.csv"


def pending_runs(cfg: SpeedConfig, existing: list[dict]) -> list[Run]:
    """The config's runs in order, without those ``existing`` holds when ``skip_done`` (failed ones only
    with ``retry_failed`` false)."""
    runs = plan_runs(cfg)
    if not cfg.skip_done:
        return runs
    done = {key(r) for r in existing if r["status"] in ("ok", "unavailable")
            or (r["status"] == "failed" and not cfg.retry_failed)}
    return [r for r in runs if r.key not in done]


def run_sweep(cfg: SpeedConfig, prov: dict, on_write=None) -> tuple[list[dict], int]:
    """Measure every pending run; returns (this command's rows, runs not started for the time budget).

    After each run the CSV (and, through ``on_write(all_rows)``, anything derived from it) is rewritten (by rank 0
    under tensor parallelism; every rank returns the same rows).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    path = csv_path(cfg, prov)
    existing = read_csv(path) if (cfg.merge or cfg.skip_done) and path.exists() else []
    runs = pending_runs(cfg, existing)
    device = torch.device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    rows: list[dict] = []
    not_started = 0
    state = _ModelState()
    archs: dict = {}  # model -> its sizes from the config alone (the budget's prediction, before building it)
    bar = tqdm(total=len(runs), desc="TTFT", unit="run", disable=not cfg.progress or parallel.rank() > 0,
               dynamic_ncols=True)
    try:
        for run in runs:
            bar.set_postfix_str(f"{run.model} {run.protocol} N={run.seq_len} {run.variant}", refresh=True)
            deadline = None if cfg.time_budget_s is None else start + cfg.time_budget_s
            try:
                if deadline is not None and on_cuda(device):  # predicted for the H200 (elsewhere only the check
                    build = 0.0 if run.model == state.name else BUILD_S  # on the measured first forward applies)
                    late = time.perf_counter() + build + predict_run_s(cfg, _arch(archs, cfg, run.model), run)
                    if parallel.agree_any(late > deadline):
                        raise _OutOfTime
                state.load(cfg, run.model, device, dtype)
                row = measure(cfg, run, state, device, prov, deadline)
            except _OutOfTime:
                not_started += 1
                bar.update(1)
                continue
            except Exception as exc:  # noqa: BLE001  (a model that cannot be built: its runs fail, the rest go on)
                row = _failed_row(cfg, run, prov, f"model: {describe(exc)}")
            rows.append(row)
            all_rows = merge_rows(existing, rows) if cfg.merge else list(rows)
            if parallel.rank() == 0:
                write_csv(all_rows, path)
                if on_write is not None:
                    on_write(all_rows)
            bar.update(1)
    finally:
        bar.close()
        state.free()
    return rows, not_started


def _arch(archs: dict, cfg: SpeedConfig, name: str):
    if name not in archs:
        archs[name] = architecture(hf_config(cfg.models[name]))
    return archs[name]


class _ModelState:
    """The one model in memory, its config, sizes and prompts (rebuilt when the run's model changes)."""

    def __init__(self):
        self.name = self.model = self.cfg = self.arch = None
        self.prompts: dict[int, torch.Tensor] = {}
        self.error: str | None = None

    def load(self, cfg: SpeedConfig, name: str, device, dtype) -> None:
        if name == self.name:
            if self.error:
                raise RuntimeError(self.error)
            return
        self.free()
        self.name = name
        try:
            self.model, self.cfg = load_model(cfg.models[name], device, dtype, tensor_parallel=cfg.tensor_parallel,
                                              weights_dir=cfg.tp_weights_dir, name=name)
        except Exception as exc:
            self.error = describe(exc)
            raise
        self.arch = architecture(self.cfg)

    def ids(self, cfg: SpeedConfig, seq_len: int, device) -> torch.Tensor:
        if seq_len not in self.prompts:
            self.prompts[seq_len] = prompt_ids(cfg.models[self.name], self.cfg, seq_len, cfg.seed, device)
        return self.prompts[seq_len]

    def free(self) -> None:
        self.name = self.model = self.cfg = self.arch = self.error = None
        self.prompts = {}
        _free()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _base_row(cfg: SpeedConfig, run: Run, prov: dict, arch=None) -> dict:
    spec = cfg.models[run.model]
    row = new_row(model=run.model, regime=spec.regime, protocol=run.protocol, seq_len=run.seq_len,
                  variant=run.variant, batch=1, dtype=cfg.dtype, **{k: str(prov.get(k) or "") for k in PROVENANCE})
    if arch is not None:
        row.update(layers=arch.layers, q_heads=arch.q_heads, kv_heads=arch.kv_heads, head_dim=arch.head_dim)
    return row


def _failed_row(cfg: SpeedConfig, run: Run, prov: dict, error: str) -> dict:
    row = _base_row(cfg, run, prov)
    row.update(status="failed", error=error)
    return row


def measure(cfg: SpeedConfig, run: Run, state: _ModelState, device, prov: dict, deadline: float | None) -> dict:
    """One run (module docstring): a row with status ok, failed or unavailable. Raises _OutOfTime when the first
    forward shows the run would end past ``deadline``."""
    model, cuda = state.model, on_cuda(device)
    row = _base_row(cfg, run, prov, state.arch)
    collector, context = None, contextlib.nullcontext
    try:
        if run.variant in SDPA_VARIANTS:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            pbs.hf.disable(model)
            backend = getattr(SDPBackend, SDPA_VARIANTS[run.variant])
            context = lambda: sdpa_kernel(backend)
            row.update(method="full", kwargs="sdpa", target_density=1.0)
        else:
            method, kwargs = cfg.method_kwargs(run.variant, run.seq_len, row["regime"])
            config = make_config(get_method(method).config_cls, kwargs)
            collector = pbs.hf.enable(model, method, backend=cfg.backend, short_seq_policy=cfg.short_seq_policy,
                                      config=config)
            row.update(method=method, kwargs=json.dumps(kwargs, sort_keys=True),
                       target_density=kwargs.get("budget", float("nan")))
        ids = state.ids(cfg, run.seq_len, device)
        _measure_into(row, cfg, run, model, ids, context, collector, cuda, deadline)
    except _OutOfTime:
        raise
    except Exception as exc:  # noqa: BLE001  (recorded, the sweep goes on)
        text = describe(exc)
        row["status"] = "unavailable" if run.variant in SDPA_VARIANTS and any(s in text for s in _UNAVAILABLE) \
            else "failed"
        row["error"] = text
    finally:
        _free()
    return row


def _measure_into(row, cfg, run, model, ids, context, collector, cuda: bool, deadline) -> None:
    with AttentionProbe(model, cuda) as probe:
        def forward():
            probe.new_call()
            with context(), torch.no_grad():
                if run.protocol == "forward":
                    model(input_ids=ids, logits_to_keep=1, use_cache=True)
                else:
                    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)

        before = torch.cuda.memory_allocated() if cuda else 0
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        forward()
        if cuda:
            torch.cuda.synchronize()
        # under tensor parallelism every decision below uses values agreed over the ranks (the same forwards run)
        first = parallel.agree_max(time.perf_counter() - t0)
        if cuda:
            peak = parallel.agree_max(torch.cuda.max_memory_allocated())
            row.update(peak_mem_gib=peak / 2**30, peak_extra_gib=(peak - before) / 2**30)
        warm, spent = 1, first
        while warm < cfg.warmup and spent < cfg.max_warmup_s:
            t0 = time.perf_counter()
            forward()
            if cuda:
                torch.cuda.synchronize()
            last = parallel.agree_max(time.perf_counter() - t0)
            warm, spent, first = warm + 1, spent + last, last
        reps = min(cfg.max_reps, max(cfg.reps, int(cfg.seconds_per_run / max(first, 1e-9))))
        if deadline is not None and parallel.agree_any(time.perf_counter() + reps * first > deadline):
            raise _OutOfTime
        if collector is not None:
            collector.reset()
        timing = time_cuda(forward, warmup=0, reps=reps, device="cuda" if cuda else "cpu", flush_l2=cfg.flush_l2)
        per_call = probe.per_call(last=reps)
        row["planner"] = "; ".join(sorted(probe.planners))
    attention = sorted(c["attention_ms"] for c in per_call)
    plan = sorted(c["plan_ms"] for c in per_call)
    # the slowest rank is the latency (identity on one process)
    att_ms, plan_ms = parallel.agree_max(_median(attention)), parallel.agree_max(_median(plan))
    timing = {k: parallel.agree_max(timing[k]) for k in ("median_ms", "p10_ms", "p90_ms")} | {"reps": timing["reps"]}
    row.update(status="ok", ttft_ms=timing["median_ms"], p10_ms=timing["p10_ms"], p90_ms=timing["p90_ms"],
               reps=timing["reps"], warmup=warm, attention_ms=att_ms, plan_ms=plan_ms, kernel_ms=att_ms - plan_ms,
               rest_ms=timing["median_ms"] - att_ms, attention_pct=100.0 * att_ms / timing["median_ms"])
    if collector is None:
        row.update(density=1.0, density_min=1.0, density_max=1.0)
    else:
        summary = collector.summary()
        layers = [d for d in summary["per_layer"].values() if d is not None]
        mean = summary["mean_density"] if summary["mean_density"] is not None else math.nan
        row.update(density=parallel.agree_mean(mean),  # each rank's collector holds its own heads
                   density_min=parallel.agree_min(min(layers) if layers else math.nan),
                   density_max=parallel.agree_max(max(layers) if layers else math.nan),
                   dense_fallbacks="; ".join(f"{n}× {why}" for why, n in summary["dense_fallbacks"].items()))


def _median(values: list[float]) -> float:
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
