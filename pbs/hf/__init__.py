"""HuggingFace transformers integration: every method as an ``attn_implementation``.

```python
import pbs.hf
pbs.hf.register()                                  # once per process; idempotent
model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="pbs_xattention")
# or, on a loaded model (validates kwargs, stores them in model.config.pbs, returns a StatsCollector):
stats = pbs.hf.enable(model, method="pbs", threshold=0.9)
stats = pbs.hf.enable(model, method="pbs", config=pbs.PBSConfig(threshold=0.9))   # the same, from a config
model.generate(...)
stats.summary()      # mean prefill density, per layer, paths taken
pbs.hf.disable(model)                              # back to sdpa
```

Works with transformers >= 4.56 (AttentionInterface + AttentionMaskInterface; tested on 5.17 and 5.24).
``import pbs`` does not import transformers; this module imports it only inside :func:`register` / :func:`enable`.

What the registered attention function does (queries after RoPE / q-k norm, keys and values after the cache
update, not repeated for GQA):

- prefill (q_len == kv_len > 1): ``pbs.plan`` + ``pbs.attend`` with the method's settings (what
  ``pbs.sparse_attention`` does), without a host synchronisation: the plan's per-head densities stay on the GPU
  until the collector is read, so a prefill forward's CPU side never waits for the GPU (on CUDA the fused planners
  do not synchronise either);
- decode (q_len == 1): dense attention of the one query over every cached key (never sparse);
- chunked prefill / continued prompt (1 < q_len < kv_len): the same with Nq < Nk (the queries are the last q_len
  positions; earlier context is kept);
- padding (left or right, from the 2-D attention mask): each batch row runs on its valid keys and valid queries
  only, as if it were alone; padded query rows get zeros (the row lengths are read on the host: this path
  synchronises);
- StaticCache (key/value buffers longer than the tokens seen so far): the mask function passes a 2-D mask of
  length ``q_offset + q_len`` (the valid length; transformers 4.x: ``cache_position[-1] + 1``), and the attention
  function slices key/value to it. With no mask at all, a ``cache_position`` kwarg (4.x) is used the same way.

Never built: an N x N mask. The registered mask function returns None when there is no padding and the cache
holds exactly kv_len valid tokens, else the 2-D (batch, valid_len) boolean padding mask.

Not supported (a ValueError says so): dropout > 0 (inference only), sliding-window / chunked / packed-sequence /
bidirectional masks, soft-capping, attention sinks, position biases, non-causal modules. Gradients do not flow
through the sparse prefill (``pbs.plan`` / ``pbs.attend`` run under ``torch.no_grad``); a warning says so once.

Settings: ``model.config.pbs = {"method", "backend", "kwargs", "short_seq_policy"}`` (written by :func:`enable`,
saved by ``save_pretrained``); when absent, or naming another method than the implementation, the method's
defaults from ``pbs.config`` are used.

Here: :func:`register`, :func:`enable`, :func:`disable`; the registered functions are in :mod:`pbs.hf.attention`,
the collector in :mod:`pbs.hf.stats`.
"""

from __future__ import annotations

import dataclasses

from ..backends import BACKENDS
from ..config import make_config
from ..methods import available_methods, get_method
from .attention import _WARNED, ALIAS, _make_attention_function, implementation_name, mask_function  # noqa: F401
from .stats import StatsCollector

_FUNCTIONS: dict[str, object] = {}  # implementation name -> attention function (created once: idempotent register)

__all__ = ["StatsCollector", "disable", "enable", "implementation_name", "mask_function", "register"]


# ---------------------------------------------------------------------------------------------------- registration


def register() -> list[str]:
    """Register every method with transformers' ``AttentionInterface`` and ``AttentionMaskInterface``.

    Names: ``pbs_<method>`` for each of ``pbs.available_methods()``, plus ``pbs`` (= ``pbs_pbs``). Idempotent (the
    same function objects are registered again). Returns the registered names.
    """
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError as err:  # pragma: no cover - old transformers
        raise ImportError("pbs.hf needs transformers >= 4.56 (AttentionInterface and AttentionMaskInterface)") from err
    names = []
    for method in available_methods():
        for name in (implementation_name(method),) + ((ALIAS,) if method == ALIAS else ()):
            fn = _FUNCTIONS.get(name)
            if fn is None:
                fn = _FUNCTIONS[name] = _make_attention_function(method, name)
            AttentionInterface.register(name, fn)
            AttentionMaskInterface.register(name, mask_function)
            names.append(name)
    return names


# ------------------------------------------------------------------------------------------------------- enable


def enable(model, method: str = "pbs", backend: str = "auto", short_seq_policy: bool = True, *, config=None,
           **kwargs) -> StatsCollector:
    """Switch ``model`` to ``attn_implementation=f"pbs_{method}"`` with these settings; return a collector.

    The method's settings are either ``config``, an instance of its config dataclass (``pbs.PBSConfig(...)``, e.g.
    built once from a Hydra config), or ``kwargs``, validated by that dataclass (``pbs.config``): an unknown or
    invalid one raises a ValueError naming it. The resolved settings (every field of the config) are stored as
    ``model.config.pbs`` (and on any sub-config an attention module uses), so ``save_pretrained`` keeps them. The
    returned :class:`StatsCollector` is also ``model._pbs_stats``.
    """
    spec = get_method(method)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got backend={backend!r}")
    if not isinstance(short_seq_policy, bool):
        raise ValueError(f"short_seq_policy must be a bool, got short_seq_policy={short_seq_policy!r}")
    if config is None:
        cfg = make_config(spec.config_cls, kwargs)
    elif kwargs:
        raise ValueError(f"pass the method's settings either as config or as kwargs, not both: got config and "
                         f"kwargs {sorted(kwargs)}")
    elif type(config) is not spec.config_cls:
        raise ValueError(f"config must be a {spec.config_cls.__name__} for method={method!r}, got "
                         f"config={config!r}")
    else:
        cfg = config
    register()
    settings = {
        "method": method,
        "backend": backend,
        "kwargs": dataclasses.asdict(cfg),
        "short_seq_policy": short_seq_policy,
    }
    for model_config in _configs(model):
        model_config.pbs = dict(settings, kwargs=dict(settings["kwargs"]))
    name = implementation_name(method)
    _set_implementation(model, name)
    collector = StatsCollector(method)
    _attach(model, collector)
    return collector


def disable(model) -> StatsCollector | None:
    """Restore ``sdpa``, remove ``config.pbs`` and the collector; return the collector that was attached."""
    collector = getattr(model, "_pbs_stats", None)
    _set_implementation(model, "sdpa")
    for config in _configs(model):
        if hasattr(config, "pbs"):
            try:
                delattr(config, "pbs")
            except AttributeError:
                config.pbs = None
    _attach(model, None)
    return collector


def _configs(model) -> list:
    """model.config and every distinct config an attention-bearing submodule holds."""
    seen, out = set(), []
    for cfg in [getattr(model, "config", None)] + [getattr(m, "config", None) for m in model.modules()]:
        if cfg is not None and id(cfg) not in seen and hasattr(cfg, "_attn_implementation"):
            seen.add(id(cfg))
            out.append(cfg)
    return out


def _set_implementation(model, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # transformers < 4.56
        for config in _configs(model):
            config._attn_implementation = name
    if model.config._attn_implementation != name:
        raise RuntimeError(
            f"{type(model).__name__} did not accept attn_implementation={name!r} (it does not dispatch through "
            f"transformers' AttentionInterface)"
        )


def _attach(model, collector) -> None:
    for module in [model, *model.modules()]:
        if module is model or hasattr(module, "layer_idx"):
            if collector is None:
                module.__dict__.pop("_pbs_stats", None)
            else:
                module.__dict__["_pbs_stats"] = collector
