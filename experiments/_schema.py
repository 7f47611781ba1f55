"""Hydra schemas: every app's settings are a dataclass, registered here; its YAML extends it.

- ``conf/eval.yaml`` extends ``schema/eval``: :class:`pbs.eval.config.EvalConfig`, whose ``model`` is a
  :class:`~pbs.eval.config.ModelConfig` (``conf/model/<name>.yaml``), ``task`` a
  :class:`~pbs.eval.config.LongBenchTask` or :class:`~pbs.eval.config.RulerTask` (``conf/task/<name>.yaml``
  extends ``schema/task/longbench`` or ``schema/task/ruler``) and ``method`` the method's config dataclass
  (``conf/method/<name>.yaml`` extends ``schema/method/<name>``; ``pbs/config.py``);
- ``conf/bench_kernels.yaml`` extends ``schema/bench_kernels``: :class:`benchmarks.config.BenchConfig`;
- ``conf/speed.yaml`` extends ``schema/speed``: :class:`benchmarks.speed.config.SpeedConfig`;
- ``conf/train_proxy.yaml`` extends ``schema/train_proxy``: :class:`pbs.train.config.TrainProxyConfig`.

The dataclass holds every field, default and check; the YAML only picks the schema (and Hydra's own settings), so
a typo or a wrong type fails when the config is composed. A new app: write
its settings as a dataclass next to its code, add it to :data:`APPS`, start its YAML with
``defaults: [/schema/<app>@_here_, _self_]``, call :func:`register_schemas` before ``@hydra.main`` and build the
object with :func:`to_settings` (``OmegaConf.to_object`` that also refuses ``+key=value`` overrides the dataclass
lacks); ``tests/test_app_configs.py`` then checks that the YAML composes into the dataclass.
"""

import dataclasses
import difflib

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmarks.config import BenchConfig
from benchmarks.speed.config import SpeedConfig
from pbs.eval.config import EvalConfig, LongBenchTask, RulerTask
from pbs.methods import available_methods, get_method
from pbs.train.config import TrainProxyConfig

APPS: dict[str, type] = {"eval": EvalConfig, "bench_kernels": BenchConfig, "train_proxy": TrainProxyConfig,
                         "speed": SpeedConfig}
TASKS: dict[str, type] = {"longbench": LongBenchTask, "ruler": RulerTask}


def register_schemas() -> None:
    cs = ConfigStore.instance()
    for name in available_methods():
        cs.store(group="schema/method", name=name, node=get_method(name).config_cls)
    for name, node in TASKS.items():
        cs.store(group="schema/task", name=name, node=node)
    for name, node in APPS.items():
        cs.store(group="schema", name=name, node=node)


def to_settings(cfg: DictConfig):
    """The app's settings object from its composed config (``hydra`` node ignored).

    Hydra's ``+key=value`` adds keys even to a structured config, and ``OmegaConf.to_object`` then drops them
    silently (``+method.treshold=0.9`` would run with the default threshold): such keys are a ValueError naming the
    key, its value and the dataclass's fields. The dataclasses' own checks raise ValueErrors naming field and value.
    """
    unknown = [_unknown_message(*u) for u in _unknown_keys(cfg, "")]
    if unknown:
        raise ValueError("; ".join(unknown))
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    return OmegaConf.to_object(cfg)


def _unknown_keys(node: DictConfig, path: str):
    cls = OmegaConf.get_type(node)
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
    for key in node:
        if not path and key == "hydra":
            continue
        full = f"{path}.{key}" if path else str(key)
        if names is not None and key not in names:
            yield full, node._get_node(key)._value(), cls, sorted(names)
        elif names is not None:
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
                yield from _unknown_keys(child, full)


def _unknown_message(key: str, value, cls: type, names: list[str]) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], names, n=1)
    hint = f"; did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?" if close else ""
    return (f"unknown setting {key}={value!r}: {cls.__name__} has no such field{hint} "
            f"(its fields: {', '.join(names)})")
