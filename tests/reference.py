"""Independent references for the tests: float64 dense causal attention, written without pbs."""

import math

import torch


def causal_attention_f64(q, k, v, scale=None):
    """Bottom-right aligned causal attention in float64: query i sits at position Nk - Nq + i."""
    nq, nk = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    kk = k.double().repeat_interleave(group, 1)
    vv = v.double().repeat_interleave(group, 1)
    scores = q.double() @ kk.transpose(-1, -2) * scale
    visible = torch.arange(nk)[None, :] <= (torch.arange(nq) + nk - nq)[:, None]
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, -1) @ vv


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


# every method at its densest setting (small blocks/segments so short sequences span many of them)
DENSEST = {
    "full": {},
    "pbs": dict(threshold=1, block_size=16, segment_size=32),
    "meanpool": dict(threshold=1, block_size=16),
    "xattention": dict(threshold=1, block_size=16, stride=4),
    "minference": dict(vertical_size=10**6, slash_size=10**6, block_size=16),
    "flexprefill": dict(gamma=1, block_size=16),
    "oracle": dict(threshold=1, block_size=16, segment_size=32),
}
