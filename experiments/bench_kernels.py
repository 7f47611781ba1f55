"""Kernel benchmark (Hydra app): dense backends, ours vs FlexAttention on shared block masks, methods end to end.

    python -m experiments.bench_kernels                                    # conf/bench_kernels.yaml on CUDA
    python -m experiments.bench_kernels 'seq_lens=[65536,131072]' merge=true

The work is in pbs/bench.py; this prints a compact table and writes <out_dir>/<gpu-slug>.csv and .md.
"""

from __future__ import annotations

import shlex

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pbs.bench import format_table, provenance, run_benchmark, write_results


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench_kernels")
def main(cfg: DictConfig) -> None:
    plain = OmegaConf.to_container(cfg, resolve=True)
    overrides = HydraConfig.get().overrides.task
    command = " ".join(["python -m experiments.bench_kernels", *map(shlex.quote, overrides)])
    rows = run_benchmark(plain)
    print(format_table(rows))
    for path in write_results(rows, provenance(command), plain["out_dir"], merge=plain["merge"], cfg=plain):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
