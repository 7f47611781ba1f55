"""LongBench v1 / LongBench-E / LongBench v2 records, from the Hugging Face Hub or a local copy.

v1 records use the original THUDM schema: ``input, context, answers, length, dataset, language, all_classes, _id``
(lm-eval's mirror calls ``input`` ``question``; such records are mapped back). v2 records: ``_id, domain,
sub_domain, difficulty, length, question, choice_A..choice_D, answer, context``.

``source`` selects where records come from:

- ``None`` or ``"hub"``: ``load_dataset("THUDM/LongBench", name, split="test")`` (``name + "_e"`` for LongBench-E),
  ``load_dataset("THUDM/LongBench-v2", split="train")`` for v2.
- ``"fixtures"``: the small synthetic records shipped in ``pbs/eval/longbench/fixtures/``
  (``scripts/make_fixtures.py``).
- a path: v1 -- a folder holding ``<name>.jsonl`` (the unzipped THUDM ``data.zip``; ``data/<name>.jsonl`` and
  ``<name>.json`` also work), a single ``.jsonl``/``.json`` file, or a folder in the Hub's parquet layout (read
  with ``load_dataset(folder, name, split="test")``); v2 -- a ``.json`` (list) or ``.jsonl`` file, or a folder
  holding ``longbench_v2.json``, ``data.json`` or ``longbench_v2.jsonl``.
- v2 only: ``"hub:<owner>/<name>"``, another Hub dataset in the v2 schema (split ``train``).

LongBench v2's RAG protocol needs records that also carry ``retrieved_context``: the retriever's ranked chunks
``{"c_idx", "content", ...}`` (THUDM/LongCite ``utils/retrieve.py``, which embeds with a hosted API). They are not
part of ``THUDM/LongBench-v2`` on the Hub; point the data at a file that has them (:func:`load_longbench_v2` with
``rag=True`` says so when they are missing).

When the Hub cannot be reached (``HF_HUB_OFFLINE=1``, a connection error) a :class:`DataUnavailableError` names the
dataset and says how to point the evaluation at a local copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .scoring import DATASETS, LONGBENCH_E

HUB_V1 = "THUDM/LongBench"
HUB_V2 = "THUDM/LongBench-v2"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
FIXTURES_V1_DIR = FIXTURES_DIR / "v1"
FIXTURES_V2_FILE = FIXTURES_DIR / "v2.json"
#: the v2 fixture records with invented ``retrieved_context`` lists in the official RAG schema (tests only)
FIXTURES_V2_RAG_FILE = FIXTURES_DIR / "v2_rag.json"

#: the config key the error messages point at (``conf/task/*.yaml``: ``data: hub | fixtures | /path``)
CONFIG_KEY_V1 = "task.data"
CONFIG_KEY_V2 = "task.data"

V1_FIELDS = ("input", "context", "answers", "length", "dataset", "language", "all_classes", "_id")
V2_FIELDS = (
    "_id", "domain", "sub_domain", "difficulty", "length", "question",
    "choice_A", "choice_B", "choice_C", "choice_D", "answer", "context",
)
V1_CONFIGS: tuple[str, ...] = DATASETS + tuple(f"{n}_e" for n in LONGBENCH_E)
_ZH = {"multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"}


class DataUnavailableError(RuntimeError):
    """The requested LongBench data could not be read (Hub unreachable, local file missing)."""


def _is_hub(source) -> bool:
    return source is None or (isinstance(source, str) and source.lower() == "hub")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def v1_config_name(name: str, e: bool = False) -> str:
    """Validate a v1 dataset name and return its config (``name + "_e"`` for LongBench-E)."""
    config = name if name.endswith("_e") and name in V1_CONFIGS else (f"{name}_e" if e else name)
    if config not in V1_CONFIGS:
        if e and name in DATASETS:
            raise ValueError(f"dataset={name!r} is not part of LongBench-E; LongBench-E has {list(LONGBENCH_E)}")
        raise ValueError(f"unknown LongBench dataset={name!r}; known: {sorted(DATASETS)} (+ '_e' variants)")
    return config


# ----------------------------------------------------------------------------------------------- v1


def normalize_v1(rec: dict[str, Any], config: str) -> dict[str, Any]:
    """One record in the THUDM schema (``question`` -> ``input``; ``answers`` always a list of strings)."""
    out = dict(rec)
    if "input" not in out and "question" in out:
        out["input"] = out.pop("question")
    out.setdefault("input", "")
    out["input"] = out["input"] or ""
    answers = out.get("answers", [])
    if isinstance(answers, (str, int, float)):
        answers = [answers]
    out["answers"] = [str(a) for a in answers]
    out["all_classes"] = list(out["all_classes"]) if out.get("all_classes") is not None else None
    out.setdefault("dataset", config)
    out.setdefault("language", "zh" if config.removesuffix("_e") in _ZH else "en")
    if out.get("length") is None:
        text = out["input"] + out["context"]
        out["length"] = len(text) if out["language"] == "zh" else len(text.split())
    out["length"] = int(out["length"])
    out.setdefault("_id", "")
    missing = [f for f in V1_FIELDS if f not in out]
    if missing:
        raise ValueError(f"LongBench record of {config!r} lacks fields {missing}")
    return out


class DataFormatError(ValueError):
    """A data file that cannot be parsed: names the file, the line and what is wrong there."""


def _read_json_records(path: Path) -> list[dict]:
    """Records of a JSON list or a JSON Lines file; a malformed one raises :class:`DataFormatError` naming the file
    and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-download the file") from None
    stripped = text.lstrip()
    if path.suffix == ".json" and stripped.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}, line {e.lineno}, column {e.colno}: invalid JSON ({e.msg}); the file is "
                                  "damaged or truncated: re-download it") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}, line {number}, column {e.colno}: invalid JSON ({e.msg}); the file is "
                                  "damaged or truncated: re-download it (one JSON record per line)") from None
    return records


def _v1_local(config: str, source: str | os.PathLike, split: str) -> list[dict]:
    path = Path(source).expanduser()
    if path.is_file():
        return _read_json_records(path)
    if not path.is_dir():
        raise DataUnavailableError(
            f"LongBench dataset {config!r}: local data path {str(path)!r} does not exist. Set {CONFIG_KEY_V1} "
            f"to a folder holding {config}.jsonl in the original THUDM schema."
        )
    candidates = [path / f"{config}.jsonl", path / "data" / f"{config}.jsonl", path / f"{config}.json"]
    for cand in candidates:
        if cand.is_file():
            return _read_json_records(cand)
    if (path / "README.md").is_file() or any(path.glob(f"{config}/*.parquet")) or any(path.glob("*/*.parquet")):
        import datasets

        try:
            return list(datasets.load_dataset(str(path), config, split=split))
        except Exception as e:
            raise DataUnavailableError(
                f"LongBench dataset {config!r}: could not read the parquet folder {str(path)!r} "
                f"({type(e).__name__}: {e})"
            ) from e
    tried = ", ".join(str(c) for c in candidates)
    hint = ""
    if path.resolve() == FIXTURES_V1_DIR.resolve():
        shipped = sorted(p.stem for p in FIXTURES_V1_DIR.glob("*.jsonl"))
        hint = (f" The shipped fixtures cover only {shipped}; point {CONFIG_KEY_V1}=/path/to/longbench "
                "at the real data for the others.")
    raise DataUnavailableError(f"LongBench dataset {config!r}: no file found (tried {tried}).{hint}")


def _hub_error(what: str, repo: str, detail: str, key: str, layout: str, exc: Exception | None):
    reason = "HF_HUB_OFFLINE=1 is set" if _offline() else "the Hub could not be reached"
    if exc is not None:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason += f" ({type(exc).__name__}: {msg[:300]})"
    return DataUnavailableError(
        f"{what} could not be loaded from the Hugging Face Hub ({repo}, {detail}): {reason}. "
        f"Point the config at a local copy instead: {key}=/path/to/{layout} "
        "(or pass it to pbs.eval.harness.evaluate as data=...)."
    )


def _v1_hub(config: str, split: str) -> list[dict]:
    try:
        import datasets

        ds = datasets.load_dataset(HUB_V1, config, split=split)
    except Exception as e:
        raise _hub_error(
            f"LongBench dataset {config!r}", HUB_V1, f"config {config!r}, split {split!r}", CONFIG_KEY_V1,
            f"longbench (a folder with {config}.jsonl in the THUDM schema, e.g. the unzipped data.zip)",
            e,
        ) from e
    return list(ds)


def load_longbench(name: str, source: str | os.PathLike | None = None, *, e: bool = False,
                   split: str = "test") -> list[dict]:
    """LongBench v1 (or LongBench-E with ``e=True`` / a ``*_e`` name) records in the THUDM schema.

    ``source``: ``None``/``"hub"``, ``"fixtures"``, or a local folder/file (see the module docstring).
    """
    config = v1_config_name(name, e)
    if _is_hub(source):
        records = _v1_hub(config, split)
    elif isinstance(source, str) and source == "fixtures":
        records = _v1_local(config, FIXTURES_V1_DIR, split)
    else:
        records = _v1_local(config, source, split)
    return [normalize_v1(r, config) for r in records]


# ----------------------------------------------------------------------------------------------- v2


def normalize_v2(rec: dict[str, Any]) -> dict[str, Any]:
    out = dict(rec)
    if "choices" in out and "choice_A" not in out:  # lm-eval's mirror layout
        for letter, choice in zip("ABCD", out.pop("choices")):
            out[f"choice_{letter}"] = choice
    missing = [f for f in V2_FIELDS if f not in out and f not in ("_id", "domain", "sub_domain")]
    if missing:
        raise ValueError(f"LongBench v2 record {out.get('_id', '?')!r} lacks fields {missing}")
    for f in ("_id", "domain", "sub_domain"):
        out.setdefault(f, "")
    return out


def _v2_local(source: str | os.PathLike) -> list[dict]:
    path = Path(source).expanduser()
    if path.is_dir():
        for cand in ("longbench_v2.json", "data.json", "longbench_v2.jsonl"):
            if (path / cand).is_file():
                path = path / cand
                break
        else:
            raise DataUnavailableError(
                f"LongBench v2: no longbench_v2.json, data.json or longbench_v2.jsonl in {str(path)!r}; "
                f"set {CONFIG_KEY_V2} to the data file."
            )
    if not path.is_file():
        raise DataUnavailableError(
            f"LongBench v2: local data path {str(path)!r} does not exist; set {CONFIG_KEY_V2} "
            "to a .json/.jsonl file in the v2 schema."
        )
    return _read_json_records(path)


def _v2_hub(repo: str) -> list[dict]:
    try:
        import datasets

        return list(datasets.load_dataset(repo, split="train"))
    except Exception as e:
        raise _hub_error("LongBench v2 (dataset 'longbench_v2')", repo, "split 'train'", CONFIG_KEY_V2,
                         "longbench_v2.json (the v2 data.json)", e) from e


def load_longbench_v2(source: str | os.PathLike | None = None, *, rag: bool = False) -> list[dict]:
    """LongBench v2 records: ``source`` is ``None``/``"hub"``, ``"hub:<owner>/<name>"``, ``"fixtures"`` or a local
    file/folder. ``rag=True``: every record must carry ``retrieved_context`` (the fixtures then are
    ``fixtures/v2_rag.json``)."""
    if _is_hub(source):
        records = _v2_hub(HUB_V2)
    elif isinstance(source, str) and source.startswith("hub:"):
        records = _v2_hub(source[len("hub:"):])
    elif isinstance(source, str) and source == "fixtures":
        records = _v2_local(FIXTURES_V2_RAG_FILE if rag else FIXTURES_V2_FILE)
    else:
        records = _v2_local(source)
    records = [normalize_v2(r) for r in records]
    if rag:
        missing = [r["_id"] for r in records if not isinstance(r.get("retrieved_context"), list)]
        if missing:
            raise DataUnavailableError(
                f"LongBench v2 RAG: {len(missing)} of {len(records)} records from {str(source or 'hub')!r} have no "
                f"'retrieved_context' (first: {missing[0]!r}). The official +RAG runs use retrieval results computed "
                "beforehand (THUDM/LongCite utils/retrieve.py, a hosted embedding API); they are not part of "
                f"{HUB_V2} on the Hub. Set {CONFIG_KEY_V2} to a v2 file whose records carry 'retrieved_context' "
                "(a ranked list of {'c_idx', 'content', ...}), or to hub:<owner>/<name> of a dataset that has it."
            )
    return records


# ----------------------------------------------------------------------------------------------- task sources


def resolve_v1_source(data_dir: str | os.PathLike | None = None) -> str | os.PathLike:
    """Where the lm-eval tasks read v1 data: the given path (``"hub"``: the Hugging Face Hub), else the fixtures."""
    return data_dir if data_dir not in (None, "") else "fixtures"


def resolve_v2_source(v2_path: str | os.PathLike | None = None) -> str | os.PathLike:
    """Where the v2 tasks read data: the given path (``"hub"``, ``"hub:<owner>/<name>"``), else the fixture file."""
    return v2_path if v2_path not in (None, "") else "fixtures"
