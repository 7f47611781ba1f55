"""Evaluate models × methods × tasks; results in results/runs/ and wandb.

    python -m experiments.eval                                   # the proxy model, PBS, the RULER-style suite
    python -m experiments.eval -m method=pbs,xattention,meanpool method.threshold=0.8,0.9,0.95 method.block_size=64,128
    python -m experiments.eval -m experiment=table1_llama         # the paper's Table 1 run (GPU, real data)

Settings: pbs.eval.config.EvalConfig, built once here (validated, the method's config object included) and passed
down to pbs.hf.enable unchanged.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments._schema import register_schemas
from pbs.eval.config import EvalConfig
from pbs.eval.job import run_job

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    settings: EvalConfig = OmegaConf.to_object(cfg)
    multirun = hc.mode.name == "MULTIRUN"
    group = hc.sweep.dir if multirun else hc.run.dir
    command = " ".join(["python -m experiments.eval", *sys.argv[1:]])
    return run_job(settings, command=command, group=str(group), job_num=hc.job.num if multirun else 0)


if __name__ == "__main__":
    main()
