"""Model-side settings of the ``pbs`` lm-eval model that come from a model card: RoPE scaling (e.g. Qwen3's YaRN)
and dict-valued model args given on lm-eval's command line as JSON."""

from __future__ import annotations

import json
from typing import Any


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
