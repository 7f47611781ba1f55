"""Short-sequence policy: below a crossover length measured per GPU, sparse methods run dense.

``pbs/crossover.json`` maps a GPU name to, per method, the shortest sequence length from which the method's
end-to-end time (planning + attention, backend "triton") stayed within 5% of the fastest dense attention at
every longer measured length. It is written from a benchmark run (``scripts/update_crossover.py`` on
``results/kernels/<gpu>.csv``), so a user never pays more than 5% over dense at the measured lengths.
The policy applies to the triton backend on CUDA only: the torch reference is for correctness, not speed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

CROSSOVER_FILE = Path(__file__).with_name("crossover.json")


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    if not CROSSOVER_FILE.exists():
        return {}
    return json.loads(CROSSOVER_FILE.read_text())


def crossover(method: str, device: torch.device) -> tuple[int | None, str]:
    """(crossover length or None, GPU name it was measured on) for a CUDA device."""
    name = torch.cuda.get_device_name(device)
    table = _table()
    if name in table:
        return table[name].get(method), name
    # an unmeasured GPU: the most conservative (largest) crossover measured on any GPU
    values = [t[method] for t in table.values() if t.get(method) is not None]
    return (max(values) if values else None), f"{name} (unmeasured; most conservative measured value)"


def dense_reason(method: str, seq_len_kv: int, device: torch.device, backend: str) -> str | None:
    """Why ``method`` should run dense at this length on this device, or None."""
    if backend != "triton" or device.type != "cuda" or method == "full":
        return None
    length, gpu = crossover(method, device)
    if length is not None and seq_len_kv < length:
        return f"seq_len_kv={seq_len_kv} < measured crossover {length} for {method} on {gpu}: dense is faster"
    return None
