"""End to end through lm-eval on CPU: a tiny random Llama, a BPE tokenizer trained on the fixtures, our tasks.

The scores of a random model are meaningless; these tests check the plumbing: the verbatim prompt reaches the model,
the chat-template and truncation rules, greedy decoding equal to ``generate``, logits_to_keep loglikelihoods equal
to HFLM's full-logits ones, density and prefill time recorded per request, and lm-eval's own task names passing
through.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pbs.eval.longbench import data
from pbs.eval.longbench.prompts import build_prompt, build_v2_prompt
from pbs.eval.tiny_model import build_tiny_model

PBS_KW = {"block_size": 16, "segment_size": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def pbs_lm(tiny):
    from pbs.eval.harness import build_lm

    return build_lm(str(tiny), method="pbs", method_kwargs=PBS_KW, device="cpu", dtype="float32")


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def test_evaluate_v1_and_v2_with_pbs(tiny, pbs_lm):
    from pbs.eval.harness import evaluate

    out = evaluate(str(tiny), method="pbs", method_kwargs=PBS_KW, tasks=["pbs_longbench_hotpotqa", "pbs_longbench_v2"],
                   limit=2, device="cpu", dtype="float32", lm=pbs_lm)
    json.dumps(out)  # serialisable
    hot, v2 = out["scores"]["pbs_longbench_hotpotqa"], out["scores"]["pbs_longbench_v2"]
    assert hot["metric"] == "qa_f1_score" and hot["n_samples"] == 2
    assert 0.0 <= hot["score"] <= 100.0 and hot["metrics"]["qa_f1_score"] == hot["metrics"]["score"] == hot["score"]
    assert v2["metric"] == "acc" and v2["score"] == v2["metrics"]["acc"] and 0.0 <= v2["score"] <= 100.0
    assert {"acc", "acc_easy", "acc_hard", "acc_short", "acc_medium", "acc_long"} <= set(v2["metrics"])
    assert out["longbench"]["average"] == hot["score"]
    assert out["config"]["method"] == "pbs" and out["config"]["method_kwargs"] == PBS_KW

    # density and prefill time per request; pbs really ran sparse (prompts of ~600-950 tokens, 16-token blocks)
    reqs = out["requests"]
    assert len(reqs) == 4 and {r["task"] for r in reqs} == {"pbs_longbench_hotpotqa", "pbs_longbench_v2"}
    for r in reqs:
        assert 0.0 < r["density"] < 1.0 and r["prefill_s"] > 0
        assert set(r["per_layer_density"]) == {0, 1}
        assert r["templated"] and not r["truncated"]
    assert 0.0 < out["density"]["mean"] < 1.0 and set(out["density"]["per_task"]) == {
        "pbs_longbench_hotpotqa", "pbs_longbench_v2"}
    assert out["prefill_ms"]["per_task"]["pbs_longbench_v2"]["requests"] == 2 and out["prefill_ms"]["mean"] > 0
    assert "mean_warm" in out["prefill_ms"] and [r["index"] for r in reqs] == sorted(r["index"] for r in reqs)

    # the verbatim prompts reached the model
    hot_recs = data.load_longbench("hotpotqa", "fixtures")
    v2_recs = data.load_longbench_v2("fixtures")
    shas = {(r["task"], r["doc_id"]): r["prompt_sha1"] for r in reqs}
    for i in range(2):
        assert shas[("pbs_longbench_hotpotqa", i)] == _sha(build_prompt("hotpotqa", hot_recs[i]))
        assert shas[("pbs_longbench_v2", i)] == _sha(build_v2_prompt(v2_recs[i]))

    # per-sample generations with ids and references
    rows = [g for g in out["generations"] if g["task"] == "pbs_longbench_hotpotqa"]
    assert [r["_id"] for r in rows] == [r["_id"] for r in hot_recs[:2]]
    assert all(isinstance(r["prediction"], str) and "density" in r and "score" in r for r in rows)
    v2_rows = [g for g in out["generations"] if g["task"] == "pbs_longbench_v2"]
    assert [r["answer"] for r in v2_rows] == [r["answer"] for r in v2_recs[:2]]


def test_untemplated_tasks_truncation_and_data_dir(tiny, tmp_path):
    """trec / samsum skip the chat template; middle truncation to max_length; data from data_dir."""
    from pbs.eval.harness import evaluate

    for name in ("trec", "samsum"):
        recs = data.load_longbench(name, "fixtures")
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(dict(r, _id=f"local{i}")) + "\n"
                                                        for i, r in enumerate(recs)), encoding="utf-8")
    out = evaluate(str(tiny), method="full", tasks=["pbs_longbench_trec", "pbs_longbench_samsum"], limit=1,
                   device="cpu", dtype="float32", max_length=200, data=tmp_path)
    assert {g["_id"] for g in out["generations"]} == {"local0"}  # read from `data`
    for r in out["requests"]:
        assert not r["templated"] and r["truncated"]
        assert r["prompt_tokens"] <= 200 + 4  # re-tokenizing the joined halves may merge/split a token or two
        assert r["density"] == pytest.approx(1.0)
    samsum = next(r for r in out["requests"] if r["task"] == "pbs_longbench_samsum")
    assert "\n" not in samsum["generation"].lstrip("\n")  # stops at the first newline after the text starts


def test_group_scores_are_plain_means(tiny, pbs_lm):
    """The synthetic category (all three datasets shipped): group score = mean of the dataset scores."""
    from pbs.eval.harness import evaluate

    out = evaluate(str(tiny), tasks=["pbs_longbench_synthetic"], limit=1, lm=pbs_lm)
    names = ["pbs_longbench_passage_count", "pbs_longbench_passage_retrieval_en", "pbs_longbench_passage_retrieval_zh"]
    assert set(out["scores"]) == set(names)
    mean = sum(out["scores"][n]["score"] for n in names) / 3
    assert {out["scores"][n]["metric"] for n in names} == {"count_score", "retrieval_score", "retrieval_zh_score"}
    assert out["groups"]["pbs_longbench_synthetic"]["score"] == pytest.approx(mean)
    assert out["longbench"]["synthetic"] == pytest.approx(round(mean, 2))


def test_greedy_loop_matches_generate(tiny):
    from pbs.eval.harness import build_lm

    lm = build_lm(str(tiny), method="sdpa", device="cpu", dtype="float32")
    ids = lm.tok_encode(build_prompt("gov_report", data.load_longbench("gov_report", "fixtures")[0]))
    text, _n_new, seconds, summary = lm._generate(ids, 24, [], samsum=False, longbench=False)
    ref = lm.model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, num_beams=1,
                            eos_token_id=sorted(lm._eos_ids), pad_token_id=lm.tokenizer.pad_token_id)
    assert text == lm.tok_decode(ref[0, len(ids):].tolist())
    assert summary is None and seconds > 0


def test_loglikelihood_logits_to_keep_matches_full_logits(pbs_lm):
    from lm_eval.models.huggingface import HFLM

    ctx = build_v2_prompt(data.load_longbench_v2("fixtures")[0])[:1500]
    reqs = []
    for cont in (" A", " B", " the main craft", "x"):
        c, k = pbs_lm._encode_pair(ctx, cont)
        reqs.append(((ctx, cont), c, k))
    ours = pbs_lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    full = HFLM._loglikelihood_tokens(pbs_lm, reqs, disable_tqdm=True)  # full-sequence logits, same model
    for (a, ga), (b, gb) in zip(ours, full):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    # an over-long context is middle-truncated on tokens, the continuation kept
    ctx_ids, cont_ids = list(range(100)), [7, 8, 9]
    fitted, cut = pbs_lm._fit_context(ctx_ids, cont_ids, 50)
    assert cut and len(fitted + cont_ids) - 1 == 50 and fitted[:24] == ctx_ids[:24] and fitted[-24:] == ctx_ids[-24:]


def test_model_args_string_and_registry(tiny):
    """``--model pbs --model_args pretrained=...,method=pbs,threshold=0.9``: method kwargs split and parsed."""
    from lm_eval.api.registry import get_model

    import pbs.eval.lm_eval_model  # noqa: F401  (registers "pbs")
    from pbs.eval.lm_eval_model import task_kind
    from pbs.eval.model_args import split_method_kwargs

    lm = get_model("pbs").create_from_arg_string(
        f"pretrained={tiny},method=pbs,threshold=0.8,block_size=16,segment_size=32,device=cpu,dtype=float32"
    )
    assert lm.method_kwargs == {"threshold": 0.8, "block_size": 16, "segment_size": 32}
    assert lm.model.config.pbs["kwargs"]["threshold"] == 0.8
    assert lm.model.config._attn_implementation == "pbs_pbs"
    mk, other = split_method_kwargs("flexprefill", {"gamma": "0.95", "min_budget": "8", "include_crossing_tile": "true",
                                                    "dtype": "bfloat16"})
    assert mk == {"gamma": 0.95, "min_budget": 8, "include_crossing_tile": True} and other == {"dtype": "bfloat16"}
    assert task_kind("pbs_longbench_lcc_e") == ("v1", "lcc_e")
    assert task_kind("longbench_repobench-p") == ("v1", "repobench-p")
    assert task_kind("longbench2_code") == ("v2", None) and task_kind("pbs_longbench_v2") == ("v2", None)
    assert task_kind("arc_easy") == (None, None)


def test_method_config_object_reaches_the_model(tiny):
    """The straight path: a config object goes to pbs.hf.enable as it is; the string form builds the same one."""
    from lm_eval.api.registry import get_model

    import pbs
    from pbs.eval.harness import build_lm

    cfg = pbs.PBSConfig(threshold=0.8, block_size=16, segment_size=32)
    lm = build_lm(str(tiny), method="pbs", method_config=cfg, device="cpu", dtype="float32")
    assert lm.method_config is cfg and lm.method_kwargs == {"threshold": 0.8, "block_size": 16, "segment_size": 32}
    by_string = get_model("pbs").create_from_arg_string(
        f"pretrained={tiny},method=pbs,threshold=0.8,block_size=16,segment_size=32,device=cpu,dtype=float32")
    assert by_string.method_config == cfg and by_string.model.config.pbs == lm.model.config.pbs
    with pytest.raises(ValueError, match="either in method_config or as model args"):
        build_lm(str(tiny), method="pbs", method_config=cfg, device="cpu", dtype="float32", threshold=0.5)
    with pytest.raises(ValueError, match="method_config must be a PBSConfig"):
        build_lm(str(tiny), method="pbs", method_config=pbs.XAttentionConfig(), device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="threshold"):  # checked before the model is loaded
        get_model("pbs").create_from_arg_string(f"pretrained={tiny},method=pbs,threshold=-1,device=cpu")


def test_lm_eval_own_task_names_pass_through(tiny, pbs_lm, tmp_path):
    """lm-eval's longbench_hotpotqa (generative) and a longbench2 task (loglikelihood multiple choice) run by
    name; their data is pointed at local copies of the fixtures in lm-eval's column layout."""
    import lm_eval

    from pbs.eval.harness import evaluate

    lm_tasks = Path(lm_eval.__file__).parent / "tasks"
    with open(tmp_path / "v2.jsonl", "w", encoding="utf-8") as f:
        for r in data.load_longbench_v2("fixtures"):
            r = dict(r, choices=[r.pop(f"choice_{c}") for c in "ABCD"])
            f.write(json.dumps(r) + "\n")
    with open(tmp_path / "hotpotqa.jsonl", "w", encoding="utf-8") as f:
        for r in data.load_longbench("hotpotqa", "fixtures"):
            f.write(json.dumps(dict(r, question=r.pop("input"))) + "\n")
    (tmp_path / "lb2.yaml").write_text(
        f"include: {lm_tasks / 'longbench2' / '_longbench_common_yaml'}\ntask: longbench2_fixture\n"
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {tmp_path / 'v2.jsonl'}\n")
    (tmp_path / "lb1.yaml").write_text(
        f"include: {lm_tasks / 'longbench' / 'hotpotqa.yaml'}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'hotpotqa.jsonl'}\n")
    out = evaluate(str(tiny), tasks=["longbench_hotpotqa", "longbench2_fixture"], limit=2, lm=pbs_lm,
                   include_path=tmp_path, include_defaults=False)
    assert out["scores"]["longbench_hotpotqa"]["metric"] == "qa_f1_score"
    assert out["scores"]["longbench2_fixture"]["metric"] == "acc"
    ll = [r for r in out["requests"] if r["request_type"] == "loglikelihood"]
    assert ll and all(r["task"] == "longbench2_fixture" and 0 < r["density"] < 1 for r in ll)
    assert sum(r["continuations"] for r in ll) == 8  # 2 questions x 4 choices, fewer forwards than that
    gen = [r for r in out["requests"] if r["task"] == "longbench_hotpotqa"]
    assert len(gen) == 2 and all(r["templated"] for r in gen)


def test_cli_main(tiny, tmp_path):
    from pbs.eval.harness import main

    out = tmp_path / "r.json"
    assert main(["--model", str(tiny), "--method", "pbs", "--method-kwargs", "block_size=16,segment_size=32",
                 "--tasks", "pbs_longbench_lcc", "--limit", "1", "--device", "cpu", "--dtype", "float32",
                 "--out", str(out)]) == 0
    assert "pbs_longbench_lcc" in json.loads(out.read_text())["scores"]
