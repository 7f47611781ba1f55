"""Train the long-context proxy Llama (Hydra app over pbs.train.proxy.train; settings: TrainProxyConfig).

python -m experiments.train_proxy                                            # conf/train_proxy.yaml
python -m experiments.train_proxy train.max_minutes=8 run_dir=/tmp/proxy out_dir=$OUT/proxy
python -m experiments.train_proxy run_dir=/tmp/proxy resume=true
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments._schema import register_schemas, to_settings
from pbs.train.proxy import train

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_proxy")
def main(cfg: DictConfig) -> None:
    train(to_settings(cfg))


if __name__ == "__main__":
    main()
