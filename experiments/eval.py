"""Evaluate models × methods × tasks; results in outputs/results/ (``results_dir``) and wandb.

    python -m experiments.eval task.lengths=[2048] task.samples=2        # the proxy model, PBS, the RULER-style suite
    python -m experiments.eval -m method=pbs,xattention,meanpool method.threshold=0.8,0.9,0.95 method.block_size=64,128
    python -m experiments.eval -m experiment=table1_llama task.data=/data/longbench   # the paper's Table 1 (GPU)

The defaults (``conf/eval.yaml``: the proxy model, PBS, the RULER-style suite at 4K-32K tokens × 20 samples per
task) take hours on a CPU; ``make run`` is the short CPU run (2K tokens, 2 samples). Every job's settings are checked
before any job starts (exit status 2 if one is invalid); at the end one screen says what ran, failed or was
skipped, with the results table, and the exit status is 1 if any job failed. A finished run (same config, code,
model and data) is skipped; ``rerun=true`` runs it again. ``verbose=true`` shows every library's logs.

Settings: pbs.eval.config.EvalConfig, built once here (validated, the method's config object included) and passed
down to pbs.hf.enable unchanged. The summary and the checks: experiments/_sweep.py.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments._schema import register_schemas, to_settings
from experiments._sweep import OUTCOME_FILE
from pbs.eval.config import EvalConfig
from pbs.eval.job import run_job
from pbs.eval.results import write_json

register_schemas()


def sweep_name(settings: EvalConfig, experiment: str | None) -> str:
    """The sweep's name (wandb group): ``name``, else the experiment's, else ``<model>-<task>``."""
    return settings.name or experiment or f"{settings.model.name}-{settings.task.name}"


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    settings: EvalConfig = to_settings(cfg)
    multirun = hc.mode.name == "MULTIRUN"
    command = " ".join(["python -m experiments.eval", *sys.argv[1:]])
    outcome = run_job(settings, command=command, group=sweep_name(settings, hc.runtime.choices.get("experiment")),
                      job_num=hc.job.num if multirun else 0)
    outcome = {k: v for k, v in outcome.items() if k != "metrics"}
    outcome.update(results_dir=settings.results_dir, overrides=list(hc.overrides.task))
    write_json(Path(hc.runtime.output_dir) / OUTCOME_FILE, outcome)
    return outcome


if __name__ == "__main__":
    main()
