"""What the registered attention function ran, per call and layer: :class:`StatsCollector` (``pbs.hf.enable``
returns it)."""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
from torch import Tensor


class StatsCollector:
    """Per-call, per-layer records of what the attention function ran.

    Each record is a dict: ``call`` (forward-call index; a call starts when a layer index does not increase),
    ``layer`` (``module.layer_idx``), ``path`` ("prefill" | "decode" | "chunk"), ``q_len``, ``kv_len`` (valid
    length after StaticCache slicing), ``batch``, ``padded`` (whether rows were run one by one), ``method``,
    ``backend``, ``density``, ``per_head`` (list of floats, mean over batch rows), ``dense_fallback`` (why it ran
    dense, or None).

    Recording never synchronises with the GPU: a sparse call's densities stay device tensors until the records
    are read (``records``, :meth:`summary`), which copies every pending one to the host in one transfer per device.
    """

    def __init__(self, method: str | None = None):
        self.method = method
        self._records: list[dict] = []
        self._pending: list[dict] = []  # records whose density / per_head are still device tensors
        self._call = -1
        self._last_layer: int | None = None

    def reset(self) -> None:
        self._records.clear()
        self._pending.clear()
        self._call = -1
        self._last_layer = None

    def record(self, *, layer, **fields) -> None:
        """Append a record; ``density`` may be a 0-d tensor and ``per_head`` a 1-d tensor (read later, lazily)."""
        if self._last_layer is None or layer is None or layer <= self._last_layer:
            self._call += 1
        self._last_layer = layer
        rec = {"call": self._call, "layer": layer, **fields}
        self._records.append(rec)
        if isinstance(rec.get("density"), Tensor) or isinstance(rec.get("per_head"), Tensor):
            self._pending.append(rec)

    @property
    def records(self) -> list[dict]:
        """Every record, with densities as Python floats (pending device values are copied to the host here)."""
        if self._pending:
            _materialize(self._pending)
            self._pending.clear()
        return self._records

    @property
    def num_calls(self) -> int:
        return self._call + 1

    def summary(self) -> dict:
        """``mean_density`` (over prefill records), ``per_layer`` ({layer: mean prefill density}),
        ``per_layer_per_head`` ({layer: mean per-head prefill density}), ``chunk_mean_density`` (over chunk records,
        None if none), ``paths`` (record counts), ``calls``, ``dense_fallbacks`` ({reason: count})."""
        records = self.records
        prefill = [r for r in records if r["path"] == "prefill"]
        chunk = [r for r in records if r["path"] == "chunk"]
        by_layer: dict = defaultdict(list)
        heads_by_layer: dict = defaultdict(list)
        for r in prefill:
            by_layer[r["layer"]].append(r["density"])
            heads_by_layer[r["layer"]].append(r["per_head"])
        return {
            "method": self.method,
            "calls": self.num_calls,
            "paths": dict(Counter(r["path"] for r in records)),
            "mean_density": _mean([r["density"] for r in prefill]),
            "per_layer": {layer: _mean(d) for layer, d in sorted(by_layer.items(), key=_layer_key)},
            "per_layer_per_head": {
                layer: [_mean(col) for col in zip(*heads)]
                for layer, heads in sorted(heads_by_layer.items(), key=_layer_key)
            },
            "chunk_mean_density": _mean([r["density"] for r in chunk]),
            "dense_fallbacks": dict(Counter(r["dense_fallback"] for r in records if r["dense_fallback"])),
        }

    def __repr__(self) -> str:
        return f"StatsCollector(method={self.method!r}, records={len(self._records)}, calls={self.num_calls})"


def _materialize(pending: list[dict]) -> None:
    """Replace the tensor ``density`` / ``per_head`` of ``pending`` records by floats: one host copy per device."""
    by_device: dict = defaultdict(list)
    for rec in pending:
        density, per_head = (torch.as_tensor(rec[key], dtype=torch.float64).reshape(-1)
                             for key in ("density", "per_head"))
        by_device[density.device].append((rec, density, per_head))
    for items in by_device.values():
        flat = torch.cat([t.to(items[0][1].device) for _, d, h in items for t in (d, h)]).tolist()
        pos = 0
        for rec, _, per_head in items:
            rec["density"] = flat[pos]
            rec["per_head"] = flat[pos + 1:pos + 1 + per_head.numel()]
            pos += 1 + per_head.numel()


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _layer_key(item):
    return (item[0] is None, item[0] if item[0] is not None else 0)


def record_call(collector, layer, path, q_len, kv_len, batch, padded, method, backend, density, per_head,
                reason) -> None:
    """Append one record to ``collector`` (None: nothing is collected).

    ``density`` is a float or a 0-d tensor, ``per_head`` a list of floats or a 1-d (heads,) tensor; tensors stay
    on their device until the collector is read, so recording does not synchronise.
    """
    if collector is None:
        return
    if not isinstance(density, Tensor):
        density = float(density)
    if not isinstance(per_head, Tensor):
        per_head = [float(x) for x in per_head]
    collector.record(layer=layer, path=path, q_len=q_len, kv_len=kv_len, batch=batch, padded=padded, method=method,
                     backend=backend, density=density, per_head=per_head, dense_fallback=reason)
