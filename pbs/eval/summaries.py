"""An evaluation's result from lm-eval's raw output and the model's request log: per-task scores, per-length scores
(the RULER suite, every length), lm-eval's group scores, LongBench's category means and "Avg", v2 accuracy, the run's
aggregate score, density and prefill time, one row per generation."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from .longbench.protocol import V2Protocol
from .longbench.scoring import base_dataset, summarize

_OWN_PREFIX = "pbs_longbench"


def summarize_results(raw: dict, log: list[dict], v2: V2Protocol, log_samples: bool = True) -> dict:
    """``scores``, ``per_length``, ``groups``, ``longbench``, ``longbench_v2``, ``aggregate``, ``density``,
    ``prefill_ms``, ``generations`` (see :func:`pbs.eval.harness.evaluate`)."""
    group_names = set((raw or {}).get("groups", {}))
    n_samples = {t: (v or {}).get("effective") for t, v in raw.get("n-samples", {}).items()}
    scores = {t: _task_entry(_clean_metrics(m), n_samples.get(t)) for t, m in raw["results"].items()
              if t not in group_names}
    v1 = {}
    for task, entry in scores.items():
        if task.startswith(_OWN_PREFIX + "_") and not task.startswith(_OWN_PREFIX + "_v2"):
            name = task[len(_OWN_PREFIX) + 1:]
            if not name.endswith("_e") and entry["score"] is not None:  # the native metric (= "score")
                v1[base_dataset(name)] = entry["score"]
    generations = _generations(raw.get("samples"), log) if log_samples else []
    out = {
        "scores": scores,
        "per_length": per_length_scores(generations),
        "groups": {g: _clean_metrics(m) for g, m in raw.get("groups", {}).items()},
        "longbench": summarize(v1) if v1 else {},
        "longbench_v2": {task: dict({k: entry["metrics"].get(k) for k in _V2_KEYS}, empty_outputs=v2.empty_outputs)
                         for task, entry in scores.items() if task.startswith(_OWN_PREFIX + "_v2")},
        "density": _density_summary(log),
        "prefill_ms": _prefill_summary(log),
        "generations": generations,
    }
    out["aggregate"] = aggregate_score(out)
    return out


def per_length_scores(generations: list[dict]) -> dict:
    """{task: {length: {"score": 0-100, "n"}}} for tasks whose samples have a target length (``max_length``: the
    RULER suite), at every length evaluated."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for g in generations:
        if g.get("max_length") is not None and g.get("score") is not None:
            acc[g["task"]][int(g["max_length"])].append(float(g["score"]))
    return {task: {str(n): {"score": round(100 * sum(v) / len(v), 2), "n": len(v)} for n, v in sorted(by.items())}
            for task, by in sorted(acc.items())}


def aggregate_score(result: dict) -> dict:
    """The run's headline: LongBench's "Avg" (the mean of the category means) when it has LongBench v1 tasks, else
    the mean of its task scores (v2 accuracy for a v2-only run); ``per_length``: the mean over tasks at each RULER
    length. ``{"score", "metric", "n", "per_length"}``; score None when no task scored."""
    per_length: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for by in (result.get("per_length") or {}).values():
        for n, e in by.items():
            per_length[n].append((e["score"], e["n"]))
    lengths = {n: {"score": round(sum(s for s, _ in v) / len(v), 2), "n": sum(c for _, c in v)}
               for n, v in sorted(per_length.items(), key=lambda kv: int(kv[0]))}
    scored = {t: e for t, e in (result.get("scores") or {}).items() if _is_number(e.get("score"))}
    n = sum(e.get("n_samples") or 0 for e in scored.values()) or None
    if (result.get("longbench") or {}).get("average") is not None:
        return {"score": result["longbench"]["average"], "metric": "longbench_average", "n": n, "per_length": lengths}
    if not scored:
        return {"score": None, "metric": None, "n": None, "per_length": lengths}
    mean = sum(float(e["score"]) for e in scored.values()) / len(scored)
    return {"score": round(mean, 2), "metric": "mean_task_score", "n": n, "per_length": lengths}


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


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


_DOC_KEYS = ("_id", "answers", "all_classes", "length", "max_length", "dataset", "language", "answer", "difficulty",
             "domain", "sub_domain")


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


def jsonable(obj):
    """``obj`` with every key and value JSON-serialisable (numpy scalars as numbers, anything else as a string)."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (str, int, float, bool)) and k is not None else k: jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)
