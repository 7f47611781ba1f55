"""No method lets a query see the future: a huge change to V after position t leaves outputs at positions <= t."""

import pytest
import torch

import pbs
from pbs.synthetic import structured_qkv

SETTINGS = [
    ("full", {}),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.5, permute="key")),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.5, permute="query")),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.5, permute="key+query")),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.5, permute="none")),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.5, scoring="antidiagonal", stride=4)),
    ("pbs", dict(block_size=16, segment_size=64, threshold=1, permute="key", share_permutation="kv_head")),
    ("meanpool", dict(block_size=16, threshold=0.5)),
    ("xattention", dict(block_size=16, stride=4, threshold=0.5, chunk_size=128)),
    ("xattention", dict(block_size=16, stride=4, threshold=0.5, accounting="corrected")),
    ("minference", dict(block_size=16, vertical_size=40, slash_size=60)),
    ("minference", dict(block_size=16, vertical_size=40, slash_size=60, slash_layout="aligned")),
    ("flexprefill", dict(block_size=16, gamma=0.9)),
    ("flexprefill", dict(block_size=16, gamma=0.9, tau=1, query_mean="real", include_crossing_tile=True)),
    ("oracle", dict(block_size=16, segment_size=32, threshold=0.5, permute="key")),
    ("oracle", dict(block_size=16, segment_size=32, threshold=0.5, permute="none")),
]


@pytest.mark.parametrize("method,kwargs", SETTINGS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(SETTINGS)])
@pytest.mark.parametrize("nq,nk", [(333, 333), (150, 333)])
def test_future_values_do_not_leak(method, kwargs, nq, nk):
    q, k, v = structured_qkv(1, 8, 2, nk, 32, seed=3)
    q = q[:, :, nk - nq :]
    out = pbs.sparse_attention(q, k, v, method=method, **kwargs)
    for t in (40, 200, 290):  # absolute positions, inside and across segments
        v_future = v.clone()
        v_future[:, :, t + 1 :] += 1e4
        out_future = pbs.sparse_attention(q, k, v_future, method=method, **kwargs)
        rows = torch.arange(nq) + (nk - nq) <= t
        assert torch.equal(out[:, :, rows], out_future[:, :, rows]), f"leak at t={t}"
        if rows.sum() < nq:  # the perturbation is visible to later queries, so the check has teeth
            assert not torch.equal(out[:, :, ~rows], out_future[:, :, ~rows])
