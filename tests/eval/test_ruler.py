"""The RULER-style synthetic suite: generators (determinism, lengths, answers, depths), scoring, corpus, lm-eval
tasks."""

import gzip
import importlib.util
import math
import re
from pathlib import Path

import pytest

from pbs.eval import TASKS_DIR
from pbs.eval.ruler import generate as gen
from pbs.eval.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
RULER_TASKS = list(gen.TASKS)


@pytest.fixture(scope="module")
def count_tokens(tmp_path_factory):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _load_utils():
    spec = importlib.util.spec_from_file_location("ruler_utils", TASKS_DIR / "ruler" / "utils.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------- generators


@pytest.mark.parametrize("task", RULER_TASKS)
def test_deterministic_by_seed(task):
    a = gen.generate(task, 1024, 3, seed=7)
    assert a == gen.generate(task, 1024, 3, seed=7)
    b = gen.generate(task, 1024, 3, seed=8)
    assert [s["input"] for s in a] != [s["input"] for s in b]
    assert len({s["input"] for s in a}) == 3  # samples differ from one another
    # a sample depends on (task, length, index, seed) only
    assert gen.generate_sample(task, 1024, 2, num_samples=3, seed=7) == a[2]


@pytest.mark.parametrize("length", [2048, 4096])
def test_lengths_within_two_percent_with_a_real_tokenizer(count_tokens, length):
    for task in RULER_TASKS:
        for s in gen.generate(task, length, 2, seed=0, count_tokens=count_tokens):
            assert s["length"] == count_tokens(s["input"])
            assert s["length"] <= length and abs(s["length"] - length) <= 0.02 * length, (task, s["length"])
            assert s["max_length"] == length and s["task"] == task


def test_lengths_with_the_default_whitespace_estimate():
    for task in RULER_TASKS:
        s = gen.generate_sample(task, 3000, 0)
        assert s["length"] == gen.approx_count_tokens(s["input"])
        assert abs(s["length"] - 3000) <= 0.02 * 3000, task


@pytest.mark.parametrize("task", RULER_TASKS)
def test_expected_answers_are_in_the_input(task):
    for s in gen.generate(task, 1500, 4, seed=3):
        assert s["outputs"] and all(o in s["input"] for o in s["outputs"])
        assert set(s) >= {"input", "outputs", "length", "task"}


def test_task_shapes():
    def one(task):
        return gen.generate_sample(task, 2000, 0, seed=1)

    needle = re.compile(r"One of the special magic (numbers|uuids) for ([a-z]+-[a-z]+) is: ([0-9a-f-]+)\.")
    s = one("niah_single_1")
    assert "The grass is green. The sky is blue." in s["input"] and len(needle.findall(s["input"])) == 1
    assert re.fullmatch(r"\d{7}", s["outputs"][0])
    s = one("niah_single_2")
    assert "The grass is green" not in s["input"] and re.fullmatch(r"\d{7}", s["outputs"][0])
    s = one("niah_single_3")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", s["outputs"][0])
    s = one("niah_multikey")
    found = needle.findall(s["input"])
    assert len(found) == 4 and len({k for _, k, _ in found}) == 4 and len(s["outputs"]) == 1
    queried = re.search(r"What are all the special magic numbers for (\S+) mentioned", s["input"]).group(1)
    assert {v for _, k, v in found if k == queried} == set(s["outputs"])
    s = one("niah_multivalue")
    found = needle.findall(s["input"])
    assert len(found) == 4 and len({k for _, k, _ in found}) == 1 and sorted(s["outputs"]) == sorted(
        v for _, _, v in found)
    s = one("niah_multiquery")
    found = needle.findall(s["input"])
    assert len(found) == 4 and sorted(s["outputs"]) == sorted(v for _, _, v in found)
    assert s["input"].count(", and ") >= 2  # "for a, b, c, and d" in the question and the answer prefix
    s = one("vt")
    assert len(s["outputs"]) == 5 and s["input"].rstrip().endswith("they are:")
    value = re.search(r"assigned the value (\d+) in the text above", s["input"]).group(1)
    assert f"VAR {s['outputs'][0]} = {value}." in s["input"]
    pos = [s["input"].index(f"VAR {v} =") for v in s["outputs"]]
    assert pos == sorted(pos)  # the chain reads in order
    for prev, cur in zip(s["outputs"], s["outputs"][1:]):
        assert f"VAR {cur} = VAR {prev}." in s["input"]
    s = one("kv_retrieval")
    key = re.search(r'Key: "([0-9a-f-]+)"', s["input"]).group(1)
    assert f'"{key}": "{s["outputs"][0]}"' in s["input"]
    assert s["input"].count(f'"{key}"') == 2  # in the data once, in the question once


@pytest.mark.parametrize("task", ["niah_single_1", "niah_single_2", "niah_single_3", "kv_retrieval"])
def test_needle_depths_spread_uniformly(task):
    n = 10
    samples = gen.generate(task, 2000, n, seed=5)
    rel = []
    for i, s in enumerate(samples):
        assert i / n <= s["depth"] < (i + 1) / n  # stratified
        text = s["input"]
        start = text.index("\n") + 1  # context starts after the first instruction line
        end = text.rindex("\n")  # ... and ends before the question
        if task == "kv_retrieval":
            start, end = text.index("{"), text.rindex("}")
        where = text.index(s["outputs"][0], start)
        rel.append((where - start) / (end - start))
    for depth, r in zip((s["depth"] for s in samples), rel):
        assert abs(depth - r) < 0.1
    assert min(rel) < 0.15 and max(rel) > 0.85


# --------------------------------------------------------------------------------------------------- scoring


def test_string_match_all_and_part():
    refs = ["1234567", "7654321"]
    assert gen.string_match_all("The numbers are 1234567 and 7654321.", refs) == 1.0
    assert gen.string_match_all("The numbers are 1234567.", refs) == 0.5
    assert gen.string_match_all("none", refs) == 0.0
    assert gen.string_match_all("ABC-def", ["abc-DEF"]) == 1.0  # case-insensitive
    assert gen.string_match_part("The numbers are 1234567.", refs) == 1.0
    assert gen.string_match_part("nothing here", refs) == 0.0
    assert gen.string_match_part("FOO", ["foo", "bar"]) == 1.0
    assert gen.score("niah_multivalue", "1234567", refs) == 0.5  # RULER scores niah with "all"
    assert all(cfg["metric"] == "string_match_all" for cfg in gen.TASKS.values())


def test_task_utils_scores_and_aggregates():
    utils = _load_utils()
    doc = {"task": "vt", "outputs": ["AAAAA", "BBBBB"], "max_length": 8192}
    out = utils.process_results(doc, [" aaaaa, CCCCC"])
    assert out["score"] == out["string_match_all"] == 0.5
    assert out["score_8192"] == 0.5 and out["score_4096"] is None
    assert utils.aggregate_score([0.5, 1.0, None]) == 75.0 and math.isnan(utils.aggregate_score([None]))


def test_settings_from_metadata_and_defaults(monkeypatch):
    """One dataclass holds the defaults; the tasks read their settings from the metadata, never the environment."""
    from pbs.eval.ruler.settings import RulerSettings

    monkeypatch.setenv("PBS_RULER_LENGTH", "1024,2048")  # what older versions read
    monkeypatch.setenv("PBS_RULER_SAMPLES", "3")
    assert RulerSettings.from_metadata() == RulerSettings() == RulerSettings([4096, 8192, 16384, 32768], 20, 42)
    s = RulerSettings.from_metadata(length=512, num_samples="2", seed=1, pretrained="ignored", version=1.0)
    assert (s.lengths, s.samples, s.seed) == ([512], 2, 1)
    assert RulerSettings.from_metadata(max_seq_lengths=[4096, 8192]).lengths == [4096, 8192]
    assert RulerSettings.from_metadata(max_seq_lengths="1024,2048").lengths == [1024, 2048]
    assert RulerSettings.from_metadata(**RulerSettings([600], 3, 7).metadata()) == RulerSettings([600], 3, 7)
    for bad in ({"lengths": []}, {"samples": 0}, {"lengths": [10]}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RulerSettings(**bad)


# ------------------------------------------------------------------------------------------------ corpus, tasks


def test_corpus_is_shipped_and_clean():
    assert gen.CORPUS.stat().st_size < 2_000_000
    lines = gzip.decompress(gen.CORPUS.read_bytes()).decode("utf-8").splitlines()
    assert len(lines) == 31102 and lines[0] == "In the beginning God created the heaven and the earth."
    assert not any(re.match(r"\s*\w+\d+:\d+", line) or not line.strip() for line in lines)
    assert not any(ch.isdigit() for line in lines for ch in line)  # numeric needles can't collide

    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    assert mk.clean("Ge1:1 In the  beginning.\n\n1Jo1:2 (For the life)\nRev22:21 Amen.\n") == [
        "In the beginning.", "(For the life)", "Amen."]


def test_task_yamls_are_current():
    spec = importlib.util.spec_from_file_location("ruler_generate", TASKS_DIR / "ruler" / "_generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.stale_files() == []
    assert tuple(mod.LENGTH_BUCKETS) == tuple(_load_utils().LENGTH_BUCKETS)


def test_task_manager_loads_the_pbs_ruler_tasks():
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=[str(TASKS_DIR)], include_defaults=False,
                     metadata={"length": 600, "num_samples": 2, "seed": 3})
    expected = {f"pbs_ruler_{t}" for t in RULER_TASKS}
    assert expected <= set(tm.all_tasks) and "pbs_ruler" in tm.all_groups
    loaded = tm.load(["pbs_ruler_niah_multikey", "pbs_ruler_kv_retrieval"])["tasks"]
    assert set(loaded) == {"pbs_ruler_niah_multikey", "pbs_ruler_kv_retrieval"}
    for name, task in loaded.items():
        docs = list(task.test_docs())
        assert len(docs) == 2 and task.config.output_type == "generate_until"
        assert task.config.generation_kwargs["do_sample"] is False
        assert task.doc_to_text(docs[0]) == docs[0]["input"] and all(o in docs[0]["input"] for o in docs[0]["outputs"])
        ruler_task = name.removeprefix("pbs_ruler_")
        assert docs[1]["input"] == gen.generate_sample(ruler_task, 600, 1, num_samples=2, seed=3)["input"]
    group = tm.load(["pbs_ruler"])
    assert set(group["groups"]) == {"pbs_ruler"} and set(group["tasks"]) == expected


def test_conf_task_ruler_composes():
    """conf/task/ruler.yaml adds nothing to the dataclass: its defaults are RulerSettings'."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments._schema import register_schemas
    from pbs.eval.config import RulerTask
    from pbs.eval.ruler.settings import RulerSettings

    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["task=ruler"])
        with pytest.raises(Exception, match="length"):
            compose(config_name="eval", overrides=["task=ruler", "task.length=[4096]"])
    task = OmegaConf.to_object(cfg).task
    assert task == RulerTask() and task.name == "ruler" and task.tasks == ["pbs_ruler"]
    assert task.lengths == RulerSettings().lengths == [4096, 8192, 16384, 32768]


def test_two_ruler_configs_in_one_process_do_not_leak(tmp_path_factory):
    """Each evaluation passes its own settings to the tasks (lm-eval task metadata): a second configuration in the
    same process gets its own lengths, samples and seed, whatever ran before, and nothing is left in os.environ."""
    import os

    from pbs.eval.harness import build_lm, evaluate
    from pbs.eval.ruler.settings import RulerSettings

    tiny = build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
    lm = build_lm(str(tiny), method="sdpa", device="cpu", dtype="float32", apply_chat_template=False)
    task = "pbs_ruler_niah_single_2"
    for settings in (RulerSettings([600], 2, 3), RulerSettings([900], 1, 4), RulerSettings([600], 2, 3)):
        out = evaluate(None, tasks=[task], lm=lm, ruler=settings)
        reqs = out["requests"]
        assert len(reqs) == settings.samples and out["config"]["ruler"]["lengths"] == settings.lengths
        expected = gen.generate("niah_single_2", settings.lengths[0], settings.samples, settings.seed,
                                count_tokens=gen.hf_count_tokens(str(tiny)))
        assert [r["prompt_sha1"] for r in reqs] == [_sha(s["input"]) for s in expected]
        assert all(abs(r["prompt_tokens"] - settings.lengths[0]) <= 0.02 * settings.lengths[0] + 1 for r in reqs)
    assert not [k for k in os.environ if k.startswith("PBS_RULER")]


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def test_every_length_gets_its_own_score(tmp_path_factory):
    """Per-length scores for any length evaluated (not only lm-eval's fixed 4K.. buckets: make run's 2K too), from
    the samples' target lengths; the aggregate is the mean over tasks at each length."""
    from pbs.eval.harness import build_lm, evaluate
    from pbs.eval.ruler.settings import RulerSettings
    from pbs.eval.summaries import aggregate_score

    tiny = build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
    lm = build_lm(str(tiny), method="sdpa", device="cpu", dtype="float32", apply_chat_template=False)
    out = evaluate(None, tasks=["pbs_ruler_niah_single_2", "pbs_ruler_vt"], lm=lm, ruler=RulerSettings([600, 900], 2, 3))
    for task in ("pbs_ruler_niah_single_2", "pbs_ruler_vt"):
        gens = [g for g in out["generations"] if g["task"] == task]
        for n in (600, 900):
            mine = [float(g["score"]) for g in gens if g["max_length"] == n]
            assert out["per_length"][task][str(n)] == {"score": round(100 * sum(mine) / 2, 2), "n": 2}
    means = out["aggregate"]["per_length"]
    assert set(means) == {"600", "900"} and all(e["n"] == 4 for e in means.values())
    assert out["aggregate"] == aggregate_score(out) and out["aggregate"]["metric"] == "mean_task_score"
    per_task = [out["scores"][t]["score"] for t in out["scores"]]
    assert out["aggregate"]["score"] == round(sum(per_task) / len(per_task), 2)


def test_aggregate_prefers_the_longbench_average():
    from pbs.eval.summaries import aggregate_score

    result = {"scores": {"pbs_longbench_hotpotqa": {"score": 40.0, "n_samples": 2},
                         "pbs_longbench_v2": {"score": 10.0, "n_samples": 3}},
              "longbench": {"average": 45.0}, "per_length": {}}
    assert aggregate_score(result) == {"score": 45.0, "metric": "longbench_average", "n": 5, "per_length": {}}
    assert aggregate_score({"scores": {"x": {"score": float("nan")}}})["score"] is None
