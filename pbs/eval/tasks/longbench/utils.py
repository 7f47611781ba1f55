"""Functions the ``pbs_longbench*`` task YAMLs point at (``!function utils.<name>``).

Data source (every v1 task): ``data_dir`` or ``data`` passed as task metadata (``TaskManager(metadata=
{"data_dir": ...})``, ``python -m pbs.eval run ... --metadata '{"data": ...}'``, :func:`pbs.eval.harness.evaluate`'s
``data`` / ``data_dir``) or in the task's ``dataset_kwargs``; else the shipped fixtures. ``"hub"`` reads
``THUDM/LongBench`` from the Hugging Face Hub. v2 likewise with ``v2_path`` (then ``data_dir`` / ``data``).
"""

from __future__ import annotations

from pbs.eval.longbench import data as _data
from pbs.eval.longbench import metrics as _metrics
from pbs.eval.longbench import prompts as _prompts
from pbs.eval.longbench import scoring as _scoring
from pbs.eval.tasks.common import aggregate_score, first_given

__all__ = ["aggregate_score"]  # the YAMLs point at it here

# ----------------------------------------------------------------------------------------------- data


def _as_dataset_dict(records: list[dict]):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})


def load_v1(dataset: str, data_dir=None, data=None, **_ignored):
    """``custom_dataset`` of the v1 / LongBench-E tasks: ``{"test": Dataset}`` in the THUDM schema.

    ``data_dir`` (or ``data``): ``"fixtures"``, ``"hub"`` or a folder/file; unset: the fixtures. Other metadata
    (lm-eval passes the model args too) is ignored.
    """
    source = _data.resolve_v1_source(first_given(data_dir, data))
    return _as_dataset_dict(_data.load_longbench(dataset, source))


def load_v2(v2_path=None, data_dir=None, data=None, protocol="0shot", rag_top_n=None, v2_empty_outputs="drop",
            **_ignored):
    """``custom_dataset`` of the ``pbs_longbench_v2*`` tasks: ``{"test": Dataset}`` in the v2 schema (``v2_path``,
    else ``data_dir`` / ``data`` -- a v2 file or a folder holding ``longbench_v2.json`` / ``data.json`` -- else the
    fixture file).

    ``protocol`` (from the task's ``dataset_kwargs``): ``"rag"`` replaces each context by its top ``rag_top_n``
    retrieved chunks (task metadata; required). ``v2_empty_outputs`` (task metadata): ``"drop"`` (the reference)
    or ``"wrong"``, stamped on every doc as ``pbs_empty_outputs`` for :func:`process_results_v2`.
    """
    empty = _scoring.check_empty_outputs(v2_empty_outputs)
    source = _data.resolve_v2_source(first_given(v2_path, data_dir, data))
    records = _data.load_longbench_v2(source, rag=protocol == "rag")
    if protocol == "rag":
        if rag_top_n is None:
            raise ValueError("pbs_longbench_v2_rag needs rag_top_n (the official --rag N): pass it as task metadata "
                             "(--metadata '{\"rag_top_n\": N}', Hydra task.v2.rag_top_n=N)")
        top_n = int(rag_top_n) if isinstance(rag_top_n, str) and rag_top_n.isdigit() else rag_top_n
        records = [dict(r, context=_prompts.rag_context(r.pop("retrieved_context"), top_n)) for r in records]
    return _as_dataset_dict([dict(r, pbs_empty_outputs=empty) for r in records])


# ----------------------------------------------------------------------------------------------- v1


def doc_to_target(doc: dict) -> list[str]:
    return list(doc["answers"])


def _bucket_key(bucket: str) -> str:
    return {"0-4k": "score_0_4k", "4-8k": "score_4_8k", "8k+": "score_8k_plus"}[bucket]


def _make_v1(dataset: str):
    metric_name = _metrics.DATASET2METRIC[_scoring.base_dataset(dataset)].__name__
    is_e = dataset.endswith("_e")

    def doc_to_text(doc: dict) -> str:
        return _prompts.build_prompt(dataset, doc)

    def process_results(doc: dict, results: list[str]) -> dict:
        score = _scoring.score_sample(dataset, results[0], doc["answers"], doc.get("all_classes"))
        out = {"score": score, metric_name: score}
        if is_e:
            bucket = _scoring.length_bucket(doc["length"])
            for b in _scoring.LENGTH_BUCKETS:
                out[_bucket_key(b)] = score if b == bucket else None
        return out

    doc_to_text.__name__ = f"doc_to_text_{_ident(dataset)}"
    process_results.__name__ = f"process_results_{_ident(dataset)}"
    return doc_to_text, process_results


def _ident(dataset: str) -> str:
    return dataset.replace("-", "_")


for _name in list(_scoring.DATASETS) + [f"{n}_e" for n in _scoring.LONGBENCH_E]:
    _dtt, _pr = _make_v1(_name)
    globals()[_dtt.__name__] = _dtt
    globals()[_pr.__name__] = _pr
del _name, _dtt, _pr


# ----------------------------------------------------------------------------------------------- v2


def doc_to_text_v2(doc: dict) -> str:
    return _prompts.build_v2_prompt(doc, _prompts.V2_PROMPT_0SHOT)


def doc_to_text_v2_cot(doc: dict) -> str:
    """The CoT protocol's first call; the model (``pbs.eval.lm_eval_model``) makes the answer call itself."""
    return _prompts.build_v2_prompt(doc, _prompts.V2_PROMPT_COT)


def doc_to_text_v2_no_context(doc: dict) -> str:
    return _prompts.build_v2_prompt(doc, _prompts.V2_PROMPT_NO_CONTEXT)


def doc_to_text_v2_rag(doc: dict) -> str:
    return _prompts.build_v2_prompt(doc, _prompts.V2_PROMPT_RAG)


def doc_to_target_v2(doc: dict) -> str:
    return doc["answer"]


def process_results_v2(doc: dict, results: list[str]) -> dict:
    """Per question: ``acc`` and its breakdowns (None outside the question's difficulty / length), ``n_scored`` and
    ``n_empty``. An empty generation (``""``: the reference's ``pred.py`` skips it) is left out of every accuracy
    under ``pbs_empty_outputs="drop"`` and scores 0 under ``"wrong"``. Difficulty other than easy counts as hard,
    length other than short/medium as long (``result.py``)."""
    empty = results[0] == ""
    if empty and doc.get("pbs_empty_outputs", "drop") == "drop":
        correct = None
    else:
        correct = 1.0 if not empty and _metrics.extract_v2_answer(results[0]) == doc["answer"] else 0.0
    difficulty = "easy" if doc["difficulty"] == "easy" else "hard"
    length = doc["length"] if doc["length"] in ("short", "medium") else "long"
    out = {"acc": correct}
    for key in ("easy", "hard"):
        out[f"acc_{key}"] = correct if difficulty == key else None
    for key in ("short", "medium", "long"):
        out[f"acc_{key}"] = correct if length == key else None
    out["n_scored"] = 0 if correct is None else 1
    out["n_empty"] = 1 if empty else 0
    return out


def aggregate_acc(items: list) -> float:
    """v2 accuracy in percent, one decimal (the reference's ``result.py``); NaN with no questions."""
    return _scoring.aggregate((x for x in items if x is not None), digits=1)


def aggregate_count(items: list) -> int:
    return int(sum(items))
