"""Run LongBench (or any lm-eval task) on a HF checkpoint with a sparse-prefill method.

```python
from pbs.eval.run import evaluate
out = evaluate("/models/Llama-3.1-8B-Instruct", method="pbs", method_kwargs={"threshold": 0.9},
               tasks=["pbs_longbench", "pbs_longbench_v2"], max_length=127500, dtype="bfloat16",
               data_dir="/data/longbench", v2_path="/data/longbench_v2.json")
out["scores"]["pbs_longbench_hotpotqa"]["score"], out["longbench"]["average"], out["density"]["mean"]
out["scores"]["pbs_longbench_v2"]["metrics"]["acc_hard"], out["prefill_ms"]["mean"], out["generations"][0]
```

``python -m pbs.eval.run --model PATH --method pbs --method-kwargs threshold=0.9 --tasks pbs_longbench_hotpotqa
--limit 2 --out result.json`` does the same from a shell.

Task names: ours (``pbs_longbench_<dataset>``, ``pbs_longbench_<dataset>_e``, ``pbs_longbench_v2`` and its
``_cot`` / ``_no_context`` / ``_rag`` protocols, the groups
``pbs_longbench``, ``pbs_longbench_<single|multi|summarization|fewshot|synthetic|code>``, ``pbs_longbench_e``...)
read the shipped fixtures unless ``data_dir`` / ``v2_path`` (or ``$PBS_LONGBENCH_DIR`` / ``$PBS_LONGBENCH_V2``, or
``"hub"``) says otherwise. Any other lm-eval task name (e.g. lm-eval's own ``longbench_hotpotqa``,
``longbench2_govt_single``) is passed through and needs its data to be reachable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .decoding import Sampling
from .metrics import check_empty_outputs
from .prompts import V2_TEMPERATURE

from . import TASKS_DIR

_OWN_PREFIX = "pbs_longbench"
V2_DECODINGS = ("sample", "greedy")


@dataclass(frozen=True)
class V2Protocol:
    """LongBench v2 settings (defaults: the reference's ``pred.py`` / ``result.py``).

    ``decoding``: ``"sample"`` (temperature ``temperature``, top-p ``top_p``; seeded per request by the model's
    ``seed``) or ``"greedy"``; ``empty_outputs``: ``"drop"`` an empty generation from the denominators or count it
    ``"wrong"``; ``rag_top_n``: retrieved chunks per question for ``pbs_longbench_v2_rag`` (the official ``--rag N``).
    """

    decoding: str = "sample"
    temperature: float = V2_TEMPERATURE
    top_p: float = 1.0
    empty_outputs: str = "drop"
    rag_top_n: int | None = None

    def __post_init__(self) -> None:
        if self.decoding not in V2_DECODINGS:
            raise ValueError(f"decoding must be one of {V2_DECODINGS}, got decoding={self.decoding!r}")
        Sampling(self.temperature, self.top_p)  # validates both
        check_empty_outputs(self.empty_outputs)
        if self.rag_top_n is not None and (isinstance(self.rag_top_n, bool) or not isinstance(self.rag_top_n, int)
                                           or self.rag_top_n < 1):
            raise ValueError(f"rag_top_n must be an integer >= 1 or None, got rag_top_n={self.rag_top_n!r}")

    def gen_kwargs(self) -> dict | None:
        """lm-eval ``gen_kwargs`` for every task: only tasks that sample (v2) are affected -- greedy tasks ignore a
        temperature, and ``do_sample=False`` turns the v2 tasks greedy."""
        if self.decoding == "greedy":
            return {"do_sample": False}
        if (self.temperature, self.top_p) != (V2_TEMPERATURE, 1.0):
            return {"temperature": self.temperature, "top_p": self.top_p}
        return None

    def metadata(self) -> dict:
        out: dict = {"v2_empty_outputs": self.empty_outputs}
        if self.rag_top_n is not None:
            out["rag_top_n"] = self.rag_top_n
        return out


def _clean_metrics(d: dict) -> dict:
    """lm-eval result keys ``"score,none"`` -> ``"score"``; stderr entries and aliases dropped."""
    out = {}
    for key, value in d.items():
        if key in ("alias", "name", "samples") or "_stderr" in key:
            continue
        out[key.split(",")[0]] = value
    return out


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def _density_summary(log: list[dict]) -> dict:
    per_task: dict[str, list[dict]] = defaultdict(list)
    for rec in log:
        per_task[rec["task"]].append(rec)

    def layer_mean(recs):
        acc: dict[Any, list[float]] = defaultdict(list)
        for r in recs:
            for layer, dens in (r.get("per_layer_density") or {}).items():
                if dens is not None:
                    acc[layer].append(dens)
        return {layer: sum(v) / len(v) for layer, v in acc.items()} or None

    return {
        "mean": _mean(r.get("density") for r in log),
        "per_layer": layer_mean(log),
        "per_task": {t: _mean(r.get("density") for r in recs) for t, recs in per_task.items()},
    }


def _prefill_summary(log: list[dict]) -> dict:
    """Prefill milliseconds: ``mean`` / ``total`` over requests and the same per task (+ prompt sizes)."""
    per_task: dict[str, list[dict]] = defaultdict(list)
    for rec in log:
        per_task[rec["task"]].append(rec)
    ms = [1000.0 * r["prefill_s"] for r in log]
    warm = [1000.0 * r["prefill_s"] for r in log if r.get("index", 1) != 0]
    return {
        "mean": sum(ms) / len(ms) if ms else None,
        "mean_warm": sum(warm) / len(warm) if warm else None,  # without the model's first request (JIT compile)
        "total": sum(ms),
        "per_task": {
            t: {
                "requests": len(recs),
                "mean": 1000.0 * sum(r["prefill_s"] for r in recs) / len(recs),
                "total": 1000.0 * sum(r["prefill_s"] for r in recs),
                "mean_prompt_tokens": sum(r["prompt_tokens"] for r in recs) / len(recs),
                "truncated": sum(bool(r["truncated"]) for r in recs),
            }
            for t, recs in per_task.items()
        },
    }


_DOC_KEYS = ("_id", "answers", "all_classes", "length", "dataset", "language", "answer", "difficulty", "domain",
             "sub_domain")


def _generations(lm_samples: dict, log: list[dict]) -> list[dict]:
    """One row per (task, doc): ids, references, prediction, per-sample metrics, prompt size, prefill, density."""
    by_doc: dict[tuple, list[dict]] = defaultdict(list)
    for rec in log:
        by_doc[(rec["task"], rec["doc_id"])].append(rec)
    rows = []
    for task, entries in (lm_samples or {}).items():
        for e in entries:
            doc = e.get("doc") or {}
            filtered = e.get("filtered_resps")
            pred = filtered[0] if isinstance(filtered, list) and filtered else filtered
            row = {"task": task, "doc_id": e.get("doc_id")}
            row.update({k: doc[k] for k in _DOC_KEYS if k in doc})
            row["prediction"] = pred
            for m in e.get("metrics", []):
                if m in e:
                    row[m] = e[m]
            recs = by_doc.get((task, e.get("doc_id")), [])
            if recs:
                row["prompt_tokens"] = recs[0]["prompt_tokens"]
                row["truncated"] = recs[0]["truncated"]
                row["templated"] = recs[0]["templated"]
                row["prefill_ms"] = 1000.0 * sum(r["prefill_s"] for r in recs)
                row["density"] = _mean(r.get("density") for r in recs)
                cot = [r["generation"] for r in recs if r.get("stage") == "cot"]
                if cot:
                    row["response_cot"] = cot[0]
            rows.append(row)
    return rows


_PRIMARY_FIRST = ("score", "acc", "acc_norm", "exact_match")
_V2_KEYS = ("acc", "acc_easy", "acc_hard", "acc_short", "acc_medium", "acc_long", "n_scored", "n_empty")


def _task_entry(metrics: dict, n_samples) -> dict:
    """``{"metric": primary metric name, "score": its value, "n_samples": n, "metrics": {all}}``.

    The primary metric of a LongBench v1 task is its native metric (``qa_f1_score``...; equal to ``score``), of v2
    ``acc``; otherwise the first of score/acc/acc_norm/exact_match present, else the first metric.
    """
    values = {k: v for k, v in metrics.items() if k != "sample_len"}
    native = [k for k in values if k != "score" and k.endswith("_score")]
    if "score" in values and native:
        name, key = native[0], "score"
    else:
        key = next((k for k in _PRIMARY_FIRST if k in values), next(iter(values), None))
        name = key
    return {"metric": name, "score": values.get(key), "n_samples": n_samples, "metrics": values}


def build_lm(model_path, method: str = "pbs", method_kwargs: dict | None = None, backend: str = "auto",
             max_length: int | None = None, device: str | None = None, dtype: str = "auto",
             apply_chat_template: bool = True, **model_kwargs):
    """The ``pbs`` lm-eval model (:class:`pbs.eval.lm.PBSLM`) for a checkpoint path (or a loaded model).

    ``model_kwargs``: further :class:`~pbs.eval.lm.PBSLM` args (``max_length_v2``, ``seed``, ``chat_template_kwargs``,
    ``rope_scaling``, ``short_seq_policy``, HFLM's); None values are left out.
    """
    import torch

    from .lm import PBSLM

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = {k: v for k, v in model_kwargs.items() if v is not None}
    if max_length is not None:
        kwargs["max_length"] = int(max_length)
    return PBSLM(pretrained=model_path, method=method, backend=backend, device=device, dtype=dtype,
                 apply_chat_template=apply_chat_template, **kwargs, **(method_kwargs or {}))


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
    data: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    v2_path: str | os.PathLike | None = None,
    lm=None,
    model_kwargs: dict | None = None,
    bootstrap_iters: int = 0,
    log_samples: bool = True,
    include_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    include_defaults: bool | None = None,
    v2: V2Protocol | dict | None = None,
) -> dict:
    """Evaluate ``model_path`` with ``method`` on lm-eval ``tasks``; returns a JSON-serialisable dict.

    ``max_length``: LongBench's prompt budget in tokens (middle truncation; e.g. 127500 for a 128K model).
    ``apply_chat_template``: the LongBench rule (template except trec/triviaqa/samsum/lsht/lcc/repobench-p).
    ``data``: where every task reads its records -- ``"fixtures"`` (the default), ``"hub"``, or a path (a v1
    folder with ``<dataset>.jsonl``; for v2 a ``.json``/``.jsonl`` file or a folder holding ``longbench_v2.json`` /
    ``data.json``). ``data_dir`` / ``v2_path`` override it for v1 / v2 separately.
    ``lm``: an already-built :class:`pbs.eval.lm.PBSLM` to reuse (its request log is cleared first).
    ``include_path``: more task folders; ``include_defaults``: index lm-eval's built-in tasks (default: only when a
    task name does not start with ``pbs_longbench``; indexing them takes ~15 s).
    ``v2``: the LongBench v2 settings (:class:`V2Protocol` or its fields as a dict; default: the reference's).
    ``model_kwargs``: more model args, e.g. ``max_length_v2`` (v2's budget), ``seed`` (sampled decoding).

    Keys of the result:

    - ``scores``: {task: {"metric", "score", "n_samples", "metrics": {every metric}}}; v1 scores are 0-100 with 2
      decimals (``metric`` is the native one, e.g. ``qa_f1_score``; LongBench-E adds ``score_0_4k`` /
      ``score_4_8k`` / ``score_8k_plus``), v2 ``acc`` / ``acc_easy`` ... percent with 1 decimal;
    - ``groups``: lm-eval group aggregates ({group: {metric: value}});
    - ``longbench``: :func:`pbs.eval.metrics.summarize` of the v1 dataset scores present: category means,
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

    from .metrics import base_dataset, summarize

    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    tasks = list(tasks)
    v2 = v2 if isinstance(v2, V2Protocol) else V2Protocol(**(v2 or {}))
    if lm is None:
        lm = build_lm(model_path, method, method_kwargs, backend, max_length, device, dtype, apply_chat_template,
                      **(model_kwargs or {}))
    lm.request_log.clear()
    if include_defaults is None:
        include_defaults = any(not t.startswith((_OWN_PREFIX, "pbs_ruler")) for t in tasks)
    paths = [str(TASKS_DIR)]
    if include_path is not None:
        extra = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
        paths += [str(p) for p in extra]
    if data_dir is None and data is not None:
        data_dir = data
    if v2_path is None and data is not None:
        v2_path = data
    metadata = {"data_dir": None if data_dir is None else str(data_dir),
                "v2_path": None if v2_path is None else str(v2_path), **v2.metadata()}
    tm = TaskManager(include_path=paths, include_defaults=include_defaults, metadata=metadata)
    raw = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        limit=limit,
        task_manager=tm,
        log_samples=log_samples,
        apply_chat_template=False,  # the model applies the LongBench rule itself, after truncation
        bootstrap_iters=bootstrap_iters,
        gen_kwargs=v2.gen_kwargs(),
    )
    group_names = set((raw or {}).get("groups", {}))
    n_samples = {t: (v or {}).get("effective") for t, v in raw.get("n-samples", {}).items()}
    scores = {t: _task_entry(_clean_metrics(m), n_samples.get(t)) for t, m in raw["results"].items()
              if t not in group_names}
    groups = {g: _clean_metrics(m) for g, m in raw.get("groups", {}).items()}
    v1 = {}
    for task, entry in scores.items():
        if task.startswith(_OWN_PREFIX + "_") and not task.startswith(_OWN_PREFIX + "_v2"):
            name = task[len(_OWN_PREFIX) + 1:]
            if not name.endswith("_e") and entry["score"] is not None:  # the native metric (= "score")
                v1[base_dataset(name)] = entry["score"]
    v2_summary = {
        task: dict({k: entry["metrics"].get(k) for k in _V2_KEYS}, empty_outputs=v2.empty_outputs)
        for task, entry in scores.items() if task.startswith(_OWN_PREFIX + "_v2")
    }
    log = list(lm.request_log)
    return _jsonable({
        "scores": scores,
        "groups": groups,
        "longbench": summarize(v1) if v1 else {},
        "longbench_v2": v2_summary,
        "density": _density_summary(log),
        "prefill_ms": _prefill_summary(log),
        "generations": _generations(raw.get("samples"), log) if log_samples else [],
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
            "v2": asdict(v2),
            "tasks": tasks,
            "data_dir": metadata["data_dir"],
            "v2_path": metadata["v2_path"],
            "lm_eval_version": getattr(lm_eval, "__version__", None),
        },
    })


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (str, int, float, bool)) and k is not None else k: _jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


def main(argv=None) -> int:
    from .lm import parse_value

    ap = argparse.ArgumentParser(description="LongBench / lm-eval tasks with a sparse-prefill method")
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
    ap.add_argument("--seed", type=int, default=42, help="seed of sampled decoding (LongBench v2)")
    ap.add_argument("--v2-decoding", default="sample", choices=V2_DECODINGS)
    ap.add_argument("--v2-empty-outputs", default="drop", choices=("drop", "wrong"))
    ap.add_argument("--rag-top-n", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the result JSON here")
    args = ap.parse_args(argv)
    kwargs = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.method_kwargs.split(",") if kv)}
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    out = evaluate(args.model, args.method, kwargs, args.tasks, args.backend, args.max_length, limit, args.device,
                   args.dtype, not args.no_chat_template, data=args.data, data_dir=args.data_dir,
                   v2_path=args.v2_path, model_kwargs={"max_length_v2": args.max_length_v2, "seed": args.seed},
                   v2={"decoding": args.v2_decoding, "empty_outputs": args.v2_empty_outputs,
                       "rag_top_n": args.rag_top_n})
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
