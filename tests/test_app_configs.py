"""Every Hydra app's YAML only extends its dataclass (experiments/_schema.py): composing it gives the dataclass's
defaults, and a misspelt key or a wrong type fails at composition."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments._schema import APPS, register_schemas

CONF = Path(__file__).resolve().parents[1] / "conf"
register_schemas()


@pytest.mark.parametrize("app", sorted(APPS))
def test_yaml_composes_into_the_dataclass_defaults(app):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=app)
    settings = OmegaConf.to_object(cfg)
    assert type(settings) is APPS[app] and settings == APPS[app]()


@pytest.mark.parametrize("app,override", [("bench_kernels", "reps=many"), ("bench_kernels", "rep=3"),
                                          ("train_proxy", "train.lr=fast"), ("train_proxy", "model.layers=2")])
def test_typos_and_wrong_types_fail_at_composition(app, override):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(Exception, match=override.split("=")[0].split(".")[-1]):
            compose(config_name=app, overrides=[override])


def test_train_proxy_checks_fields():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_proxy", overrides=["data.workers=-1"])
        with pytest.raises(ValueError, match="workers"):
            OmegaConf.to_object(cfg)
        cfg = compose(config_name="train_proxy", overrides=["model.max_position_embeddings=1024"])
        with pytest.raises(ValueError, match="max_position_embeddings"):
            OmegaConf.to_object(cfg)
