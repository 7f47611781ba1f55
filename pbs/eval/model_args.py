"""Model args of the ``pbs`` lm-eval model given as strings on lm-eval's command line (numbers, booleans, JSON
objects, a method's settings), and RoPE scaling from a model card (e.g. Qwen3's YaRN)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..config import make_config
from ..methods import get_method

#: ``method=`` values that leave the model's attention untouched
NO_METHOD = ("sdpa", "none", "hf")


def parse_value(value: Any) -> Any:
    """``"0.9"`` -> 0.9, ``"128"`` -> 128, ``"true"`` -> True, ``"null"``/``"None"`` -> None; anything else unchanged.

    Lower-case ``"none"`` stays a string: it is a valid value (``permute="none"``).
    """
    if not isinstance(value, str):
        return value
    s = value.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if s in ("null", "None"):
        return None
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def split_method_kwargs(method: str, kwargs: dict) -> tuple[dict, dict]:
    """``(method_kwargs, other_kwargs)``: the keys that are fields of the method's config dataclass, parsed.

    Only for model args given as one string (``--model_args method=pbs,threshold=0.9,...``); in Python, pass the
    method's config object instead (``method_config=``).
    """
    if method in NO_METHOD:
        return {}, dict(kwargs)
    fields = {f.name for f in dataclasses.fields(get_method(method).config_cls)}
    method_kwargs = {k: parse_value(v) for k, v in kwargs.items() if k in fields}
    other = {k: v for k, v in kwargs.items() if k not in fields}
    return method_kwargs, other


def parse_mapping(name: str, value: Any) -> dict | None:
    """A dict model arg given as a dict, a JSON string, or None."""
    if value is None or isinstance(value, dict):
        return None if value is None else dict(value)
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a dict or a JSON object string, got {name}={value!r}")
    return parsed


def scaled_rope_config(pretrained: str, rope_scaling: dict, **config_kwargs):
    """The model's config with ``rope_scaling`` merged into its RoPE parameters (transformers >= 5:
    ``rope_parameters``; before: ``rope_scaling``) and ``max_position_embeddings`` set to the scaled context."""
    import transformers

    if "factor" not in rope_scaling or not (rope_scaling.get("rope_type") or rope_scaling.get("type")):
        raise ValueError(f"rope_scaling needs 'rope_type' and 'factor', got rope_scaling={rope_scaling!r}")
    config = transformers.AutoConfig.from_pretrained(pretrained, **config_kwargs)
    if hasattr(config, "rope_parameters"):
        config.rope_parameters = {**(config.rope_parameters or {}), **rope_scaling}
    else:  # transformers 4.x
        config.rope_scaling = dict(rope_scaling)
    original = rope_scaling.get("original_max_position_embeddings")
    if original:
        config.max_position_embeddings = int(float(rope_scaling["factor"]) * int(original))
    return config


def method_config_from_args(method: str, method_config, kwargs: dict):
    """``(the method's config object or None, the remaining model args)``: ``method_config`` as given (built once
    upstream), or built here from the model args that are fields of the method's config (lm-eval's string form)."""
    if method in NO_METHOD:
        if method_config is not None:
            raise ValueError(f"method={method!r} leaves the model untouched: method_config must be None, "
                             f"got method_config={method_config!r}")
        return None, dict(kwargs)
    spec = get_method(method)
    if method_config is None:
        method_kwargs, hf_kwargs = split_method_kwargs(method, kwargs)
        return make_config(spec.config_cls, method_kwargs), hf_kwargs
    if type(method_config) is not spec.config_cls:
        raise ValueError(f"method_config must be a {spec.config_cls.__name__} for method={method!r}, got "
                         f"method_config={method_config!r}")
    clash = sorted(set(kwargs) & {f.name for f in dataclasses.fields(spec.config_cls)})
    if clash:
        raise ValueError(f"pass the method's settings either in method_config or as model args, not both: got "
                         f"method_config and {clash}")
    return method_config, dict(kwargs)
