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
object with ``OmegaConf.to_object(cfg)``; ``tests/test_app_configs.py`` then checks that the YAML composes into
the dataclass.
"""

from hydra.core.config_store import ConfigStore

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
