"""Kernel benchmark: dense attention backends, our kernel vs FlexAttention on shared block masks, methods end to end.

Outside the ``pbs`` package: it times the library's public steps (``pbs.plan``, ``pbs.attend``,
``pbs.sparse_attention``) and its FlexAttention backend (``pbs.kernels.flex``), it re-implements none of them.
The Hydra app is ``experiments/bench_kernels.py`` (settings: :class:`benchmarks.config.BenchConfig`, extended by
``conf/bench_kernels.yaml``).

- :mod:`benchmarks.config`   the settings (a dataclass, the Hydra schema)
- :mod:`benchmarks.timing`   CUDA-event / perf_counter timing, peak memory, FLOPs
- :mod:`benchmarks.inputs`   structured synthetic q, k, v; random causal block plans
- :mod:`benchmarks.variants` dense variants (SDPA backends, FlexAttention causal, ours on every tile), FlexAttention
  on a prebuilt block mask
- :mod:`benchmarks.methods`  one method end to end with the paper's Table 7 breakdown
- :mod:`benchmarks.sections` the three sections over the sequence lengths -> rows
- :mod:`benchmarks.rows`     the row schema
- :mod:`benchmarks.targets`  the speed targets, evaluated from the rows
- :mod:`benchmarks.report`   CSV + Markdown results, console table
- :mod:`benchmarks.kernel_sweep` our kernel's launch variants against cuDNN on a GPU (a script)
- :mod:`benchmarks.tile_sweep` the planners' times on a GPU (a script)
- :mod:`benchmarks.speed`    the end-to-end prefill benchmark (time to first token on model architectures), the app
  ``experiments/speed.py``
"""
