"""Tensor parallelism for the TTFT sweep: one process per GPU under ``torchrun``, transformers' ``tp_plan="auto"``.

Every rank runs the same forwards on its share of the heads (and MLP columns); the collectives inside the forward
keep them in step. What each rank decides from its own clock (more warm-ups, how many timed forwards, whether a run
still fits the time budget) is agreed first (:func:`agree_max`, :func:`agree_any`), or the ranks would run different
numbers of forwards and deadlock. A run's times are the maximum over ranks (the slowest rank is the latency).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def init(tensor_parallel: int, device: str) -> torch.device:
    """Join the ``torchrun`` process group when ``tensor_parallel`` > 1; returns this rank's device.

    Raises a ValueError naming ``tensor_parallel`` when the process was not started by ``torchrun`` with that many
    processes (``WORLD_SIZE``, set by the launcher).
    """
    if tensor_parallel == 1:
        return torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tensor_parallel:
        raise ValueError(f"tensor_parallel={tensor_parallel} needs as many processes started by torchrun "
                         f"(torchrun --nproc_per_node {tensor_parallel} -m experiments.speed ...); this process has "
                         f"WORLD_SIZE={world}")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")


def _reduce(value: float, op) -> float:
    if not active():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return float(t.item())


def agree_max(value: float) -> float:
    """The maximum of ``value`` over ranks (``value`` itself without tensor parallelism)."""
    return _reduce(value, dist.ReduceOp.MAX)


def agree_min(value: float) -> float:
    return -_reduce(-value, dist.ReduceOp.MAX)


def agree_mean(value: float) -> float:
    """The mean of ``value`` over ranks (e.g. a density measured on each rank's heads)."""
    return _reduce(value, dist.ReduceOp.SUM) / dist.get_world_size() if active() else value


def agree_any(flag: bool) -> bool:
    """True on every rank when it is True on any rank."""
    return _reduce(1.0 if flag else 0.0, dist.ReduceOp.MAX) > 0.5


def barrier() -> None:
    if active():
        dist.barrier()


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
