"""Every Hydra config composes and maps onto the method's dataclass."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import pbs
from experiments._schema import register_schemas
from pbs.methods import get_method

CONF = Path(__file__).resolve().parents[2] / "conf"
register_schemas()


@pytest.mark.parametrize("method", pbs.available_methods())
def test_method_config_is_the_dataclass(method):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"method={method}"])
    obj = OmegaConf.to_object(cfg.method)
    assert obj == get_method(method).config_cls()  # defaults come from the dataclass, nothing duplicated


def test_unknown_or_invalid_method_fields_fail_at_composition():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(Exception, match="blocksize"):
            compose(config_name="eval", overrides=["method=pbs", "method.blocksize=64"])
        cfg = compose(config_name="eval", overrides=["method=pbs", "method.block_size=48"])
    with pytest.raises(ValueError, match="block_size"):
        OmegaConf.to_object(cfg.method)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_experiment_presets_compose(experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.task.tasks and cfg.model.name
    assert cfg.hydra.sweeper.params  # each preset owns its sweep


@pytest.mark.parametrize("launcher,target", [("local_gpus", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


def test_method_kwargs_from_strings_keep_none_as_a_permute_value():
    from pbs.eval.model_args import split_method_kwargs

    method_kwargs, other = split_method_kwargs("oracle", {"permute": "none", "threshold": "0.8", "max_length": "9"})
    assert method_kwargs == {"permute": "none", "threshold": 0.8}
    assert other == {"max_length": "9"}
    assert split_method_kwargs("flexprefill", {"max_budget": "null"})[0] == {"max_budget": None}
