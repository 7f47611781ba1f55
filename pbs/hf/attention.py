"""The functions registered with transformers: the attention function of every method (prefill sparse, decode
dense, chunked prefill, padding, StaticCache; see :mod:`pbs.hf`) and the mask function that never builds an N x N
mask."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from ..api import attend, plan
from ..backends import resolve
from ..methods import Dense
from .stats import record_call

ALIAS = "pbs"  # attn_implementation="pbs" is method "pbs"
_PREFIX = "pbs_"
_WARNED: set[str] = set()


def implementation_name(method: str) -> str:
    """The ``attn_implementation`` name of a method: ``f"pbs_{method}"``."""
    return f"{_PREFIX}{method}"


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
        record_call(collector, layer, "decode" if q_len == 1 else ("prefill" if q_len == kv_len else "chunk"), q_len,
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
        record_call(collector, layer, path, q_len, valid_len, b, mask is not None, method, "sdpa", 1.0, [1.0] * hq,
                    "decode: dense attention over the cache")
        return out.transpose(1, 2).contiguous(), None

    backend = resolve(backend, query.device)
    run = dict(method=method, backend=backend, short_seq_policy=short_seq_policy, scale=scale,
               method_kwargs=method_kwargs)
    if mask is None:
        out, per_head, reason = _plan_and_attend(query, key, value, **run)
        record_call(collector, layer, path, q_len, valid_len, b, False, method, backend, per_head.mean(),
                    per_head.mean(0), reason)
        return out.transpose(1, 2).contiguous(), None

    # padding: each row on its own valid tokens (the row lengths are read on the host: this path synchronises)
    out = query.new_zeros(b, hq, q_len, d)
    densities, heads, reasons = [], [], []
    for row in range(b):
        keys = mask[row]
        queries = keys[valid_len - q_len:]
        if not bool(queries.any()):
            continue  # every query of this row is padding: zeros
        q_sel, k_sel = _selector(queries), _selector(keys)
        o, per_head, reason = _plan_and_attend(query[row:row + 1, :, q_sel], key[row:row + 1, :, k_sel],
                                               value[row:row + 1, :, k_sel], **run)
        out[row, :, q_sel] = o[0]
        densities.append(per_head.mean())
        heads.append(per_head[0])
        if reason:
            reasons.append(reason)
    if densities:
        reason = "; ".join(dict.fromkeys(reasons)) or None
        record_call(collector, layer, path, q_len, valid_len, b, True, method, backend,
                    torch.stack(densities).mean(), torch.stack(heads).mean(0), reason)
    return out.transpose(1, 2).contiguous(), None


def _plan_and_attend(query, key, value, *, method, backend, short_seq_policy, scale, method_kwargs):
    """``pbs.plan`` then ``pbs.attend`` (``pbs.sparse_attention`` without reading its stats on the host):
    (out, per-head density (B, Hq) float64 on the inputs' device, dense-fallback reason or None). Nothing here
    synchronises with the GPU (the fused planners do not either): the collector reads the densities later."""
    the_plan = plan(query, key, method, scale=scale, short_seq_policy=short_seq_policy and backend == "triton",
                    **method_kwargs)
    out = attend(query, key, value, the_plan, scale=scale, backend=backend)
    if isinstance(the_plan, Dense):
        return out, torch.ones(query.shape[:2], dtype=torch.float64, device=query.device), the_plan.reason
    return out, the_plan.density_per_head(), None


def _normalize_mask(attention_mask, kv_len: int, cache_position) -> tuple[Tensor | None, int]:
    """(2-D bool mask of the valid length or None when nothing is padding, valid length <= kv_len)."""
    if attention_mask is None:
        valid = kv_len
        if isinstance(cache_position, Tensor) and 0 < cache_position.numel() < kv_len:  # transformers 4.x
            # a StaticCache buffer longer than the positions given: the valid length is read on the host. (With as
            # many positions as keys, they can only be 0..kv_len-1: nothing to read, no synchronisation.)
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
