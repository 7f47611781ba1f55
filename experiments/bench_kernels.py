"""Kernel benchmark (Hydra app): dense backends, ours vs FlexAttention on shared block masks, methods end to end.

    python -m experiments.bench_kernels                                    # conf/bench_kernels.yaml on CUDA
    python -m experiments.bench_kernels 'seq_lens=[65536,131072]' merge=true

Settings: benchmarks.config.BenchConfig; the work is in benchmarks/. Prints a compact table and writes
<out_dir>/<gpu-slug>.csv and .md.
"""

from __future__ import annotations

import shlex

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from benchmarks.config import BenchConfig
from benchmarks.report import format_table, write_results
from benchmarks.sections import run_benchmark
from experiments._schema import register_schemas, to_settings
from pbs.provenance import provenance

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench_kernels")
def main(cfg: DictConfig) -> None:
    settings: BenchConfig = to_settings(cfg)
    overrides = HydraConfig.get().overrides.task
    command = " ".join(["python -m experiments.bench_kernels", *map(shlex.quote, overrides)])
    rows = run_benchmark(settings)
    print(format_table(rows))
    for path in write_results(rows, provenance(command), settings.out_dir, merge=settings.merge, cfg=settings):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
