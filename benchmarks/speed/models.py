"""The models the speed benchmark times, and their prompts.

An architecture JSON (``models/configs/<name>.json``, the model's public ``config.json``) gives a model with random
weights, built directly on the device in the benchmark's dtype: the parameters are allocated there and initialised
there (transformers' own init), never materialised on the CPU, so an 8B model costs seconds, not a 16 GB copy.
Time does not depend on the weights' values. A folder with weights (``path``) loads them with ``from_pretrained``
(straight to the device on CUDA). Works with transformers 5.17 and 5.24.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import SpeedModel

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Architecture:
    """What the rows and the time estimate need of a model: layers, heads, sizes, parameters per token."""

    layers: int
    q_heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    linear_params: int  # parameters every prompt token multiplies (projections + MLP; not embeddings / lm_head)


def resolve_path(path: str) -> Path:
    """A relative path against the working directory, then the project root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return ROOT / p


def hf_config(spec: SpeedModel):
    """The transformers config of ``spec``: its JSON (or its folder's config.json) with ``config_overrides``."""
    from transformers import AutoConfig

    if spec.path is not None:
        cfg = AutoConfig.from_pretrained(resolve_path(spec.path))
        for key, value in spec.config_overrides.items():
            setattr(cfg, key, value)
        return cfg
    data = json.loads(resolve_path(spec.config).read_text())
    data.pop("architectures", None)
    data.pop("torch_dtype", None)
    data.update(spec.config_overrides)
    return AutoConfig.for_model(**data)


def architecture(cfg) -> Architecture:
    """Sizes of a transformers decoder config (Llama, Qwen2, Qwen3, Mistral layouts)."""
    hidden, layers = cfg.hidden_size, cfg.num_hidden_layers
    q_heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or q_heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // q_heads
    per_layer = hidden * head_dim * (2 * q_heads + 2 * kv_heads) + 3 * hidden * cfg.intermediate_size
    return Architecture(layers=layers, q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim, hidden=hidden,
                        vocab=cfg.vocab_size, linear_params=layers * per_layer)


def load_model(spec: SpeedModel, device: torch.device | str, dtype: torch.dtype, *, tensor_parallel: int = 1,
               weights_dir: str | None = None, name: str = "model"):
    """(model in eval mode with ``attn_implementation="sdpa"``, its config) on ``device`` in ``dtype``.

    ``tensor_parallel`` > 1 (inside the process group of :mod:`.parallel`): every rank loads its shard with
    ``from_pretrained(..., tp_plan="auto")``; a random-weight architecture is first built and saved once by rank 0
    under ``weights_dir/<name>`` (reused while its config is unchanged).
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    cfg = hf_config(spec)
    if tensor_parallel > 1:
        return _load_tensor_parallel(spec, cfg, device, dtype, weights_dir, name), cfg
    if spec.path is not None:
        kwargs = {"device_map": {"": device}} if device.type == "cuda" else {}
        model = AutoModelForCausalLM.from_pretrained(resolve_path(spec.path), config=cfg, dtype=dtype,
                                                     attn_implementation="sdpa", **kwargs).to(device)
    else:
        cfg._attn_implementation = "sdpa"
        with torch.device(device):  # parameters are created (and initialised) on the device: no CPU copy
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    if model.generation_config.pad_token_id is None:
        eos = model.generation_config.eos_token_id
        model.generation_config.pad_token_id = (eos[0] if isinstance(eos, list) else eos) or 0
    return model, cfg


def _load_tensor_parallel(spec: SpeedModel, cfg, device: torch.device, dtype: torch.dtype, weights_dir, name):
    from transformers import AutoModelForCausalLM

    from . import parallel

    if spec.path is not None:
        folder = resolve_path(spec.path)
    else:
        if weights_dir is None:
            raise ValueError("tensor_parallel > 1 with random weights needs tp_weights_dir (a local folder)")
        folder = Path(weights_dir) / name
        marker = folder / "pbs-speed-config.json"
        wanted = json.dumps(cfg.to_dict(), sort_keys=True, default=str) + str(dtype)
        if parallel.rank() == 0 and not (marker.exists() and marker.read_text() == wanted):
            cfg._attn_implementation = "sdpa"
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
            model.save_pretrained(folder)
            marker.write_text(wanted)
            del model
        parallel.barrier()
    model = AutoModelForCausalLM.from_pretrained(folder, config=cfg, dtype=dtype, tp_plan="auto",
                                                 attn_implementation="sdpa")
    model.eval()
    if model.generation_config.pad_token_id is None:
        eos = model.generation_config.eos_token_id
        model.generation_config.pad_token_id = (eos[0] if isinstance(eos, list) else eos) or 0
    return model


def prompt_ids(spec: SpeedModel, cfg, seq_len: int, seed: int, device) -> torch.Tensor:
    """(1, seq_len) token ids: random ids (``prompt="random"``) or a RULER needle-in-a-haystack sample in the model's
    tokenizer, trimmed from the front or extended with more haystack to exactly ``seq_len`` tokens (``"ruler"``)."""
    if spec.prompt == "random":
        gen = torch.Generator().manual_seed(seed + seq_len)
        return torch.randint(0, cfg.vocab_size, (1, seq_len), generator=gen).to(device)
    from transformers import AutoTokenizer

    from pbs.eval.ruler.generate import corpus_verses, generate_sample, hf_count_tokens

    path = str(resolve_path(spec.path))
    tok = AutoTokenizer.from_pretrained(path)
    sample = generate_sample("niah_single_2", seq_len - 64, 10, num_samples=20, seed=seed,
                             count_tokens=hf_count_tokens(path))
    ids = tok(sample["input"])["input_ids"]
    if len(ids) < seq_len:  # more haystack in front of the sample (after its first token, BOS if any)
        filler: list[int] = []
        verses = corpus_verses()
        i = 0
        while len(filler) < seq_len - len(ids):
            filler += tok(" ".join(verses[i:i + 200]), add_special_tokens=False)["input_ids"]
            i = (i + 200) % len(verses)
        ids = ids[:1] + filler[:seq_len - len(ids)] + ids[1:]
    return torch.tensor([ids[-seq_len:]], dtype=torch.long, device=device)
