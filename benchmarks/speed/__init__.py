"""End-to-end prefill speed: time to first token of real model architectures per SDPA backend and method.

The Hydra app is ``experiments/speed.py`` (settings: :class:`benchmarks.speed.config.SpeedConfig`, extended by
``conf/speed.yaml``); ``make bench-speed`` runs it. It times ``pbs.hf.enable``-d transformers models, it re-implements
none of the methods.

- :mod:`benchmarks.speed.config`  the settings: models, run order (stages), the two density regimes, protocol, budget
- :mod:`benchmarks.speed.models`  models from an architecture JSON (random weights, built on the device) or weights;
  prompts
- :mod:`benchmarks.speed.runs`    the runs in order; the predicted H200 seconds (budget, ``dry_run``)
- :mod:`benchmarks.speed.probe`   attention and planning time inside a forward, from CUDA events (no synchronisation)
- :mod:`benchmarks.speed.sweep`   the sweep: build, enable, warm up, time, record (failures too), write after each run
- :mod:`benchmarks.speed.results` the row schema, the CSV (atomic, merged), speedups, the console summary
- :mod:`benchmarks.speed.report`  the Markdown report and plots from the CSV; the paper's Table 7 layout from the
  kernel benchmark's CSV
- :mod:`benchmarks.speed.paper`   the paper's speed numbers (H100, FlashAttention-2 baseline), shown beside ours
"""
