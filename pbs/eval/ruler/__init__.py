"""RULER-style synthetic long-context suite (offline): settings in :mod:`pbs.eval.ruler.settings`, generators and
scoring in :mod:`pbs.eval.ruler.generate` (``generate``, ``generate_sample``, ``score``, ``string_match_all`` /
``string_match_part``), the sample cache in :mod:`pbs.eval.ruler.cache`, the haystack corpus in
``data/kjv.txt.gz`` (``scripts/make_corpus.py``), lm-eval tasks ``pbs_ruler_*`` in ``pbs/eval/tasks/ruler/``."""
