"""The ``pbs`` lm-eval model's protocol settings on the tiny random Llama (CPU): prompt ids, the default chat
template, budgets, Qwen3's settings, the v2 CoT protocol, seeded sampling, empty outputs, and Table 1's Avg as the
lm-eval group score.

References stated independently: the official ``pred.py`` tokenizes an untemplated prompt with
``tokenizer(prompt)`` (BOS added); a chat-templated prompt already begins with the template's BOS, so it is encoded
without adding another (what vLLM's chat endpoint, used by LongBench v2, does).
"""

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from pbs.eval.longbench import data
from pbs.eval.longbench.prompts import V2_PROMPT_COT_ANS, build_prompt, build_v2_prompt
from pbs.eval.tiny_model import build_tiny_model

PBS_KW = {"block_size": 16, "segment_size": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def lm(tiny):
    from pbs.eval.harness import build_lm

    return build_lm(str(tiny), method="full", device="cpu", dtype="float32")


def test_prompt_ids_have_exactly_one_bos(tiny, lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    bos = tok.bos_token_id
    trec = build_prompt("trec", data.load_longbench("trec", "fixtures")[0])
    ids, cut, templated = lm.prepare_prompt(trec, "v1", "trec", 64)
    assert not templated and not cut
    assert ids == tok(trec)["input_ids"] and ids[0] == bos and ids.count(bos) == 1  # pred.py's tokenizer(prompt)
    hot = build_prompt("hotpotqa", data.load_longbench("hotpotqa", "fixtures")[0])
    ids, _, templated = lm.prepare_prompt(hot, "v1", "hotpotqa", 32)
    chat = "<s><|user|>\n" + hot + "\n<|assistant|>\n"  # the tiny template, written out
    assert templated and ids == tok(chat, add_special_tokens=False)["input_ids"]
    assert ids[0] == bos and ids.count(bos) == 1
    # the installed lm-eval's own encoding (used by its loglikelihood tasks) adds BOS to an untemplated string too:
    # lm-eval 0.4.9 / 0.4.9.1 did not (pyproject pins a later floor)
    assert lm.tok_encode(trec) == tok(trec)["input_ids"]
    assert lm.tok_encode(chat) == tok(chat, add_special_tokens=False)["input_ids"]  # no second BOS


def test_lm_eval_cli_default_is_the_longbench_template_rule(tiny, tmp_path):
    from lm_eval.api.registry import get_model

    import pbs.eval.lm_eval_model  # noqa: F401  (registers "pbs")

    lm = get_model("pbs").create_from_arg_string(f"pretrained={tiny},method=sdpa,device=cpu,dtype=float32")
    assert lm.apply_chat_template_longbench
    hot = build_prompt("hotpotqa", data.load_longbench("hotpotqa", "fixtures")[0])
    assert lm.prepare_prompt(hot, "v1", "hotpotqa", 32)[2] and not lm.prepare_prompt(hot, "v1", "lcc", 64)[2]
    base = tmp_path / "base"
    shutil.copytree(tiny, base)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    (base / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="apply_chat_template"):
        get_model("pbs").create_from_arg_string(f"pretrained={base},method=sdpa,device=cpu,dtype=float32")
    plain = get_model("pbs").create_from_arg_string(
        f"pretrained={base},method=sdpa,device=cpu,dtype=float32,apply_chat_template=false")
    assert not plain.prepare_prompt(hot, "v1", "hotpotqa", 32)[2]


def test_budgets_and_context_check(tiny):
    from pbs.eval.harness import build_lm

    with pytest.raises(ValueError, match=r"max_length=5000 exceeds .*max_position_embeddings=4096"):
        build_lm(str(tiny), method="sdpa", device="cpu", dtype="float32", max_length=5000)
    with pytest.raises(ValueError, match="max_length_v2"):
        build_lm(str(tiny), method="sdpa", device="cpu", dtype="float32", max_length_v2=8192)
    lm = build_lm(str(tiny), method="sdpa", device="cpu", dtype="float32", max_length=4000, max_length_v2=301)
    rec = data.load_longbench_v2("fixtures")[0]
    v2_prompt = build_v2_prompt(rec)
    n = len(lm.tokenizer(v2_prompt)["input_ids"])
    assert n > 301
    ids, cut, _ = lm.prepare_prompt(v2_prompt, "v2", None, 128)
    # the v2 rule keeps ids[:150] + ids[-151:]; BOS (first) is dropped by decoding, the template adds its own
    head_tail = lm.tokenizer(v2_prompt)["input_ids"]
    expected = lm.tokenizer.decode(head_tail[:150] + head_tail[-151:], skip_special_tokens=True)
    assert cut and lm.tokenizer.decode(ids) == "<s><|user|>\n" + expected + "\n<|assistant|>\n"
    assert not lm.prepare_prompt(v2_prompt, "v1", "hotpotqa", 32)[1]  # v1 budget: 4000


def test_thinking_switch_and_yarn(tiny):
    from pbs.eval.harness import build_lm

    lm = build_lm(str(tiny), method="sdpa", device="cpu", dtype="float32",
                  chat_template_kwargs={"enable_thinking": False},
                  rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024})
    lm.tokenizer.chat_template = (  # Qwen3's switch, reduced: an empty think block when thinking is off
        "{% for m in messages %}<|user|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"
        "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}")
    ids, _, templated = lm.prepare_prompt("question", None, None, 16)
    assert templated and lm.tokenizer.decode(ids).endswith("<|assistant|>\n<think>\n\n</think>\n\n")
    assert lm.model.config.max_position_embeddings == 4096  # 4 x 1024
    rotary = lm.model.model.rotary_emb
    assert rotary.rope_type == "yarn" and rotary.attention_scaling == pytest.approx(0.1 * math.log(4.0) + 1.0)
    with pytest.raises(ValueError, match="rope_scaling"):
        build_lm(str(tiny), method="sdpa", device="cpu", dtype="float32", rope_scaling={"factor": 2.0})


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def test_cot_protocol_makes_the_answer_call_with_the_first_output(lm):
    from pbs.eval.harness import evaluate

    out = evaluate(None, tasks=["pbs_longbench_v2_cot"], limit=2, lm=lm, v2={"decoding": "greedy"})
    reqs = out["requests"]
    assert [(r["doc_id"], r["stage"]) for r in reqs] == [(0, "cot"), (0, "answer"), (1, "cot"), (1, "answer")]
    recs = data.load_longbench_v2("fixtures")
    for doc_id in (0, 1):
        cot, answer = reqs[2 * doc_id], reqs[2 * doc_id + 1]
        assert cot["new_tokens"] <= 1024 and answer["new_tokens"] <= 128 and not cot["sampled"]
        assert cot["generation"] != ""
        assert answer["prompt_sha1"] == _sha(build_v2_prompt(recs[doc_id], V2_PROMPT_COT_ANS,
                                                             cot=cot["generation"].strip()))
    rows = out["generations"]
    assert [r["response_cot"] for r in rows] == [reqs[0]["generation"], reqs[2]["generation"]]
    assert [r["prediction"] for r in rows] == [reqs[1]["generation"], reqs[3]["generation"]]
    assert out["longbench_v2"]["pbs_longbench_v2_cot"]["n_scored"] == 2


def test_empty_outputs_are_dropped_or_counted_wrong(lm, monkeypatch):
    """An empty first (CoT) output ends the item without the answer call; the item leaves the denominator."""
    from pbs.eval.harness import evaluate

    monkeypatch.setattr(lm, "_generate", lambda *a, **k: ("", 0, 0.0, None))
    out = evaluate(None, tasks=["pbs_longbench_v2_cot"], limit=3, lm=lm)
    assert [r["stage"] for r in out["requests"]] == ["cot"] * 3
    v2 = out["longbench_v2"]["pbs_longbench_v2_cot"]
    assert (v2["n_scored"], v2["n_empty"], v2["empty_outputs"]) == (0, 3, "drop") and math.isnan(v2["acc"])
    out = evaluate(None, tasks=["pbs_longbench_v2"], limit=3, lm=lm, v2={"empty_outputs": "wrong"})
    v2 = out["longbench_v2"]["pbs_longbench_v2"]
    assert (v2["acc"], v2["n_scored"], v2["n_empty"], v2["empty_outputs"]) == (0.0, 3, 3, "wrong")


def test_sampling_is_seeded_per_request(lm):
    from pbs.eval.harness import evaluate

    def gens(seed, limit=3, **v2):
        out = evaluate(None, tasks=["pbs_longbench_v2"], limit=limit, lm=lm, v2=dict(v2, seed=seed))
        assert lm.seed == seed  # the protocol's seed drives the (reused) model's sampling
        return [r["generation"] for r in out["requests"]], out

    hot = {"temperature": 5.0}  # a near-uniform draw: different seeds must differ
    a, out = gens(7, **hot)
    assert all(r["sampled"] for r in out["requests"]) and out["config"]["seed"] == 7
    assert out["config"]["v2"]["temperature"] == 5.0
    assert gens(7, **hot)[0] == a
    assert gens(7, limit=1, **hot)[0] == a[:1]  # a request's draw does not depend on the others
    assert gens(8, **hot)[0] != a
    greedy, out = gens(7, decoding="greedy")
    assert not any(r["sampled"] for r in out["requests"]) and gens(9, decoding="greedy")[0] == greedy
    with pytest.raises(ValueError, match="v2 protocol's"):
        evaluate(None, tasks=["pbs_longbench_v2"], limit=1, lm=lm, model_kwargs={"seed": 3})
    gens(42, decoding="greedy")


def test_longbench_average_is_the_mean_of_the_category_means(tiny, lm, tmp_path, monkeypatch):
    """``evaluate``'s ``longbench.average`` is Table 1's Avg; lm-eval's group score (a flat group, as pbs_longbench)
    is the mean over the datasets, so it is not used for Avg. Answers are planted: the gold answer for passage_count and passage_retrieval_en (100 each), nothing
    elsewhere (0), so synthetic = 66.67, code = 0: Avg 33.33, while the mean over the five datasets is 40."""
    from pbs.eval.harness import evaluate

    def planted(req, context, stage, max_new, until, sampling):
        right = req.task_name in ("pbs_longbench_passage_count", "pbs_longbench_passage_retrieval_en")
        return req.doc["answers"][0] if right else ""

    monkeypatch.setattr(lm, "_call", planted)

    (tmp_path / "two.yaml").write_text(
        "group: two_categories\ntask:\n" + "".join(f"  - pbs_longbench_{n}\n" for n in (
            "passage_count", "passage_retrieval_en", "passage_retrieval_zh", "lcc", "repobench-p"))
        + "aggregate_metric_list:\n  - metric: score\n    aggregation: mean\n    weight_by_size: false\n")
    out = evaluate(None, tasks=["two_categories"], limit=1, lm=lm, include_path=tmp_path, include_defaults=False)
    s = {t: e["score"] for t, e in out["scores"].items()}
    synthetic = (s["pbs_longbench_passage_count"] + s["pbs_longbench_passage_retrieval_en"]
                 + s["pbs_longbench_passage_retrieval_zh"]) / 3
    code = (s["pbs_longbench_lcc"] + s["pbs_longbench_repobench-p"]) / 2
    assert (synthetic, code) == (pytest.approx(200 / 3), 0.0)
    assert out["groups"]["two_categories"]["score"] == pytest.approx(40.0)  # lm-eval: over datasets
    assert out["longbench"]["average"] == 33.33 and out["longbench"]["dataset_mean"] == 40.0
