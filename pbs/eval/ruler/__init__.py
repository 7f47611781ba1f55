"""RULER-style synthetic long-context suite (offline): generators and scoring in :mod:`pbs.eval.ruler.generate`
(``generate``, ``generate_sample``, ``score``, ``string_match_all`` / ``string_match_part``), the haystack corpus
in ``data/kjv.txt.gz`` (``scripts/make_corpus.py``), lm-eval tasks ``pbs_ruler_*`` in ``pbs/eval/tasks/ruler/``."""
