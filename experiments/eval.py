"""Evaluate models × methods × tasks; results in results/runs/ and wandb.

    python -m experiments.eval                                   # tiny model, PBS, the shipped fixtures, CPU
    python -m experiments.eval -m method=pbs,xattention,meanpool method.threshold=0.8,0.9,0.95 method.block_size=64,128
    python -m experiments.eval -m experiment=table1_llama         # the paper's Table 1 run (GPU, real data)
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments._schema import register_schemas
from pbs.eval.pipeline import run_job

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    method = hc.runtime.choices["method"]
    OmegaConf.to_object(cfg.method)  # validates the method's fields through its dataclass (__post_init__)
    plain = OmegaConf.to_container(cfg, resolve=True)
    group = hc.sweep.dir if hc.mode.name == "MULTIRUN" else hc.run.dir
    command = " ".join(["python -m experiments.eval", *sys.argv[1:]])
    job_num = hc.job.num if hc.mode.name == "MULTIRUN" else 0
    return run_job(plain, method, command=command, group=str(group), job_num=job_num)


if __name__ == "__main__":
    main()
