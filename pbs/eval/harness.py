"""Run lm-eval tasks (LongBench v1/v2, the RULER-style suite, any lm-eval task) on a HF checkpoint with a
sparse-prefill method: :func:`evaluate`.

```python
from pbs.eval.harness import evaluate
out = evaluate("/models/Llama-3.1-8B-Instruct", method="pbs", method_kwargs={"threshold": 0.9},
               tasks=["pbs_longbench", "pbs_longbench_v2"], max_length=127500, dtype="bfloat16",
               data_dir="/data/longbench", v2_path="/data/longbench_v2.json")
out["scores"]["pbs_longbench_hotpotqa"]["score"], out["longbench"]["average"], out["density"]["mean"]
out["scores"]["pbs_longbench_v2"]["metrics"]["acc_hard"], out["prefill_ms"]["mean"], out["generations"][0]
```

``python -m pbs.eval.harness --model PATH --method pbs --method-kwargs threshold=0.9 --tasks pbs_longbench_hotpotqa
--limit 2 --out result.json`` does the same from a shell.

Task names: ours (``pbs_longbench_<dataset>``, ``pbs_longbench_<dataset>_e``, ``pbs_longbench_v2`` and its
``_cot`` / ``_no_context`` / ``_rag`` protocols, the groups ``pbs_longbench``,
``pbs_longbench_<single|multi|summarization|fewshot|synthetic|code>``, ``pbs_longbench_e``..., ``pbs_ruler`` and
``pbs_ruler_<task>``) read the shipped fixtures unless ``data`` / ``data_dir`` / ``v2_path`` (or ``"hub"``) say
otherwise; the RULER tasks generate their samples from ``ruler``. Every setting reaches the tasks as lm-eval task
metadata of this call. Any other lm-eval task name (e.g. lm-eval's own ``longbench_hotpotqa``,
``longbench2_govt_single``) is passed through and needs its data to be reachable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

from . import TASKS_DIR
from .longbench.protocol import V2_DECODINGS, V2Protocol
from .ruler.settings import RulerSettings
from .summaries import jsonable, summarize_results

_OWN_PREFIXES = ("pbs_longbench", "pbs_ruler")


def build_lm(model_path, method: str = "pbs", method_kwargs: dict | None = None, backend: str = "auto",
             max_length: int | None = None, device: str | None = None, dtype: str = "auto",
             apply_chat_template: bool = True, *, method_config=None, **model_kwargs):
    """The ``pbs`` lm-eval model (:class:`pbs.eval.lm_eval_model.PBSLM`) for a checkpoint path (or a loaded model).

    The method's settings: ``method_config`` (its config object, e.g. ``pbs.PBSConfig(threshold=0.9)``) or
    ``method_kwargs`` (its fields as a dict), not both. ``model_kwargs``: further PBSLM args (``max_length_v2``,
    ``seed``, ``chat_template_kwargs``, ``rope_scaling``, ``short_seq_policy``, HFLM's); None values are left out.
    """
    from .lm_eval_model import PBSLM

    if method_config is None and method_kwargs:
        from ..config import make_config
        from ..methods import get_method

        method_config = make_config(get_method(method).config_cls, dict(method_kwargs))
    elif method_kwargs:
        raise ValueError("pass the method's settings either as method_config or as method_kwargs, not both")
    if device is None:
        from ..devices import resolve_device

        device = str(resolve_device("auto"))
    kwargs = {k: v for k, v in model_kwargs.items() if v is not None}
    if max_length is not None:
        kwargs["max_length"] = int(max_length)
    return PBSLM(pretrained=model_path, method=method, backend=backend, device=device, dtype=dtype,
                 apply_chat_template=apply_chat_template, method_config=method_config, **kwargs)


def task_metadata(lm, data_dir=None, v2_path=None, v2: V2Protocol | None = None,
                  ruler: RulerSettings | None = None) -> dict:
    """The lm-eval task metadata of one evaluation: where LongBench reads its data, the v2 protocol, the RULER
    settings and the tokenizer that measures RULER's lengths (the evaluated model's)."""
    v2 = v2 or V2Protocol()
    ruler = ruler or RulerSettings()
    return {"data_dir": None if data_dir is None else str(data_dir),
            "v2_path": None if v2_path is None else str(v2_path),
            **v2.metadata(), **ruler.metadata(),
            "tokenizer": getattr(lm.tokenizer, "name_or_path", None) or None}


def evaluate(
    model_path,
    method: str = "pbs",
    method_kwargs: dict | None = None,
    tasks: Sequence[str] | str = ("pbs_longbench",),
    backend: str = "auto",
    max_length: int | None = None,
    limit: float | None = None,
    device: str | None = None,
    dtype: str = "auto",
    apply_chat_template: bool = True,
    *,
    method_config=None,
    data: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    v2_path: str | os.PathLike | None = None,
    v2: V2Protocol | dict | None = None,
    ruler: RulerSettings | dict | None = None,
    lm=None,
    model_kwargs: dict | None = None,
    bootstrap_iters: int = 0,
    log_samples: bool = True,
    include_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    include_defaults: bool | None = None,
) -> dict:
    """Evaluate ``model_path`` with ``method`` on lm-eval ``tasks``; returns a JSON-serialisable dict.

    ``method_config`` / ``method_kwargs``: the method's settings, as its config object or as a dict of its fields.
    ``max_length``: LongBench's prompt budget in tokens (middle truncation; e.g. 127500 for a 128K model).
    ``apply_chat_template``: the LongBench rule (template except trec/triviaqa/samsum/lsht/lcc/repobench-p).
    ``data``: where every task reads its records -- ``"fixtures"`` (the default), ``"hub"``, or a path (a v1
    folder with ``<dataset>.jsonl``; for v2 a ``.json``/``.jsonl`` file or a folder holding ``longbench_v2.json`` /
    ``data.json``). ``data_dir`` / ``v2_path`` override it for v1 / v2 separately.
    ``v2``: the LongBench v2 settings (:class:`V2Protocol` or its fields as a dict; default: the reference's,
    sampling seed 42). ``ruler``: the RULER-style suite's settings (:class:`RulerSettings` or its fields; default:
    its defaults); its lengths are measured with the evaluated model's tokenizer.
    ``lm``: an already-built :class:`pbs.eval.lm_eval_model.PBSLM` to reuse (its request log is cleared and its
    sampling seed set to ``v2.seed``).
    ``include_path``: more task folders; ``include_defaults``: index lm-eval's built-in tasks (default: only when a
    task name is not one of ours; indexing them takes ~15 s).
    ``model_kwargs``: more model args, e.g. ``max_length_v2`` (v2's budget), ``short_seq_policy``.

    Keys of the result:

    - ``scores``: {task: {"metric", "score", "n_samples", "metrics": {every metric}}}; v1 scores are 0-100 with 2
      decimals (``metric`` is the native one, e.g. ``qa_f1_score``; LongBench-E adds ``score_0_4k`` /
      ``score_4_8k`` / ``score_8k_plus``), v2 ``acc`` / ``acc_easy`` ... percent with 1 decimal;
    - ``per_length``: {task: {length: {"score", "n"}}} at every RULER length evaluated (0-100);
    - ``aggregate``: the run's headline score (:func:`pbs.eval.summaries.aggregate_score`: LongBench's "Avg", else
      the mean of the task scores) with ``per_length`` means over tasks;
    - ``groups``: lm-eval group aggregates ({group: {metric: value}});
    - ``longbench``: :func:`pbs.eval.longbench.scoring.summarize` of the v1 dataset scores present: category means,
      ``average`` (the mean of the category means: Table 1's "Avg"), ``dataset_mean``, ``n_datasets``;
    - ``longbench_v2``: per v2 task, ``acc`` .. ``acc_long``, ``n_scored`` and ``n_empty`` (``empty_outputs`` says
      whether the empty ones were dropped or counted wrong);
    - ``density``: ``mean`` over prefill requests, ``per_layer``, ``per_task`` (None for ``method="sdpa"``);
    - ``prefill_ms``: ``mean`` / ``total`` over requests, ``mean_warm`` (without the first request the model
      served, whose time includes Triton compilation), ``per_task``;
    - ``generations``: one row per (task, doc) with the prediction, references, per-sample metrics, density;
    - ``requests``: the model's per-request log; ``config``.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    tasks = list(tasks)
    v2 = v2 if isinstance(v2, V2Protocol) else V2Protocol(**(v2 or {}))
    ruler = ruler if isinstance(ruler, RulerSettings) else RulerSettings(**(ruler or {}))
    model_kwargs = dict(model_kwargs or {})
    if "seed" in model_kwargs:
        raise ValueError(f"the sampling seed is the v2 protocol's: pass v2={{'seed': {model_kwargs['seed']!r}}}, not "
                         "model_kwargs['seed']")
    if limit is not None and limit >= 1:
        limit = int(limit)
    if lm is None:
        lm = build_lm(model_path, method, method_kwargs, backend, max_length, device, dtype, apply_chat_template,
                      method_config=method_config, seed=v2.seed, **model_kwargs)
    lm.seed = v2.seed
    lm.request_log.clear()
    if include_defaults is None:
        include_defaults = any(not t.startswith(_OWN_PREFIXES) for t in tasks)
    paths = [str(TASKS_DIR)]
    if include_path is not None:
        extra = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
        paths += [str(p) for p in extra]
    metadata = task_metadata(lm, data_dir if data_dir is not None else data, v2_path if v2_path is not None else data,
                             v2, ruler)
    raw = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        limit=limit,
        task_manager=TaskManager(include_path=paths, include_defaults=include_defaults, metadata=metadata),
        log_samples=log_samples,
        apply_chat_template=False,  # the model applies the LongBench rule itself, after truncation
        bootstrap_iters=bootstrap_iters,
        gen_kwargs=v2.gen_kwargs(),
    )
    log = list(lm.request_log)
    return jsonable({
        **summarize_results(raw, log, v2, log_samples),
        "requests": log,
        "config": {
            "model": str(model_path),
            "method": lm.method,
            "method_kwargs": dict(lm.method_kwargs),
            "backend": lm.attn_backend,
            "max_length": max_length,
            "limit": limit,
            "device": str(lm.device),
            "dtype": str(dtype),
            "apply_chat_template": lm.apply_chat_template_longbench,
            "chat_template_kwargs": dict(lm.chat_template_kwargs),
            "max_length_v2": lm.max_length_v2,
            "rope_scaling": lm.rope_scaling,
            "seed": lm.seed,
            "v2": dataclasses.asdict(v2),
            "ruler": dataclasses.asdict(ruler) if any(t.startswith("pbs_ruler") for t in tasks) else None,
            "tasks": tasks,
            "data_dir": metadata["data_dir"],
            "v2_path": metadata["v2_path"],
            "lm_eval_version": getattr(lm_eval, "__version__", None),
        },
    })


def main(argv=None) -> int:
    from .model_args import parse_value

    ap = argparse.ArgumentParser(description="LongBench / RULER / lm-eval tasks with a sparse-prefill method")
    ap.add_argument("--model", required=True, help="checkpoint path or hub id")
    ap.add_argument("--method", default="pbs")
    ap.add_argument("--method-kwargs", default="", help="k=v,k=v (fields of the method's config)")
    ap.add_argument("--tasks", default="pbs_longbench")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--limit", type=float, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--no-chat-template", action="store_true")
    ap.add_argument("--data", default=None, help="fixtures | hub | path (all tasks)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--v2-path", default=None)
    ap.add_argument("--max-length-v2", type=int, default=None, help="LongBench v2 prompt budget")
    ap.add_argument("--seed", type=int, default=V2Protocol.seed, help="seed of sampled decoding (LongBench v2)")
    ap.add_argument("--v2-decoding", default="sample", choices=V2_DECODINGS)
    ap.add_argument("--v2-empty-outputs", default="drop", choices=("drop", "wrong"))
    ap.add_argument("--rag-top-n", type=int, default=None)
    ap.add_argument("--ruler-lengths", default=None, help="RULER lengths in tokens, e.g. 4096,8192")
    ap.add_argument("--ruler-samples", type=int, default=RulerSettings.samples)
    ap.add_argument("--out", default=None, help="write the result JSON here")
    args = ap.parse_args(argv)
    kwargs = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.method_kwargs.split(",") if kv)}
    ruler = {"samples": args.ruler_samples, "seed": args.seed}
    if args.ruler_lengths:
        ruler["lengths"] = args.ruler_lengths
    out = evaluate(args.model, args.method, kwargs, args.tasks, args.backend, args.max_length, args.limit, args.device,
                   args.dtype, not args.no_chat_template, data=args.data, data_dir=args.data_dir,
                   v2_path=args.v2_path, model_kwargs={"max_length_v2": args.max_length_v2},
                   v2={"decoding": args.v2_decoding, "empty_outputs": args.v2_empty_outputs,
                       "rag_top_n": args.rag_top_n, "seed": args.seed}, ruler=ruler)
    text = json.dumps(out, indent=1, ensure_ascii=False)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    summary = {"scores": {t: {"metric": e["metric"], "score": e["score"]} for t, e in out["scores"].items()},
               "longbench": out["longbench"], "density": out["density"]["mean"],
               "prefill_ms": out["prefill_ms"]["mean"]}
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
