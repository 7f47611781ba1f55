"""The eval app's Hydra callback: every job's settings checked before any job starts, and a summary with an exit
status at the end.

- ``on_multirun_start`` / ``on_run_start``: compose every job of the sweep (``hydra.sweeper.params`` and the
  command line, as the basic sweeper expands them), build its settings and check its paths
  (:func:`pbs.eval.job.check_settings`); any invalid job -> each one's overrides and reason, exit status 2, and no
  job runs.
- each job writes its outcome to ``<job dir>/pbs_job.json`` (``experiments/eval.py``);
- ``on_multirun_end`` / ``on_run_end``: one screen -- ok / failed / skipped counts, each failure's run id and
  one-line reason, jobs that left no outcome (killed), the results table of the sweep's runs -- and exit status 1 if
  any job failed or left no outcome.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

OUTCOME_FILE = "pbs_job.json"
EXIT_FAILED = 1
EXIT_INVALID = 2


class EvalSweep(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check_jobs(config, [list(config.hydra.overrides.task)])

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        for old in sweep_dir.glob(f"**/{OUTCOME_FILE}"):  # a reused sweep dir: report this invocation only
            old.unlink()
        _check_jobs(config, _expand_jobs(config))

    def on_run_end(self, config: DictConfig, job_return=None, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        if job_return is not None and job_return.status == JobStatus.COMPLETED:  # else Hydra reports the exception
            _finish(config, [job_return.return_value], expected=1)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()) if sweep_dir.is_dir() else []
        outcomes = []
        for job in jobs:
            path = job / OUTCOME_FILE
            outcomes.append(json.loads(path.read_text()) if path.exists() else
                            {"status": "lost", "run_id": None, "label": _job_overrides(job),
                             "reason": f"no outcome recorded in {job}: the job was killed or crashed"})
        _finish(config, outcomes, expected=len(jobs))


def _expand_jobs(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, as the basic sweeper expands them (its params, then the command line's)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _check_jobs(config: DictConfig, jobs: list[list[str]]) -> None:
    from hydra import compose

    from experiments._schema import to_settings
    from pbs.eval.job import ModelUnavailableError, check_settings

    invalid = []
    for overrides in jobs:
        try:
            settings = to_settings(compose(config_name=config.hydra.job.config_name, overrides=overrides))
            check_settings(settings)
        except (ValueError, TypeError, ModelUnavailableError) as exc:
            invalid.append((overrides, str(exc).strip().splitlines()[0]))
        except Exception as exc:  # noqa: BLE001  (a composition error: Hydra's message)
            invalid.append((overrides, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"))
    if invalid:
        print(f"\n{len(invalid)} of {len(jobs)} jobs have invalid settings; nothing was run:", file=sys.stderr)
        for overrides, reason in invalid:
            print(f"  [{' '.join(overrides) or 'defaults'}] {reason}", file=sys.stderr)
        sys.exit(EXIT_INVALID)


def _job_overrides(job_dir: Path) -> str:
    try:
        return " ".join(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    except OSError:
        return job_dir.name


def _finish(config: DictConfig, outcomes: list[dict], expected: int) -> None:
    from pbs.eval.report import format_table, report_rows

    counts = {s: sum(o["status"] == s for o in outcomes) for s in ("ok", "failed", "skipped", "lost")}
    title = config.get("name") or OmegaConf.select(config, "hydra.runtime.choices.experiment") or \
        f"{config.model.name}-{config.task.name}"
    head = f"{len(outcomes)} job{'s' if len(outcomes) != 1 else ''}: {counts['ok']} ok, {counts['failed']} failed, " \
           f"{counts['skipped']} skipped" + (f", {counts['lost']} left no outcome" if counts["lost"] else "")
    lines = ["", f"== {title}: {head}"]
    for o in outcomes:
        if o["status"] != "ok":
            lines.append(f"  {o['status'].upper():<8} {o.get('run_id') or '-':<12}  {o['label']}: {o['reason']}")
    results_dirs = sorted({o["results_dir"] for o in outcomes if o.get("results_dir") and o.get("run_id")})
    for results_dir in results_dirs:
        ids = {o["run_id"] for o in outcomes if o.get("results_dir") == results_dir and o.get("run_id")}
        if (Path(results_dir) / "index.csv").exists():
            lines += ["", f"results: {results_dir} (python -m pbs.eval.report {results_dir})",
                      format_table(report_rows(results_dir, ids, latest_only=False))]
    print("\n".join(lines), flush=True)
    if counts["failed"] or counts["lost"] or len(outcomes) < expected:
        sys.exit(EXIT_FAILED)
