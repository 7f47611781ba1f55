"""The disk cache of generated RULER samples."""

import pytest

from pbs.eval.ruler import cache
from pbs.eval.ruler import generate as gen


def test_cache_round_trip_and_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("PBS_RULER_CACHE", str(tmp_path))
    first = cache.cached_generate("niah_single_1", 512, 2, 7, None)
    assert first == gen.generate("niah_single_1", 512, 2, 7)
    assert len(list(tmp_path.glob("*.json.gz"))) == 1

    def boom(*a, **k):
        raise AssertionError("regenerated instead of reading the cache")

    monkeypatch.setattr(gen, "generate", boom)
    assert cache.cached_generate("niah_single_1", 512, 2, 7, None) == first
    # any other key (seed, length, samples, task, tokenizer) misses the cache
    for args in [("niah_single_1", 512, 2, 8, None), ("niah_single_1", 1024, 2, 7, None),
                 ("niah_single_1", 512, 3, 7, None), ("vt", 512, 2, 7, None)]:
        with pytest.raises(AssertionError, match="regenerated"):
            cache.cached_generate(*args)
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    other = cache.cache_path("niah_single_1", 512, 2, 7, str(tok))
    assert other != cache.cache_path("niah_single_1", 512, 2, 7, None)
