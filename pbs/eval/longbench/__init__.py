"""LongBench v1 / LongBench-E / LongBench v2 (THUDM/LongBench), re-implemented from the published protocol.

- :mod:`.data`       records from the Hub, a local copy or the shipped ``fixtures/`` (invented records)
- :mod:`.prompts`    the verbatim prompts and maximum new tokens, the untemplated datasets
- :mod:`.metrics`    per-sample metrics (v1) and answer extraction (v2)
- :mod:`.scoring`    dataset scores, LongBench-E buckets, categories, Table 1's "Avg", v2 accuracy
- :mod:`.truncation` middle truncation of an over-long prompt (v1 and v2 rules)
- :mod:`.protocol`   LongBench v2's settings (decoding, seed, empty outputs, RAG)

The lm-eval tasks ``pbs_longbench*`` are in ``pbs/eval/tasks/longbench/``.
"""
