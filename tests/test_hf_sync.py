"""The transformers attention function records densities without a host synchronisation (pbs.hf).

Before, every layer called ``pbs.sparse_attention(..., return_stats=True)``, which copies the per-head densities to
the host: a GPU synchronisation per layer that stalls the CPU's launch queue and distorts time-to-first-token. Now
the densities stay device tensors until the collector is read. Checked here on CPU: (1) the recorded densities are
exactly what ``pbs.sparse_attention``'s stats give on the same q, k, v (the old path), unpadded and padded; (2) no
host-reading Tensor call (``item``, ``tolist``, ``cpu``, ``bool()``, ``float()``, ...) is made from ``pbs/hf`` during
an unpadded forward, and the collector makes them when it is read. On a GPU, ``tests/gpu/test_hf_sync_gpu.py`` checks
the whole path with ``torch.cuda.set_sync_debug_mode``.
"""

import sys
from pathlib import Path

import pytest
import torch

import pbs
import pbs.hf
import pbs.hf.attention as hf_attention
from tests.test_hf import SPARSE, _ids, _model

HF_DIR = str(Path(pbs.hf.__file__).resolve().parent)
HOST_READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def _registered():
    pbs.hf.register()


def _capture_attend(monkeypatch) -> list[tuple]:
    """Record the (q, k, v, scale) of every ``pbs.attend`` call the attention function makes."""
    seen = []
    real = hf_attention.attend

    def attend(q, k, v, plan, *, scale=None, backend="auto"):
        seen.append((q.clone(), k.clone(), v.clone(), scale))
        return real(q, k, v, plan, scale=scale, backend=backend)

    monkeypatch.setattr(hf_attention, "attend", attend)
    return seen


@pytest.mark.parametrize("method", sorted(SPARSE))
def test_recorded_densities_equal_sparse_attention_stats(method, monkeypatch):
    model = _model("llama")
    seen = _capture_attend(monkeypatch)
    with torch.no_grad():
        stats = pbs.hf.enable(model, method=method, **SPARSE[method])
        model(_ids(200, seed=21))
    assert len(stats.records) == len(seen) == 2
    for rec, (q, k, v, scale) in zip(stats.records, seen):
        _, ref = pbs.sparse_attention(q, k, v, method, scale=scale, return_stats=True, **SPARSE[method])
        assert rec["density"] == ref.density
        assert rec["per_head"] == ref.per_head.mean(0).tolist()
        assert rec["dense_fallback"] == ref.dense_fallback and rec["backend"] == ref.backend
        assert all(isinstance(x, float) for x in [rec["density"], *rec["per_head"]])
    if method != "full":
        assert any(r["density"] < 1 for r in stats.records)  # really sparse: the comparison is not 1 == 1


def test_padded_batch_densities_equal_the_rows_stats(monkeypatch):
    """Padded rows run one by one: the record holds the mean of the rows' densities and per-head densities."""
    model = _model("llama")
    kwargs = SPARSE["xattention"]
    a, b = _ids(200, seed=22), _ids(150, seed=23)
    ids = torch.zeros(2, 200, dtype=torch.long)
    mask = torch.zeros(2, 200, dtype=torch.long)
    ids[0], mask[0] = a[0], 1
    ids[1, 50:], mask[1, 50:] = b[0], 1
    seen = _capture_attend(monkeypatch)
    with torch.no_grad():
        stats = pbs.hf.enable(model, method="xattention", **kwargs)
        model(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    assert len(seen) == 4 and len(stats.records) == 2
    for layer, rec in enumerate(stats.records):
        rows = [pbs.sparse_attention(q, k, v, "xattention", scale=scale, return_stats=True, **kwargs)[1]
                for q, k, v, scale in seen[2 * layer:2 * layer + 2]]
        assert rec["padded"] and rec["density"] == pytest.approx((rows[0].density + rows[1].density) / 2, abs=1e-15)
        expected = ((rows[0].per_head[0] + rows[1].per_head[0]) / 2).tolist()
        assert rec["per_head"] == pytest.approx(expected, abs=1e-15)


class _HostReads:
    """Counts host-reading Tensor calls made directly from code under ``pbs/hf`` while active."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        self.active = False
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))

    def _wrap(self, name, real):
        def method(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if self.active and caller.startswith(HF_DIR):
                self.calls.append(f"{name} from {Path(caller).name}:{sys._getframe(1).f_lineno}")
            return real(tensor, *args, **kwargs)

        return method


@pytest.mark.parametrize("method", ["pbs", "xattention", "flexprefill"])
def test_enabled_forward_reads_nothing_on_the_host(method, monkeypatch):
    model = _model("llama")
    with torch.no_grad():
        stats = pbs.hf.enable(model, method=method, **SPARSE[method])
        model(_ids(64, seed=24))  # warm: lazy imports and registrations happen outside the counted forward
        stats.reset()
        reads = _HostReads(monkeypatch)
        reads.active = True
        model(_ids(200, seed=25))
        during_forward = list(reads.calls)
        records = stats.records  # reading the collector is where the densities come to the host
        reads.active = False
    assert during_forward == [], during_forward
    assert len(reads.calls) >= 1 and any("stats.py" in c for c in reads.calls)
    assert len(records) == 2 and all(0 < r["density"] < 1 for r in records)


def test_collector_reads_pending_values_once_and_keeps_order():
    stats = pbs.hf.StatsCollector("pbs")
    per_head = torch.tensor([[0.25, 0.5], [0.75, 1.0]], dtype=torch.float64)
    pbs.hf.stats.record_call(stats, 0, "prefill", 8, 8, 2, False, "pbs", "torch", per_head.mean(), per_head.mean(0),
                             None)
    pbs.hf.stats.record_call(stats, 1, "prefill", 8, 8, 2, False, "pbs", "torch", 1.0, [1.0, 1.0], "dense")
    pbs.hf.stats.record_call(stats, 0, "decode", 1, 9, 2, False, "pbs", "sdpa", 1.0, [1.0, 1.0], None)
    assert len(stats._pending) == 1
    first = stats.records
    assert [r["density"] for r in first] == [0.625, 1.0, 1.0]
    assert first[0]["per_head"] == [0.5, 0.75] and stats._pending == []
    assert stats.records is first and stats.num_calls == 2
    assert stats.summary()["per_layer"] == {0: 0.625, 1: 1.0}
    stats.reset()
    assert stats.records == [] and stats.summary()["mean_density"] is None
