"""Every Hydra app's YAML only extends its dataclass (experiments/_schema.py): composing it gives the dataclass's
defaults, and a misspelt key or a wrong type fails at composition."""

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import pbs
from experiments._schema import APPS, register_schemas, to_settings
from pbs.eval.config import ModelConfig, RulerTask

CONF = Path(__file__).resolve().parents[1] / "conf"
register_schemas()


# the config groups an app's YAML picks by default (the rest comes from its dataclass)
GROUP_DEFAULTS = {"eval": {"method": pbs.PBSConfig(), "task": RulerTask(),
                           "model": ModelConfig(name="pbs-proxy-llama-v2", path="models/pbs-proxy-llama-v2",
                                                max_length=32769, chat_template=False)}}


@pytest.mark.parametrize("app", sorted(APPS))
def test_yaml_composes_into_the_dataclass_defaults(app):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=app)
    settings = OmegaConf.to_object(cfg)
    assert type(settings) is APPS[app] and settings == APPS[app](**GROUP_DEFAULTS.get(app, {}))


@pytest.mark.parametrize("group", ["model", "task"])
def test_every_eval_group_option_composes(group):
    """conf/model/*.yaml and conf/task/*.yaml all fit their dataclasses (conf/method/*: tests/eval/test_configs)."""
    names = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in names:
            settings = OmegaConf.to_object(compose(config_name="eval", overrides=[f"{group}={name}"]))
            part = getattr(settings, group)
            assert dataclasses.is_dataclass(part) and part.name, name


@pytest.mark.parametrize("app,override", [("bench_kernels", "reps=many"), ("bench_kernels", "rep=3"),
                                          ("speed", "reps=many"), ("speed", "warmups=1"),
                                          ("speed", "models.qwen3-8b.regim=fixed"),
                                          ("train_proxy", "train.lr=fast"), ("train_proxy", "model.layers=2"),
                                          ("eval", "limits=2"), ("eval", "task.sample=3"), ("eval", "task.samples=many"),
                                          ("eval", "model.max_len=9"), ("eval", "task.v2.decode=greedy")])
def test_typos_and_wrong_types_fail_at_composition(app, override):
    with (initialize_config_dir(config_dir=str(CONF), version_base="1.3"),
          pytest.raises(Exception, match=override.split("=")[0].split(".")[-1])):
        compose(config_name=app, overrides=[override])


def test_train_proxy_checks_fields():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_proxy", overrides=["data.workers=-1"])
        with pytest.raises(ValueError, match="workers"):
            OmegaConf.to_object(cfg)
        cfg = compose(config_name="train_proxy", overrides=["model.max_position_embeddings=1024"])
        with pytest.raises(ValueError, match="max_position_embeddings"):
            OmegaConf.to_object(cfg)


def test_eval_checks_fields():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(ValueError, match="samples"):
            OmegaConf.to_object(compose(config_name="eval", overrides=["task.samples=0"]))
        with pytest.raises(ValueError, match="decoding"):
            OmegaConf.to_object(compose(config_name="eval", overrides=["task=longbench_v2", "task.v2.decoding=beam"]))


@pytest.mark.parametrize("app,override,message", [
    ("eval", "+method.treshold=0.9", (r"unknown setting method\.treshold=0\.9: PBSConfig has no such field; did you "
                                     r"mean method\.threshold\?")),
    ("eval", "+task.data=/nonexistent", r"unknown setting task\.data='/nonexistent': RulerTask has no such field"),
    ("eval", "+limits=3", r"unknown setting limits=3: EvalConfig has no such field; did you mean limit\?"),
    ("bench_kernels", "+rep=3", r"unknown setting rep=3: BenchConfig"),
])
def test_added_keys_the_dataclass_lacks_are_refused(app, override, message):
    """Hydra's +key=value reaches a structured config and OmegaConf.to_object would drop it silently."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=app, overrides=[override])
    with pytest.raises(ValueError, match=message):
        to_settings(cfg)


def test_ruler_lengths_take_one_length_or_a_list():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        one = to_settings(compose(config_name="eval", overrides=["task.lengths=1024"]))
        two = to_settings(compose(config_name="eval", overrides=["task.lengths=[1024,2048]"]))
        with pytest.raises(ValueError, match=r"lengths must be token counts.*lengths='abc'"):
            to_settings(compose(config_name="eval", overrides=["task.lengths=abc"]))
    assert one.task.lengths == [1024] and two.task.lengths == [1024, 2048]


def test_train_proxy_v2_is_the_step_11_model():
    """The Step 11 preset: a GQA Llama with head_dim 64 (our kernels serve it), <= 16 M parameters so its bf16
    weights (<= 32 MB) travel to the GPU machine with the repository (64 MiB in all), trained to 32K over a schedule
    longer than one GPU command."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="train_proxy_v2"))
    m = cfg.model
    assert m.head_dim == 64 and m.num_attention_heads % m.num_key_value_heads == 0 < m.num_key_value_heads < \
        m.num_attention_heads
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=cfg.tokenizer.vocab_size + 16, hidden_size=m.hidden_size, num_hidden_layers=m.num_hidden_layers,
            num_attention_heads=m.num_attention_heads, num_key_value_heads=m.num_key_value_heads,
            head_dim=m.head_dim, intermediate_size=m.intermediate_size, tie_word_embeddings=m.tie_word_embeddings))
    params = sum(p.numel() for p in model.parameters())
    assert 12e6 < params <= 16e6 and 2 * params <= 32e6
    assert cfg.curriculum[-1].length == 32768 and cfg.data.lm_only_below > cfg.curriculum[0].length
    assert cfg.train.stop_after_minutes < 10 < cfg.train.max_minutes and cfg.data.heldout_corpus
