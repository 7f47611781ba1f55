"""The LongBench aggregation and v2 protocol settings against hand-computed cases (no model needed).

The rules, stated here independently of the code:
- Table 1's "Avg" is the mean of the six category means (LongBench's README table, the paper's OpenCompass
  summarizer), not the mean over the 21 datasets.
- LongBench v2 ``pred.py``: prompts ``prompts/0shot{,_cot,_cot_ans,_no_context,_rag}.txt``; RAG joins the first N
  retrieved chunks, re-sorted by ``c_idx``, as "Retrieved chunk i: ..." with blank lines; an item whose output is
  '' is never written, so ``result.py`` divides by the remaining items only; every call samples at temperature 0.1.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from experiments._schema import register_schemas
from pbs.eval.decoding import Sampling, next_token, request_seed, sampling_from_gen_kwargs
from pbs.eval.longbench import data, scoring
from pbs.eval.longbench import prompts as p
from pbs.eval.tasks.longbench import utils as task_utils

CONF = Path(__file__).resolve().parents[2] / "conf"
register_schemas()

# ------------------------------------------------------------------------------------------------ v1 aggregation


def test_official_average_is_the_mean_of_the_category_means():
    scores = {
        "narrativeqa": 40.0, "qasper": 50.0, "multifieldqa_en": 60.0, "multifieldqa_zh": 50.0,  # single: 50
        "hotpotqa": 30.0, "2wikimqa": 30.0, "musique": 30.0, "dureader": 30.0,  # multi: 30
        "gov_report": 20.0, "qmsum": 20.0, "multi_news": 20.0, "vcsum": 20.0,  # summarization: 20
        "trec": 10.0, "triviaqa": 20.0, "samsum": 30.0, "lsht": 40.0,  # fewshot: 25
        "passage_count": 60.0, "passage_retrieval_en": 70.0, "passage_retrieval_zh": 80.0,  # synthetic: 70
        "lcc": 10.0, "repobench-p": 20.0,  # code: 15
    }
    s = scoring.summarize(scores)
    assert (s["single"], s["multi"], s["summarization"], s["fewshot"], s["synthetic"], s["code"]) == (
        50.0, 30.0, 20.0, 25.0, 70.0, 15.0)
    assert s["average"] == 35.0  # (50 + 30 + 20 + 25 + 70 + 15) / 6
    assert s["dataset_mean"] == 35.24  # 740 / 21 = 35.238...
    assert s["n_datasets"] == 21
    # category means are not rounded before averaging: 1/3 + 2/3 ...
    s = scoring.summarize({"hotpotqa": 1.0, "2wikimqa": 0.0, "musique": 0.0, "lcc": 2.0, "repobench-p": 0.0})
    assert s["multi"] == 0.33 and s["code"] == 1.0 and s["average"] == round((1 / 3 + 1) / 2, 2) == 0.67


def test_paper_table1_avg_is_the_mean_of_its_category_columns():
    """The paper's Table 1, Llama-3.1-8B Full: the six category columns average to its Avg column (38.28)."""
    cats = [48.80, 41.80, 17.79, 29.73, 24.77, 66.82]
    assert abs(sum(cats) / 6 - 38.28) < 0.006


# ------------------------------------------------------------------------------------------------ v2 scoring


RECS = [
    {"difficulty": "easy", "length": "short", "answer": "A", "output": "The correct answer is (A)"},
    {"difficulty": "hard", "length": "short", "answer": "B", "output": ""},
    {"difficulty": "easy", "length": "long", "answer": "C", "output": "The correct answer is (D)"},
    {"difficulty": "hard", "length": "medium", "answer": "D", "output": " "},  # whitespace: kept (not '')
    {"difficulty": "hard", "length": "long", "answer": "B", "output": ""},
]


def test_v2_empty_outputs_leave_the_denominator_or_count_wrong():
    dropped = scoring.v2_accuracy(RECS)  # 3 scored: correct, wrong, wrong (the blank output has no answer)
    assert dropped["overall"] == 33.3 and dropped["n_scored"] == 3 and dropped["n_empty"] == 2
    assert dropped["easy"] == 50.0 and dropped["hard"] == 0.0 and dropped["short"] == 100.0
    assert dropped["medium"] == 0.0 and dropped["long"] == 0.0
    wrong = scoring.v2_accuracy(RECS, empty_outputs="wrong")  # 5 scored, 1 correct
    assert wrong["overall"] == 20.0 and wrong["n_scored"] == 5 and wrong["n_empty"] == 2
    assert wrong["short"] == 50.0 and wrong["hard"] == 0.0
    with pytest.raises(ValueError, match="empty_outputs"):
        scoring.v2_accuracy(RECS, empty_outputs="skip")


def test_v2_task_scoring_follows_the_doc_policy():
    """process_results + the aggregations of the lm-eval task give the same numbers as the hand count above."""
    def run(policy):
        per = [task_utils.process_results_v2(dict(r, pbs_empty_outputs=policy), [r["output"]]) for r in RECS]
        return {k: (task_utils.aggregate_count if k.startswith("n_") else task_utils.aggregate_acc)(
            [x[k] for x in per]) for k in per[0]}

    drop, wrong = run("drop"), run("wrong")
    assert (drop["acc"], drop["acc_easy"], drop["acc_short"], drop["n_scored"], drop["n_empty"]) == (
        33.3, 50.0, 100.0, 3, 2)
    assert (wrong["acc"], wrong["acc_short"], wrong["n_scored"], wrong["n_empty"]) == (20.0, 50.0, 5, 2)
    all_empty = [task_utils.process_results_v2(dict(RECS[1], pbs_empty_outputs="drop"), [""])]
    assert math.isnan(task_utils.aggregate_acc([x["acc"] for x in all_empty]))


def test_load_v2_stamps_the_policy_and_builds_rag_contexts():
    ds = task_utils.load_v2(data="fixtures")["test"]
    assert set(ds["pbs_empty_outputs"]) == {"drop"}
    assert set(task_utils.load_v2(data="fixtures", v2_empty_outputs="wrong")["test"]["pbs_empty_outputs"]) == {
        "wrong"}
    with pytest.raises(ValueError, match="empty_outputs"):
        task_utils.load_v2(data="fixtures", v2_empty_outputs="ignore")
    with pytest.raises(ValueError, match="rag_top_n"):
        task_utils.load_v2(data="fixtures", protocol="rag")
    raw = json.loads(data.FIXTURES_V2_RAG_FILE.read_text(encoding="utf-8"))
    rag = task_utils.load_v2(data="fixtures", protocol="rag", rag_top_n=2)["test"]
    first = sorted(raw[0]["retrieved_context"][:2], key=lambda c: c["c_idx"])
    assert rag[0]["context"] == "\n\n".join(f"Retrieved chunk {i + 1}: {c['content']}" for i, c in enumerate(first))
    assert "The main craft of" in rag[0]["context"]  # the best-ranked chunk holds the answer


def test_rag_needs_retrieved_context(tmp_path):
    plain = tmp_path / "v2.json"
    plain.write_text(data.FIXTURES_V2_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(data.DataUnavailableError, match="retrieved_context"):
        data.load_longbench_v2(plain, rag=True)
    assert len(data.load_longbench_v2(plain)) == 6  # the other protocols read it


def test_v2_hub_name_offline_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.DataUnavailableError, match=r"someone/longbench-v2-rag.*task\.data="):
        data.load_longbench_v2("hub:someone/longbench-v2-rag", rag=True)


# ------------------------------------------------------------------------------------------------ v2 prompts


REC = {"context": " DOC ", "question": " Q? ", "choice_A": "a", "choice_B": "b", "choice_C": "c", "choice_D": "d"}
CHOICES = "What is the correct answer to this question: Q?\nChoices:\n(A) a\n(B) b\n(C) c\n(D) d\n\n"


def test_v2_protocol_prompts():
    assert p.build_v2_prompt(REC, p.V2_PROMPT_COT) == (
        "Please read the following text and answer the questions below.\n\n<text>\nDOC\n</text>\n\n" + CHOICES
        + "Let\u2019s think step by step:")
    assert p.build_v2_prompt(REC, p.V2_PROMPT_COT_ANS, cot="step 1") == (
        "Please read the following text and answer the questions below.\n\nThe text is too long and omitted here."
        "\n\n" + CHOICES + "Let\u2019s think step by step: step 1\n\nBased on the above, what is the single, most "
        'likely answer choice? Format your response as follows: "The correct answer is (insert answer here)".')
    assert p.build_v2_prompt(REC, p.V2_PROMPT_NO_CONTEXT) == CHOICES + (
        'What is the single, most likely answer choice? Format your response as follows: '
        '"The correct answer is (insert answer here)".')
    assert p.build_v2_prompt(REC, p.V2_PROMPT_RAG).startswith(
        "Please read the following retrieved text chunks and answer the question below.\n\n<text>\nDOC\n</text>")
    assert {k: v[1] for k, v in p.V2_PROTOCOLS.items()} == {"0shot": 128, "cot": 1024, "no_context": 128,
                                                            "rag": 128}


def test_rag_context_top_n_in_document_order():
    ranked = [{"c_idx": 3, "content": "three"}, {"c_idx": 1, "content": "one"}, {"c_idx": 7, "content": "seven"},
              {"c_idx": 0, "content": "zero"}]
    assert p.rag_context(ranked, 3) == "Retrieved chunk 1: one\n\nRetrieved chunk 2: three\n\nRetrieved chunk 3: seven"
    assert p.rag_context(ranked, 10).startswith("Retrieved chunk 1: zero\n\n")
    with pytest.raises(ValueError, match="rag_top_n"):
        p.rag_context(ranked, 0)


# ------------------------------------------------------------------------------------------------ decoding


def test_greedy_and_sampling_rules():
    assert sampling_from_gen_kwargs({"do_sample": False, "temperature": 0.1}) is None
    assert sampling_from_gen_kwargs({"do_sample": True, "temperature": 0.0}) is None  # temperature 0 = greedy
    assert sampling_from_gen_kwargs({"do_sample": True, "temperature": 0.1}) == Sampling(0.1, 1.0)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(0.1, 1.5)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(-1.0)
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3]))
    assert next_token(logits, None, None) == 1
    g = torch.Generator().manual_seed(0)
    # top_p 0.5: token 1 alone reaches it; 0.8: tokens 1 and 2 (0.6 < 0.8), never token 0
    assert {next_token(logits, Sampling(1.0, 0.5), g) for _ in range(50)} == {1}
    assert {next_token(logits, Sampling(1.0, 0.8), g) for _ in range(200)} == {1, 2}
    assert {next_token(logits, Sampling(1.0, 1.0), g) for _ in range(400)} == {0, 1, 2}
    # temperature 0.1 sharpens 0.6 vs 0.3 to 2**10 : 1
    draws = [next_token(logits, Sampling(0.1), g) for _ in range(300)]
    assert draws.count(1) > 290


def test_request_seeds_are_reproducible_and_distinct():
    a = request_seed(42, "pbs_longbench_v2", 3, "answer")
    assert a == request_seed(42, "pbs_longbench_v2", 3, "answer")
    assert len({a, request_seed(43, "pbs_longbench_v2", 3, "answer"), request_seed(42, "pbs_longbench_v2", 4, "answer"),
                request_seed(42, "pbs_longbench_v2", 3, "cot")}) == 4


# ------------------------------------------------------------------------------------------------ configs


def _model(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="eval", overrides=[f"model={name}"]).model


def test_model_budgets_fit_their_documented_contexts():
    llama, qwen25 = _model("llama3.1-8b-instruct"), _model("qwen2.5-7b-instruct-1m")
    assert (llama.max_length, llama.max_length_v2) == (127500, 120000)  # model2maxlen of v1 (128K) and v2
    assert qwen25.max_length_v2 == 120000
    qwen3 = _model("qwen3-8b")  # native 32,768 (model card); the largest new-token budget is the CoT call's 1024
    assert qwen3.rope_scaling is None and qwen3.chat_template_kwargs.enable_thinking is False
    assert max(qwen3.max_length, qwen3.max_length_v2) + p.V2_COT_MAXLEN <= 32768
    yarn = _model("qwen3-8b-yarn")
    assert dict(yarn.rope_scaling) == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert max(yarn.max_length, yarn.max_length_v2) + p.V2_COT_MAXLEN <= 4 * 32768
    assert yarn.chat_template_kwargs.enable_thinking is False


def test_v2_task_settings_are_the_official_defaults():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for task in ("longbench_v2", "fixtures"):
            v2 = compose(config_name="eval", overrides=[f"task={task}"]).task.v2
            assert (v2.decoding, v2.temperature, v2.top_p, v2.empty_outputs) == ("sample", 0.1, 1.0, "drop")
    from pbs.eval.longbench.protocol import V2Protocol

    assert V2Protocol().gen_kwargs() is None  # the task files already sample at 0.1
    assert V2Protocol(decoding="greedy").gen_kwargs() == {"do_sample": False}
    assert V2Protocol(temperature=0.7).gen_kwargs() == {"temperature": 0.7, "top_p": 1.0}
    assert V2Protocol(rag_top_n=4).metadata() == {"v2_empty_outputs": "drop", "rag_top_n": 4}
    for bad in ({"decoding": "beam"}, {"empty_outputs": "skip"}, {"rag_top_n": 0}, {"top_p": 0.0}, {"seed": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            V2Protocol(**bad)


def test_v2_task_files_sample_at_the_reference_temperature():
    import yaml

    tasks = Path(task_utils.__file__).parent
    for name, max_new in (("longbench_v2", 128), ("longbench_v2_cot", 1024), ("longbench_v2_no_context", 128),
                          ("longbench_v2_rag", 128)):
        text = (tasks / f"{name}.yaml").read_text()
        gen = yaml.safe_load(text.split("generation_kwargs:")[1].split("metric_list:")[0].replace("\n  ", "\n"))
        assert gen == {"max_gen_toks": max_new, "until": [], "do_sample": True, "temperature": 0.1, "top_p": 1.0}
