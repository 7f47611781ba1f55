"""LongBench data: the shipped fixtures, local copies, the offline-Hub error, generated files up to date."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pbs.eval.longbench import data
from pbs.eval.longbench.metrics import DATASET2METRIC
from pbs.eval.longbench.prompts import build_prompt, build_v2_prompt

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ["hotpotqa", "multifieldqa_zh", "trec", "samsum", "passage_retrieval_en", "passage_retrieval_zh",
           "passage_count", "lcc", "repobench-p", "gov_report"]
ZH = {"multifieldqa_zh", "passage_retrieval_zh"}


@pytest.mark.parametrize("name", SHIPPED)
def test_v1_fixtures_in_thudm_schema(name):
    recs = data.load_longbench(name, "fixtures")
    assert len(recs) == 3
    raw = [json.loads(line) for line in (data.FIXTURES_V1_DIR / f"{name}.jsonl").read_text("utf-8").splitlines()]
    for rec, orig in zip(recs, raw):
        assert set(orig) == set(data.V1_FIELDS)  # the file itself is in the THUDM schema
        assert rec == orig  # and loading changes nothing
        assert isinstance(rec["input"], str) and isinstance(rec["context"], str)
        assert rec["answers"] and all(isinstance(a, str) for a in rec["answers"])
        assert isinstance(rec["length"], int) and rec["dataset"] == name
        assert rec["language"] == ("zh" if name in ZH else "en")
        assert (rec["all_classes"] is not None) == (name == "trec")
        assert len(rec["_id"]) == 48
        assert 20 <= (len(rec["context"]) if rec["language"] == "zh" else len(rec["context"].split())) <= 400
        build_prompt(name, rec)  # every prompt formats
    if name == "trec":
        assert all(r["answers"][0] in r["all_classes"] for r in recs)
    if name == "passage_retrieval_en":
        assert all(r["answers"][0].startswith("Paragraph ") for r in recs)
    if name == "passage_retrieval_zh":
        assert all(r["answers"][0].startswith("段落") for r in recs)


def test_v2_fixture():
    recs = data.load_longbench_v2("fixtures")
    assert len(recs) == 6
    assert {(r["difficulty"], r["length"]) for r in recs} == {
        (d, n) for d in ("easy", "hard") for n in ("short", "medium", "long")}
    for r in recs:
        assert set(r) == set(data.V2_FIELDS)
        assert r["answer"] in "ABCD" and len(r["answer"]) == 1
        assert r[f"choice_{r['answer']}"] in r["context"]  # the right choice is stated in the text
        assert "$" not in build_v2_prompt(r)


def test_local_dir_file_and_lm_eval_mirror_layout(tmp_path):
    rec = {"question": "Who?", "context": "ctx words here", "answers": "Ada", "length": 3, "dataset": "hotpotqa",
           "language": "en", "all_classes": None, "_id": "x"}
    (tmp_path / "hotpotqa.jsonl").write_text(json.dumps(rec) + "\n", encoding="utf-8")
    recs = data.load_longbench("hotpotqa", tmp_path)
    assert recs[0]["input"] == "Who?" and recs[0]["answers"] == ["Ada"] and "question" not in recs[0]
    assert data.load_longbench("hotpotqa", tmp_path / "hotpotqa.jsonl") == recs  # a file works too
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "lcc_e.jsonl").write_text(json.dumps(dict(rec, dataset="lcc_e")) + "\n", encoding="utf-8")
    assert data.load_longbench("lcc", tmp_path, e=True)[0]["dataset"] == "lcc_e"  # data/<name>.jsonl, LongBench-E
    v2 = json.loads(data.FIXTURES_V2_FILE.read_text("utf-8"))
    (tmp_path / "data.json").write_text(json.dumps(v2[:2]), encoding="utf-8")
    assert len(data.load_longbench_v2(tmp_path)) == 2


def test_bad_names_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="unknown LongBench dataset='nq'"):
        data.load_longbench("nq", "fixtures")
    with pytest.raises(ValueError, match="not part of LongBench-E"):
        data.load_longbench("narrativeqa", "fixtures", e=True)
    with pytest.raises(data.DataUnavailableError, match=r"qasper.*task\.data="):
        data.load_longbench("qasper", "fixtures")  # not shipped: the message says how to point at real data
    with pytest.raises(data.DataUnavailableError, match="does not exist"):
        data.load_longbench("hotpotqa", tmp_path / "nope")
    with pytest.raises(data.DataUnavailableError, match=r"task\.data"):
        data.load_longbench_v2(tmp_path)


def test_offline_hub_error_names_dataset_and_config_key(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.DataUnavailableError) as err:
        data.load_longbench("hotpotqa")  # source=None: the Hub
    msg = str(err.value)
    assert "'hotpotqa'" in msg and "THUDM/LongBench" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "task.data=/path/to/longbench" in msg and "evaluate as data=" in msg
    with pytest.raises(data.DataUnavailableError) as err:
        data.load_longbench("gov_report", "hub", e=True)
    assert "'gov_report_e'" in str(err.value)
    with pytest.raises(data.DataUnavailableError) as err:
        data.load_longbench_v2("hub")
    assert "THUDM/LongBench-v2" in str(err.value) and "task.data=/path/to/longbench_v2.json" in str(err.value)


def test_task_sources_come_from_arguments_only(monkeypatch, tmp_path):
    """The data location is passed as an argument (task metadata); the environment is never read."""
    monkeypatch.setenv("PBS_LONGBENCH_DIR", str(tmp_path))  # the variables older versions read
    monkeypatch.setenv("PBS_LONGBENCH_V2", "hub")
    assert data.resolve_v1_source() == "fixtures" and data.resolve_v2_source() == "fixtures"
    assert data.resolve_v1_source("/x") == "/x" and data.resolve_v2_source("hub") == "hub"


def test_task_loaders(tmp_path):
    from pbs.eval.tasks.longbench import utils

    assert len(utils.load_v1("lcc")["test"]) == 3  # default: fixtures
    assert len(utils.load_v2(pretrained="ignored", method="pbs")["test"]) == 6  # model args in metadata are ignored
    v2 = json.loads(data.FIXTURES_V2_FILE.read_text("utf-8"))[:4]
    (tmp_path / "longbench_v2.json").write_text(json.dumps(v2), encoding="utf-8")
    assert len(utils.load_v2(data=str(tmp_path))["test"]) == 4  # `data` also serves v2 (a folder with the file)
    assert len(utils.load_v2(v2_path="fixtures", data=str(tmp_path))["test"]) == 6  # v2_path wins
    with pytest.raises(data.DataUnavailableError, match="'lcc'"):
        utils.load_v1("lcc", data=str(tmp_path))
    row = utils.load_v1("trec", data_dir="fixtures")["test"][0]
    assert isinstance(row["all_classes"], list) and row["answers"][0] in row["all_classes"]


def test_generated_files_are_current():
    """scripts/make_fixtures.py and pbs/eval/tasks/longbench/_generate.py reproduce the committed files byte for byte."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_fixtures.py"), "--check"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    from pbs.eval.tasks.longbench import _generate

    assert _generate.stale_files() == []


def test_task_manager_indexes_our_tasks():
    from lm_eval.tasks import TaskManager

    from pbs.eval import TASKS_DIR

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    names = set(tm.all_tasks)
    assert {f"pbs_longbench_{d}" for d in DATASET2METRIC} <= names
    assert {"pbs_longbench", "pbs_longbench_v2", "pbs_longbench_e", "pbs_longbench_code", "pbs_longbench_single",
            "pbs_longbench_multi", "pbs_longbench_summarization", "pbs_longbench_fewshot",
            "pbs_longbench_synthetic", "pbs_longbench_hotpotqa_e"} <= names
    loaded = tm.load(["pbs_longbench_samsum", "pbs_longbench_trec"])
    samsum = loaded["tasks"]["pbs_longbench_samsum"]
    assert samsum.config.generation_kwargs["until"] == ["\n"]
    assert samsum.config.generation_kwargs["max_gen_toks"] == 128
    doc = samsum.test_docs()[0]
    assert samsum.doc_to_text(doc) == build_prompt("samsum", doc)
