"""The evaluation app's settings (``python -m experiments.eval``): dataclasses registered as Hydra schemas.

``conf/eval.yaml`` extends :class:`EvalConfig`; ``conf/model/<name>.yaml`` fills :class:`ModelConfig`;
``conf/task/<name>.yaml`` extends :class:`LongBenchTask` or :class:`RulerTask`; ``conf/method/<name>.yaml`` the
method's config dataclass (``pbs/config.py``). ``OmegaConf.to_object`` builds the whole tree once, validated, and
:func:`pbs.eval.job.run_job` passes the method's config object down to ``pbs.hf.enable`` unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..methods import available_methods, get_method
from .longbench.protocol import V2Protocol
from .ruler.settings import RulerSettings


@dataclass
class ModelConfig:
    """A model to evaluate and its LongBench prompt budgets (``model2maxlen``)."""

    name: str
    path: str | None = None  # a local folder or hub id; null: the embedded tiny model (pbs/eval/tiny_model.py)
    max_length: int | None = None  # LongBench v1's prompt budget in tokens (middle truncation; new tokens on top)
    max_length_v2: int | None = None  # LongBench v2's; null: max_length
    chat_template: bool = True  # LongBench's rule: template every task except trec/triviaqa/samsum/lsht/lcc/repobench-p
    chat_template_kwargs: dict[str, Any] | None = None  # e.g. Qwen3's {enable_thinking: false}
    rope_scaling: dict[str, Any] | None = None  # merged into the model's RoPE parameters (e.g. Qwen3's YaRN)


@dataclass
class LongBenchTask:
    """LongBench v1 / LongBench-E / v2 tasks (``pbs_longbench*``, or any lm-eval task name)."""

    name: str = "longbench"
    data: str = "hub"  # hub | fixtures | /path/to/local/copy (v2 also hub:<owner>/<name>)
    tasks: list[str] = field(default_factory=lambda: ["pbs_longbench"])
    v2: V2Protocol = field(default_factory=V2Protocol)


@dataclass
class RulerTask(RulerSettings):
    """The RULER-style suite (``pbs_ruler*``), generated offline; its settings and their defaults are
    :class:`pbs.eval.ruler.settings.RulerSettings`'s. ``lengths`` takes a list or one length (``task.lengths=1024``
    is ``[1024]``); RulerSettings checks it."""

    lengths: Any = field(default_factory=lambda: list(RulerSettings().lengths))
    name: str = "ruler"
    tasks: list[str] = field(default_factory=lambda: ["pbs_ruler"])


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "pbs"
    dir: str | None = None  # null: results_dir


@dataclass
class EvalConfig:
    """One evaluation job: a model, a method (its config dataclass) and a task."""

    model: ModelConfig
    method: Any  # the method's config dataclass, e.g. pbs.PBSConfig
    task: Any  # LongBenchTask | RulerTask
    backend: str = "auto"  # auto (triton on CUDA, torch on CPU) | torch | triton | flex
    device: str = "auto"  # auto: GPU <job number> % <GPUs> if CUDA, else cpu
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    limit: float | None = None  # samples per task (null = all; < 1: a fraction)
    short_seq_policy: bool = False  # true: below the GPU's measured crossover run dense (speed runs)
    results_dir: str = "outputs/results"  # <results_dir>/runs/<run-id>/ and <results_dir>/index.csv
    rerun: bool = False  # true: run again even if <results_dir>/runs/<run-id> finished
    name: str | None = None  # the sweep's name (wandb group, summary title); null: the experiment's, else <model>-<task>
    verbose: bool = False  # true: every library's logs and progress bars (default: one bar per job, the results)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        method_name(self.method)  # raises for anything but a method's config
        if not isinstance(self.task, (LongBenchTask, RulerTask)):
            raise ValueError(f"task must be a LongBenchTask or a RulerTask, got task={self.task!r}")
        if self.wandb.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb.mode must be offline, online or disabled, got wandb.mode={self.wandb.mode!r}")

    @property
    def method_name(self) -> str:
        return method_name(self.method)

    def run_config(self) -> dict:
        """What defines a run (and its id): model, method, task, numerics."""
        out = {key: dataclasses.asdict(getattr(self, key)) for key in ("model", "method", "task")}
        out.update(backend=self.backend, device=self.device, dtype=self.dtype, limit=self.limit,
                   short_seq_policy=self.short_seq_policy, method_name=self.method_name)
        return out


def method_name(config) -> str:
    """The registered method whose config dataclass ``config`` is an instance of."""
    for name in available_methods():
        if type(config) is get_method(name).config_cls:
            return name
    raise ValueError(f"method must be a method's config dataclass (e.g. pbs.PBSConfig()), got method={config!r}")
