"""Evaluation of the sparse-prefill methods on long-context benchmarks, through lm-evaluation-harness.

- :mod:`pbs.eval.config`        the evaluation app's settings (dataclasses; Hydra schemas)
- :mod:`pbs.eval.job`           one job of the Hydra app: checks, model, skip-if-done, evaluate, store, wandb;
  :mod:`pbs.eval.identity` (code, model and data identity in the run id), :mod:`pbs.eval.claims` (who computes a
  run: concurrent sweeps, killed jobs), :mod:`pbs.eval.logs` (quiet by default)
- :mod:`pbs.eval.harness`       :func:`~pbs.eval.harness.evaluate`: lm-eval with our model and tasks (imports lm_eval
  when called); :mod:`pbs.eval.summaries` turns its raw output into scores, density, prefill time
- :mod:`pbs.eval.lm_eval_model` the lm-eval model ``pbs`` (imports lm_eval); :mod:`pbs.eval.loglikelihood` (its
  loglikelihood requests), :mod:`pbs.eval.decoding` (greedy / sampled next token), :mod:`pbs.eval.model_args` (model
  args from strings, the method's config from them, RoPE scaling)
- :mod:`pbs.eval.results`       the results store (one folder per run, the index); :mod:`pbs.eval.report` its tables
- :mod:`pbs.eval.longbench`     LongBench v1 / v2: data, prompts, metrics, scoring, truncation, the v2 protocol
- :mod:`pbs.eval.ruler`         the RULER-style suite: settings, generators, the sample cache, the KJV corpus
- ``pbs/eval/tasks/``           the lm-eval tasks (``TASKS_DIR``): ``longbench/`` (``pbs_longbench*``),
  ``ruler/`` (``pbs_ruler*``)
- :mod:`pbs.eval.tiny_model`    a tiny random Llama for tests

Nothing here is imported by ``import pbs``; this package imports no lm_eval / transformers at import time.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

__all__ = ["TASKS_DIR"]
