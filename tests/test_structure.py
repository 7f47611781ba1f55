"""pbs.structure against brute-force float64 references (entry by entry) and hand-computed cases."""

import math

import pytest
import torch

from pbs.structure import CLASSES, StructureConfig, attention_structure, block_attention_mass


def _probs64(q, k, scale):
    """(Nq, Nk) causal softmax in float64, queries at the last Nq positions."""
    nq, nk = q.shape[0], k.shape[0]
    logits = (q.double() @ k.double().T) * scale
    rows = torch.arange(nq)[:, None] + (nk - nq)
    logits[torch.arange(nk)[None, :] > rows] = -math.inf
    return torch.softmax(logits, -1)


def _brute_shares(p, nk, cfg):
    """The classification rule, entry by entry in Python."""
    nq = p.shape[0]
    n_vert = max(1, math.ceil(cfg.vertical_fraction * nk))
    n_slash = max(1, math.ceil(cfg.slash_fraction * nk))

    def base(i, j):
        if j < cfg.sink_tokens:
            return "sink"
        if 0 <= i - j < cfg.local_window:
            return "local"
        return None

    col = [0.0] * nk
    for r in range(nq):
        i = r + nk - nq
        for j in range(i + 1):
            if base(i, j) is None:
                col[j] += p[r, j].item()
    vertical = set(sorted(range(nk), key=lambda j: -col[j])[:n_vert])
    diag = [0.0] * nk
    for r in range(nq):
        i = r + nk - nq
        for j in range(i + 1):
            if base(i, j) is None and j not in vertical:
                diag[i - j] += p[r, j].item()
    slash = set(sorted(range(nk), key=lambda o: -diag[o])[:n_slash])
    sums = dict.fromkeys(CLASSES, 0.0)
    for r in range(nq):
        i = r + nk - nq
        for j in range(i + 1):
            c = base(i, j) or ("vertical" if j in vertical else "slash" if (i - j) in slash else "other")
            sums[c] += p[r, j].item()
    return {c: s / nq for c, s in sums.items()}


@pytest.mark.parametrize("nq,nk,hq,hkv", [(48, 48, 2, 1), (20, 48, 4, 2)])
def test_shares_match_the_entry_by_entry_rule(nq, nk, hq, hkv):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, hq, nq, 8, generator=gen) * 2
    k = torch.randn(1, hkv, nk, 8, generator=gen) * 2
    cfg = StructureConfig(sink_tokens=2, local_window=5, vertical_fraction=0.05, slash_fraction=0.1, query_chunk=7)
    got = attention_structure(q, k, cfg)
    assert int(got["vertical_count"]) == 3 and int(got["slash_count"]) == 5
    for h in range(hq):
        want = _brute_shares(_probs64(q[0, h], k[0, h // (hq // hkv)], 8**-0.5), nk, cfg)
        for c in CLASSES:
            assert got[c][0, h].item() == pytest.approx(want[c], abs=1e-5), (h, c)
        assert sum(got[c][0, h].item() for c in CLASSES) == pytest.approx(1.0, abs=1e-6)


def test_uniform_attention_by_hand():
    # q = 0: every causal row is uniform, row i gives 1/(i+1) to each key; sink = first 2 keys
    n = 10
    q, k = torch.zeros(1, 1, n, 4), torch.randn(1, 1, n, 4)
    cfg = StructureConfig(sink_tokens=2, local_window=3, vertical_fraction=0.0, slash_fraction=0.0)
    got = attention_structure(q, k, cfg)
    sink = sum(min(i + 1, 2) / (i + 1) for i in range(n)) / n
    local = sum(len([j for j in range(max(0, i - 2), i + 1) if j >= 2]) / (i + 1) for i in range(n)) / n
    assert got["sink"].item() == pytest.approx(sink, abs=1e-6)
    assert got["local"].item() == pytest.approx(local, abs=1e-6)
    assert got["vertical"].item() == 0 and got["slash"].item() == 0
    assert got["other"].item() == pytest.approx(1 - sink - local, abs=1e-6)


def test_a_planted_sink_takes_the_mass():
    n, d = 64, 16
    k = torch.randn(1, 1, n, d) * 0.1
    k[0, 0, 0] = 10.0
    q = torch.ones(1, 1, n, d)
    got = attention_structure(q, k, StructureConfig(sink_tokens=1, local_window=1))
    assert got["sink"].item() > 0.97


def test_block_mass_matches_dense_probabilities_with_and_without_permutation():
    gen = torch.Generator().manual_seed(1)
    nq, nk, bs = 30, 37, 8
    q, k = torch.randn(nq, 16, generator=gen), torch.randn(nk, 16, generator=gen)
    p = _probs64(q, k, 0.25)
    perm = torch.randperm(nk, generator=gen)
    for key_perm in (None, perm):
        got = block_attention_mass(q, k, bs, key_perm=key_perm, scale=0.25, query_chunk=11)
        slots = torch.arange(nk) if key_perm is None else torch.argsort(perm)  # original key -> permuted slot
        want = torch.zeros(-(-nq // bs), -(-nk // bs), dtype=torch.float64)
        for r in range(nq):
            for j in range(nk):
                want[r // bs, slots[j] // bs] += p[r, j]
        want /= torch.tensor([min(bs, nq - i * bs) for i in range(want.shape[0])], dtype=torch.float64)[:, None]
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(got.sum(1), torch.ones(want.shape[0], dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kwargs,name", [({"sink_tokens": -1}, "sink_tokens"), ({"query_chunk": 0}, "query_chunk"),
                                         ({"vertical_fraction": 1.5}, "vertical_fraction"),
                                         ({"slash_fraction": -0.1}, "slash_fraction")])
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        StructureConfig(**kwargs)


def test_bad_shapes_name_the_arguments():
    with pytest.raises(ValueError, match="k.shape"):
        attention_structure(torch.zeros(1, 3, 4, 8), torch.zeros(1, 2, 4, 8))
    with pytest.raises(ValueError, match="Nq=5"):
        attention_structure(torch.zeros(1, 1, 5, 8), torch.zeros(1, 1, 4, 8))
    with pytest.raises(ValueError, match="block_size"):
        block_attention_mass(torch.zeros(4, 8), torch.zeros(4, 8), 0)
    with pytest.raises(ValueError, match="key_perm"):
        block_attention_mass(torch.zeros(4, 8), torch.zeros(4, 8), 2, key_perm=torch.arange(3))
