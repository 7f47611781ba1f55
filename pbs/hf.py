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

- prefill (q_len == kv_len > 1): ``pbs.sparse_attention`` with the method's settings;
- decode (q_len == 1): dense attention of the one query over every cached key (never sparse);
- chunked prefill / continued prompt (1 < q_len < kv_len): ``pbs.sparse_attention`` with Nq < Nk (the queries
  are the last q_len positions; earlier context is kept);
- padding (left or right, from the 2-D attention mask): each batch row runs on its valid keys and valid queries
  only, as if it were alone; padded query rows get zeros;
- StaticCache (key/value buffers longer than the tokens seen so far): the mask function passes a 2-D mask of
  length ``q_offset + q_len`` (the valid length; transformers 4.x: ``cache_position[-1] + 1``), and the attention
  function slices key/value to it. With no mask at all, a ``cache_position`` kwarg (4.x) is used the same way.

Never built: an N x N mask. The registered mask function returns None when there is no padding and the cache
holds exactly kv_len valid tokens, else the 2-D (batch, valid_len) boolean padding mask.

Not supported (a ValueError says so): dropout > 0 (inference only), sliding-window / chunked / packed-sequence /
bidirectional masks, soft-capping, attention sinks, position biases, non-causal modules. Gradients do not flow
through the sparse prefill (``pbs.sparse_attention`` runs under ``torch.no_grad``); a warning says so once.

Settings: ``model.config.pbs = {"method", "backend", "kwargs", "short_seq_policy"}`` (written by :func:`enable`,
saved by ``save_pretrained``); when absent, or naming another method than the implementation, the method's
defaults from ``pbs.config`` are used.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter, defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor

from .api import sparse_attention
from .backends import BACKENDS
from .config import make_config
from .methods import available_methods, get_method

ALIAS = "pbs"  # attn_implementation="pbs" is method "pbs"
_PREFIX = "pbs_"
_FUNCTIONS: dict[str, object] = {}  # implementation name -> attention function (created once: idempotent register)
_WARNED: set[str] = set()

__all__ = ["StatsCollector", "disable", "enable", "implementation_name", "mask_function", "register"]


def implementation_name(method: str) -> str:
    """The ``attn_implementation`` name of a method: ``f"pbs_{method}"``."""
    return f"{_PREFIX}{method}"


# ----------------------------------------------------------------------------------------------------------- stats


class StatsCollector:
    """Per-call, per-layer records of what the attention function ran.

    Each record is a dict: ``call`` (forward-call index; a call starts when a layer index does not increase),
    ``layer`` (``module.layer_idx``), ``path`` ("prefill" | "decode" | "chunk"), ``q_len``, ``kv_len`` (valid
    length after StaticCache slicing), ``batch``, ``padded`` (whether rows were run one by one), ``method``,
    ``backend``, ``density``, ``per_head`` (list of floats, mean over batch rows), ``dense_fallback`` (why it ran
    dense, or None).
    """

    def __init__(self, method: str | None = None):
        self.method = method
        self.records: list[dict] = []
        self._call = -1
        self._last_layer: int | None = None

    def reset(self) -> None:
        self.records.clear()
        self._call = -1
        self._last_layer = None

    def record(self, *, layer, **fields) -> None:
        if self._last_layer is None or layer is None or layer <= self._last_layer:
            self._call += 1
        self._last_layer = layer
        self.records.append({"call": self._call, "layer": layer, **fields})

    @property
    def num_calls(self) -> int:
        return self._call + 1

    def summary(self) -> dict:
        """``mean_density`` (over prefill records), ``per_layer`` ({layer: mean prefill density}),
        ``per_layer_per_head`` ({layer: mean per-head prefill density}), ``chunk_mean_density`` (over chunk records,
        None if none), ``paths`` (record counts), ``calls``, ``dense_fallbacks`` ({reason: count})."""
        prefill = [r for r in self.records if r["path"] == "prefill"]
        chunk = [r for r in self.records if r["path"] == "chunk"]
        by_layer: dict = defaultdict(list)
        heads_by_layer: dict = defaultdict(list)
        for r in prefill:
            by_layer[r["layer"]].append(r["density"])
            heads_by_layer[r["layer"]].append(r["per_head"])
        return {
            "method": self.method,
            "calls": self.num_calls,
            "paths": dict(Counter(r["path"] for r in self.records)),
            "mean_density": _mean([r["density"] for r in prefill]),
            "per_layer": {layer: _mean(d) for layer, d in sorted(by_layer.items(), key=_layer_key)},
            "per_layer_per_head": {
                layer: [_mean(col) for col in zip(*heads)] for layer, heads in sorted(heads_by_layer.items(), key=_layer_key)
            },
            "chunk_mean_density": _mean([r["density"] for r in chunk]),
            "dense_fallbacks": dict(Counter(r["dense_fallback"] for r in self.records if r["dense_fallback"])),
        }

    def __repr__(self) -> str:
        return f"StatsCollector(method={self.method!r}, records={len(self.records)}, calls={self.num_calls})"


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _layer_key(item):
    return (item[0] is None, item[0] if item[0] is not None else 0)


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
    for config in _configs(model):
        config.pbs = dict(settings, kwargs=dict(settings["kwargs"]))
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


# ---------------------------------------------------------------------------------------------------- the mask


@torch.compiler.disable
def mask_function(*args, **kwargs):
    """The ``AttentionMaskInterface`` entry: None, or the 2-D (batch, valid_len) boolean padding mask.

    Signatures handled (transformers calls it with keywords):
      5.x:  (batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=causal_mask_function,
             attention_mask=None, **kwargs)   [kwargs include allow_is_causal_skip, dtype, config, use_vmap, device]
      4.5x: (batch_size, cache_position, kv_length, kv_offset=0, mask_function=causal_mask_function,
             attention_mask=None, **kwargs)   [kwargs include allow_is_causal_skip, dtype, config]
    Returns None when no key is padding and the cache holds exactly kv_length tokens; otherwise the boolean 2-D
    mask (True = real token) of length q_offset + q_length (the valid length; shorter than kv_length for a
    StaticCache). Never an N x N mask.
    """
    if args:
        new_style = not (len(args) > 1 and isinstance(args[1], Tensor))
        names = (("batch_size", "q_length", "kv_length", "q_offset", "kv_offset", "mask_function", "attention_mask")
                 if new_style else
                 ("batch_size", "cache_position", "kv_length", "kv_offset", "mask_function", "attention_mask"))
        kwargs.update(zip(names, args))
    _check_mask_function(kwargs.get("mask_function"))
    batch_size = kwargs.get("batch_size")
    kv_length = int(kwargs["kv_length"])
    attention_mask = kwargs.get("attention_mask")
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or attention_mask.dim() != 2:
            return attention_mask  # already prepared (4-D); transformers returns those before calling us anyway
        mask = attention_mask.to(torch.bool)[:, -kv_length:]
        if mask.shape[1] == kv_length and bool(mask.all()):
            return None
        return mask
    cache_position = kwargs.get("cache_position")
    if kwargs.get("q_length") is not None:
        q_length, q_offset = int(kwargs["q_length"]), kwargs.get("q_offset", 0) or 0
    elif isinstance(cache_position, Tensor) and cache_position.numel():
        q_length, q_offset = cache_position.shape[0], cache_position[0]
    else:
        return None
    valid = int(q_offset) + q_length
    if valid >= kv_length:
        return None
    device = kwargs.get("device") or (cache_position.device if isinstance(cache_position, Tensor) else "cpu")
    return torch.ones(batch_size, valid, dtype=torch.bool, device=device)


def _check_mask_function(fn) -> None:
    if fn is None:
        return
    from transformers.masking_utils import causal_mask_function

    if fn is not causal_mask_function:
        raise ValueError(
            f"pbs attention supports plain causal masks only (with optional 2-D padding); got mask_function="
            f"{getattr(fn, '__qualname__', fn)!r} (sliding-window, chunked, packed-sequence, bidirectional or "
            f"custom overlay masks are not supported)"
        )


# ---------------------------------------------------------------------------------------- the attention function


def _make_attention_function(method: str, name: str):
    def pbs_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        return _forward(method, name, module, query, key, value, attention_mask, scaling, dropout, kwargs)

    pbs_attention_forward.__name__ = f"{name}_attention_forward"
    pbs_attention_forward.__qualname__ = pbs_attention_forward.__name__
    # data-dependent planning and Python-side stats: keep torch.compile (e.g. generate's auto-compiled decode with a
    # StaticCache) out of it; the compiled graph breaks around the call instead of recompiling on every record
    fn = torch.compiler.disable(pbs_attention_forward)
    fn._pbs_method = method
    return fn


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


def _settings(module, method: str) -> tuple[str, dict, bool]:
    stored = getattr(getattr(module, "config", None), "pbs", None)
    if isinstance(stored, dict) and stored.get("method", method) == method:
        return stored.get("backend", "auto"), dict(stored.get("kwargs") or {}), stored.get("short_seq_policy", True)
    if isinstance(stored, dict):
        _warn_once(
            f"mismatch-{method}",
            f"config.pbs names method={stored.get('method')!r} but the attention implementation is "
            f"{implementation_name(method)!r}; using {method!r} with its default settings",
        )
    return "auto", {}, True


def _check_call(query, dropout, kwargs, module) -> None:
    if dropout:
        raise ValueError(f"pbs attention is inference-only: dropout must be 0, got dropout={dropout!r}")
    if kwargs.get("sliding_window") is not None:
        raise ValueError(
            f"pbs attention does not support sliding-window attention, got sliding_window={kwargs['sliding_window']!r}"
            " (use a model/config without sliding window, e.g. Mistral with sliding_window=None)"
        )
    for unsupported in ("softcap", "s_aux", "position_bias"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(f"pbs attention does not support {unsupported}, got {unsupported}={kwargs[unsupported]!r}")
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    if not is_causal:
        raise ValueError(f"pbs attention is causal only, got is_causal={is_causal!r}")
    if torch.is_grad_enabled() and query.requires_grad:
        _warn_once("grad", "pbs attention is inference-only: no gradient flows through the sparse prefill "
                           "(run under torch.no_grad() / torch.inference_mode())")


def _forward(method, name, module, query, key, value, attention_mask, scaling, dropout, kwargs):
    _check_call(query, dropout, kwargs, module)
    backend, method_kwargs, short_seq_policy = _settings(module, method)
    scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    b, hq, q_len, d = query.shape
    kv_len = key.shape[2]
    collector = getattr(module, "_pbs_stats", None)
    layer = getattr(module, "layer_idx", None)

    if isinstance(attention_mask, Tensor) and attention_mask.dim() == 4:
        # a mask somebody already materialized: honour it with dense SDPA (nothing sparse to do safely)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scale,
                                             enable_gqa=hq != key.shape[1])
        _record(collector, layer, "decode" if q_len == 1 else ("prefill" if q_len == kv_len else "chunk"), q_len,
                kv_len, b, False, method, "sdpa", 1.0, [1.0] * hq, "4-D attention mask given: dense SDPA")
        return out.transpose(1, 2).contiguous(), None

    mask, valid_len = _normalize_mask(attention_mask, kv_len, kwargs.get("cache_position"))
    if valid_len < kv_len:  # StaticCache: keys past the tokens seen so far are unused buffer
        key, value = key[:, :, :valid_len], value[:, :, :valid_len]
    if q_len > valid_len:
        raise ValueError(f"query longer than the valid keys: q_len={q_len}, valid kv_len={valid_len}")
    path = "decode" if q_len == 1 else ("prefill" if q_len == valid_len else "chunk")

    if path == "decode":
        out = _decode(query, key, value, mask, scale)
        _record(collector, layer, path, q_len, valid_len, b, mask is not None, method, "sdpa", 1.0, [1.0] * hq,
                "decode: dense attention over the cache")
        return out.transpose(1, 2).contiguous(), None

    run = dict(method=method, backend=backend, short_seq_policy=short_seq_policy, scale=scale,
               return_stats=True, **method_kwargs)
    if mask is None:
        out, stats = sparse_attention(query, key, value, **run)
        per_head = stats.per_head.mean(0).tolist()
        _record(collector, layer, path, q_len, valid_len, b, False, method, stats.backend, stats.density, per_head,
                stats.dense_fallback)
        return out.transpose(1, 2).contiguous(), None

    out = query.new_zeros(b, hq, q_len, d)
    densities, heads, reasons, stats_backend = [], [], [], backend
    for row in range(b):
        keys = mask[row]
        queries = keys[valid_len - q_len:]
        if not bool(queries.any()):
            continue  # every query of this row is padding: zeros
        q_sel, k_sel = _selector(queries), _selector(keys)
        o, stats = sparse_attention(query[row:row + 1, :, q_sel], key[row:row + 1, :, k_sel],
                                    value[row:row + 1, :, k_sel], **run)
        out[row, :, q_sel] = o[0]
        densities.append(stats.density)
        heads.append(stats.per_head[0])
        stats_backend = stats.backend
        if stats.dense_fallback:
            reasons.append(stats.dense_fallback)
    if densities:
        per_head = torch.stack(heads).mean(0).tolist()
        reason = "; ".join(dict.fromkeys(reasons)) or None
        _record(collector, layer, path, q_len, valid_len, b, True, method, stats_backend, sum(densities) / len(densities),
                per_head, reason)
    return out.transpose(1, 2).contiguous(), None


def _normalize_mask(attention_mask, kv_len: int, cache_position) -> tuple[Tensor | None, int]:
    """(2-D bool mask of the valid length or None when nothing is padding, valid length <= kv_len)."""
    if attention_mask is None:
        valid = kv_len
        if isinstance(cache_position, Tensor) and cache_position.numel():  # transformers 4.x passes it
            valid = min(kv_len, int(cache_position[-1]) + 1)
        return None, valid
    if not isinstance(attention_mask, Tensor) or attention_mask.dim() != 2:
        raise ValueError(
            f"pbs attention expects a 2-D padding mask or None (its registered mask function makes those), got "
            f"{type(attention_mask).__name__} of shape {tuple(getattr(attention_mask, 'shape', ()))}; load or switch "
            f"the model with pbs.hf.register() called first"
        )
    mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0
    mask = mask[:, -kv_len:]
    valid = mask.shape[1]
    if bool(mask.all()):
        mask = None
    return mask, valid


def _selector(flags: Tensor):
    """Index for the True entries of a 1-D bool tensor: a slice when they are contiguous (no copy), else indices."""
    idx = flags.nonzero().flatten()
    start, stop = int(idx[0]), int(idx[-1]) + 1
    return slice(start, stop) if stop - start == idx.numel() else idx


def _decode(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """One query per row attends to every valid cached key; the GQA group is packed as extra query rows.

    (b, Hq, 1, d) -> (b, Hkv, g, d) against (b, Hkv, L, d): same result as SDPA with enable_gqa, no repeat.
    """
    b, hq, _, d = query.shape
    hkv = key.shape[1]
    q = query.reshape(b, hkv, hq // hkv, d)
    attn_mask = None if mask is None else mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=attn_mask, scale=scale)
    out = out.reshape(b, hq, 1, d)
    if mask is not None:  # a padded query row, or a row without any valid key, gives zeros (not NaN)
        keep = mask[:, -1] & mask.any(-1)
        out = torch.where(keep[:, None, None, None], out, out.new_zeros(()))
    return out


def _record(collector, layer, path, q_len, kv_len, batch, padded, method, backend, density, per_head, reason) -> None:
    if collector is None:
        return
    collector.record(layer=layer, path=path, q_len=q_len, kv_len=kv_len, batch=batch, padded=padded, method=method,
                     backend=backend, density=float(density), per_head=[float(x) for x in per_head],
                     dense_fallback=reason)
