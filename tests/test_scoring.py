"""Block scorers against direct recomputation in the test."""

import math

import pytest
import torch

from pbs.scoring import antidiagonal_block_probs, causal_blocks, mean_pooled_block_probs, pooled_queries


@pytest.mark.parametrize("nq,nk,bs", [(5, 40, 16), (30, 40, 16), (40, 40, 16), (3, 35, 16), (17, 17, 16)])
def test_pooled_queries_average_real_rows_of_absolute_blocks(nq, nk, bs):
    q = torch.randn(1, 2, nq, 4, dtype=torch.float64)
    off = nk - nq
    expected = []
    for r in range(off // bs, -(-nk // bs)):
        lo, hi = max(r * bs, off) - off, min((r + 1) * bs, nk) - off
        expected.append(q[:, :, lo:hi].mean(2))
    assert torch.allclose(pooled_queries(q, None, nk, bs).double(), torch.stack(expected, 2), atol=1e-6)


def test_mean_pooled_probs_are_softmax_of_pooled_logits_over_allowed():
    q, k = torch.randn(1, 4, 64, 8), torch.randn(1, 2, 64, 8)
    allowed = causal_blocks(64, 64, 16)
    probs = mean_pooled_block_probs(q, k, allowed, 16, 0.5)
    pq = q.double().view(1, 4, 4, 16, 8).mean(3)
    pk = k.double().repeat_interleave(2, 1).view(1, 4, 4, 16, 8).mean(3)
    logits = (pq @ pk.transpose(-1, -2) * 0.5).masked_fill(~allowed, -math.inf)
    assert torch.allclose(probs.double(), torch.softmax(logits, -1), atol=1e-6)


def test_antidiagonal_sums_the_antidiagonals_of_each_tile():
    """Stride 4, block 8: each tile's score is the softmax mass of the 4x4 antidiagonal sums inside it."""
    torch.manual_seed(0)
    n, bs, s = 32, 8, 4
    q, k = torch.randn(1, 1, n, 8), torch.randn(1, 1, n, 8)
    allowed = causal_blocks(n, n, bs)
    got = antidiagonal_block_probs(q, k, allowed, bs, s, scale=0.3, token_causal=True)
    full = q[0, 0].double() @ k[0, 0].double().T  # (n, n)
    rows = n // s
    anti = torch.zeros(rows, rows, dtype=torch.float64)
    for i in range(rows):
        for j in range(rows):
            anti[i, j] = sum(full[i * s + (s - 1 - r), j * s + r] for r in range(s))
    logits = (anti * 0.3 / s).masked_fill(torch.arange(rows)[None, :] > torch.arange(rows)[:, None], -math.inf)
    probs = torch.softmax(logits, -1)
    per = bs // s
    tiles = probs.view(n // bs, per, n // bs, per).sum(dim=(1, 3))
    tiles = tiles / tiles.sum(-1, keepdim=True)
    assert torch.allclose(got[0, 0].double(), tiles, atol=1e-5)
