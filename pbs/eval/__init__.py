"""LongBench v1 / v2 evaluation of the sparse-prefill methods through lm-evaluation-harness.

- :mod:`pbs.eval.metrics`  -- LongBench scoring (v1, LongBench-E buckets, v2 answer extraction and accuracy)
- :mod:`pbs.eval.prompts`  -- the verbatim prompts, max new tokens, untemplated tasks
- :mod:`pbs.eval.data`     -- records from the Hub or a local copy; shipped fixtures
- :mod:`pbs.eval.lm`       -- the lm-eval model ``pbs`` (imports lm_eval)
- :mod:`pbs.eval.run`      -- :func:`pbs.eval.run.evaluate` (imports lm_eval when called)
- ``pbs/eval/tasks/``      -- the ``pbs_longbench*`` lm-eval tasks (``TASKS_DIR``)

Nothing here is imported by ``import pbs``; this package imports no lm_eval / transformers at import time.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

__all__ = ["TASKS_DIR"]
