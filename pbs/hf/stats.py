"""What the registered attention function ran, per call and layer: :class:`StatsCollector` (``pbs.hf.enable``
returns it)."""

from __future__ import annotations

from collections import Counter, defaultdict


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
                layer: [_mean(col) for col in zip(*heads)]
                for layer, heads in sorted(heads_by_layer.items(), key=_layer_key)
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


def record_call(collector, layer, path, q_len, kv_len, batch, padded, method, backend, density, per_head,
                reason) -> None:
    """Append one record to ``collector`` (None: nothing is collected)."""
    if collector is None:
        return
    collector.record(layer=layer, path=path, q_len=q_len, kv_len=kv_len, batch=batch, padded=padded, method=method,
                     backend=backend, density=float(density), per_head=[float(x) for x in per_head],
                     dense_fallback=reason)
