"""Where a job runs: ``device="auto"`` resolved the same way by every app (evaluation jobs, the proxy trainer)."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto", job_num: int = 0) -> torch.device:
    """``"auto"``: GPU ``job_num % count`` (one GPU per parallel sweep job) when CUDA is present, else the CPU;
    anything else is taken as given (``"cpu"``, ``"cuda:1"``)."""
    if device in (None, "auto"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return torch.device(f"cuda:{job_num % count}" if count else "cpu")
    return torch.device(device)
