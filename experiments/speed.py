r"""End-to-end prefill speed (Hydra app): time to first token per model, length, SDPA backend and method.

    python -m experiments.speed                                   # the whole sweep (conf/speed.yaml), CUDA
    python -m experiments.speed dry_run=true                      # the run order with predicted H200 seconds
    python -m experiments.speed only_models=[llama3.1-8b-instruct] 'only_lengths=[131072]' merge=true

On the H200 device machine (no hydra there: carry the wheels from scripts/fetch_gpu_wheels.sh in .whl/), one command,
repeated until its summary says the sweep is complete (it stops starting runs at time_budget_s; the CSV lives in $OUT
and is rewritten after every run, merged, finished runs skipped; copy the returned CSV into results/speed/ between
commands). results/speed/README.md has the first command (with the GPU checks) and this one:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site || exit; export PBS_GIT_COMMIT=<commit> PYTHONUNBUFFERED=1; \
    cp results/speed/nvidia-h200.csv $OUT/ 2>/dev/null; \
    python3 -m experiments.speed out_dir=$OUT merge=true skip_done=true time_budget_s=480 progress=false

Settings: benchmarks.speed.config.SpeedConfig; the work is in benchmarks/speed/. Writes <out_dir>/<gpu-slug>.csv and
.md after every run, prints a one-screen summary, exits 1 if any run failed (a failure is recorded and the sweep goes
on). The plots and the Table 7 layout are built by `make reproduce-tables` (scripts/make_tables.py).
"""

from __future__ import annotations

import shlex
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmarks.speed import parallel
from benchmarks.speed.config import SpeedConfig
from benchmarks.speed.models import architecture, hf_config
from benchmarks.speed.report import speed_markdown
from benchmarks.speed.results import summary
from benchmarks.speed.runs import schedule
from benchmarks.speed.sweep import csv_path, run_sweep
from experiments._schema import register_schemas
from pbs.provenance import provenance

register_schemas()


def format_schedule(settings: SpeedConfig) -> str:
    """The run order with predicted H200 seconds (benchmarks.speed.runs), and how far 10 and 20 minutes go."""
    archs = {name: architecture(hf_config(spec)) for name, spec in settings.models.items()}
    lines = [f"{'#':>4}  {'model':<24}{'protocol':<10}{'N':>7}  {'variant':<19}{'pred. s':>8}{'cum. min':>9}"]
    marks = {}
    for i, (run, seconds, total) in enumerate(schedule(settings, archs), 1):
        lines.append(f"{i:>4}  {run.model:<24}{run.protocol:<10}{run.seq_len:>7}  {run.variant:<19}{seconds:>8.0f}"
                     f"{total / 60:>9.1f}")
        for minutes in (10, 20):
            if total <= minutes * 60:
                marks[minutes] = i
    lines += ["", "predicted (a FLOP model calibrated on Llama-3.1-8B on the H200; builds and compilation included): "
              + ", ".join(f"runs 1-{marks.get(m, 0)} fit in {m} minutes" for m in (10, 20))]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="speed")
def main(cfg: DictConfig) -> None:
    settings: SpeedConfig = OmegaConf.to_object(cfg)
    if settings.dry_run:
        print(format_schedule(settings))
        return
    launcher = "python -m" if settings.tensor_parallel == 1 else \
        f"torchrun --nproc_per_node {settings.tensor_parallel} -m"
    command = " ".join([f"{launcher} experiments.speed", *map(shlex.quote, HydraConfig.get().overrides.task)])
    settings.device = str(parallel.init(settings.tensor_parallel, settings.device))
    try:
        prov = provenance(command)
        path = csv_path(settings, prov)

        def write_markdown(all_rows: list[dict]) -> None:
            path.with_suffix(".md").write_text(speed_markdown(all_rows))

        rows, not_started = run_sweep(settings, prov, on_write=write_markdown)
        if parallel.rank() == 0:
            print(summary(rows, not_started))
            if rows or path.exists():
                print(f"wrote {path} and {path.with_suffix('.md')}")
    finally:
        parallel.finish()
    if any(r["status"] == "failed" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
