"""LongBench metrics on hand-made cases (expected values worked out by hand from the published rules)."""

import math

import pytest

from pbs.eval.longbench import metrics as m
from pbs.eval.longbench import prompts as p
from pbs.eval.longbench import scoring, truncation

# ------------------------------------------------------------------------------------------------ qa F1


def test_qa_f1_normalization_and_overlap():
    assert m.normalize_answer("The  Eiffel-Tower!  ") == "eiffeltower"
    assert m.normalize_answer("An apple, a pear and THE plum.") == "apple pear and plum"
    assert m.qa_f1_score("The Eiffel Tower!", "eiffel tower") == 1.0
    assert m.qa_f1_score("Paris France", "Paris") == pytest.approx(2 / 3)  # P=1/2, R=1
    assert m.qa_f1_score("London", "Paris") == 0.0
    assert m.qa_f1_score("", "Paris") == 0.0
    assert m.qa_f1_score("the", "a") == 0.0  # only articles: both sides empty after normalization
    # bag of tokens: repeated tokens count with multiplicity
    assert m.qa_f1_score("red red blue", "red blue blue") == pytest.approx(2 / 3)


def test_qa_f1_zh():
    # jieba: 我/爱/北京/天安门 vs 北京/天安门 -> overlap 2, P=2/4, R=2/2
    assert m.qa_f1_zh_score("我爱北京天安门", "北京天安门") == pytest.approx(2 / 3)
    assert m.qa_f1_zh_score("北京。", "北京") == 1.0  # the punctuation token normalizes to "" and is dropped
    assert m.qa_f1_zh_score("上海", "北京") == 0.0
    assert m.normalize_zh_answer("Ｈello， 世界！") == "ｈello世界"


# ------------------------------------------------------------------------------------------------ ROUGE


def test_rouge_scores():
    assert m.rouge_score("a b c", "a b c") == pytest.approx(1.0, abs=1e-6)
    # rouge 1.0.1 summary-level ROUGE-L counts distinct words: LCS 3, P = 3/3, R = 3/5 -> F = 2PR/(P+R) = 0.75
    assert m.rouge_score("the cat sat", "the cat sat on the mat") == pytest.approx(0.75, abs=1e-6)
    assert m.rouge_score("hello", "world") == 0.0
    assert m.rouge_score("", "abc") == 0.0  # the package raises on an empty hypothesis -> 0
    assert m.rouge_score(".", "abc") == 0.0


def test_rouge_zh():
    assert m.rouge_zh_score("今天天气很好", "今天天气很好") == pytest.approx(1.0, abs=1e-6)
    assert m.rouge_zh_score("", "今天天气很好") == 0.0
    assert 0.0 < m.rouge_zh_score("今天天气很好", "今天天气不好") < 1.0


# ------------------------------------------------------------------------------------------------ classification


def test_classification_basic():
    classes = ["City", "Country", "Date"]
    assert m.classification_score("City", "City", all_classes=classes) == 1.0
    assert m.classification_score("City or Country", "City", all_classes=classes) == 0.5
    assert m.classification_score("Date", "City", all_classes=classes) == 0.0
    assert m.classification_score("nothing", "City", all_classes=classes) == 0.0


def test_classification_reference_quirk():
    # matches in all_classes order: a, ab, abc, b. The reference removes the substrings of the gold label while
    # iterating the same list: "a" is removed, so "ab" (next) is never examined and survives; "abc" is the gold;
    # "b" is removed. Left: [ab, abc] -> 1/2. A clean filter would leave [abc] -> 1.
    assert m.classification_score("abc", "abc", all_classes=["a", "ab", "abc", "b"]) == 0.5
    # non-adjacent substrings are all dropped: [x, abc, a] -> "x" kept, "a" removed -> [x, abc] -> 1/2
    assert m.classification_score("abc x", "abc", all_classes=["x", "abc", "a"]) == 0.5
    # lsht-style Chinese labels work the same way
    assert m.classification_score("体育新闻", "体育", all_classes=["体育", "新闻", "财经"]) == 0.5


# ------------------------------------------------------------------------------------------------ retrieval / count


def test_retrieval_scores():
    assert m.retrieval_score("Paragraph 3", "Paragraph 3") == 1.0
    assert m.retrieval_score("Paragraph 3 or Paragraph 5", "Paragraph 3") == 0.5
    assert m.retrieval_score("I don't know", "Paragraph 3") == 0.0
    assert m.retrieval_score("Paragraph 03", "Paragraph 3") == 0.0  # integers compared as strings
    assert m.retrieval_zh_score("段落2", "段落2") == 1.0
    assert m.retrieval_zh_score("答案是段落2，不是段落12", "段落2") == 0.5


def test_count_score():
    assert m.count_score("There are 4 unique paragraphs", "4") == 1.0
    assert m.count_score("4 or 5", "4") == 0.5
    assert m.count_score("", "4") == 0.0
    assert m.count_score("14", "4") == 0.0
    assert m.count_score("4", 4) == 1.0


# ------------------------------------------------------------------------------------------------ code


def test_code_sim():
    assert m.first_code_line("\n\n```python\n    return x\n```") == "    return x"
    assert m.first_code_line("# comment\n// also\nfoo()") == "foo()"
    assert m.first_code_line("# c\n\nfoo()") == ""  # blank lines qualify (not skipped), as in the reference
    assert m.first_code_line("# only comments") == ""
    assert m.code_sim_score("abcd", "abce") == 0.75  # difflib ratio: 2*3/8
    assert m.code_sim_score("```\n    return x\n", "    return x") == 1.0
    assert m.code_sim_score("# c", "foo()") == 0.0


# ------------------------------------------------------------------------------------------------ per sample / dataset


def test_first_line_rule_and_max_over_references():
    classes = ["City", "Country"]
    assert scoring.score_sample("trec", "\n\nCity\nCountry", ["City"], classes) == 1.0  # cut to "City"
    assert scoring.score_sample("trec_e", "\nCity\nCountry", ["City"], classes) == 1.0
    assert scoring.score_sample("triviaqa", "Paris\nLondon", ["London"]) == 0.0  # only the first line counts
    assert scoring.score_sample("hotpotqa", "Paris\nLondon", ["London"]) == pytest.approx(2 / 3)  # no rule: 2 tokens
    assert scoring.score_sample("hotpotqa", "Paris", ["London", "Paris"]) == 1.0
    assert scoring.score_sample("hotpotqa", "Paris", "Paris") == 1.0
    for ds in ("trec", "triviaqa", "samsum", "lsht"):
        assert scoring.postprocess_prediction(ds, "\n\na\nb") == "a"
    assert scoring.postprocess_prediction("gov_report", "\na\nb") == "\na\nb"


def test_dataset_score_rounding_and_buckets():
    assert scoring.aggregate([1.0, 0.0, 0.5]) == 50.0
    assert scoring.aggregate([1 / 3] * 3) == 33.33
    assert math.isnan(scoring.aggregate([]))
    preds = ["Paris", "x", "Paris", "Paris", "x", "Paris"]
    refs = [["Paris"]] * 6
    lengths = [100, 3999, 4000, 7999, 8000, 20000]
    assert scoring.score_dataset("hotpotqa", preds, refs) == 66.67
    assert scoring.score_dataset_e("hotpotqa_e", preds, refs, lengths) == {"0-4k": 50.0, "4-8k": 100.0, "8k+": 50.0}
    assert [scoring.length_bucket(n) for n in lengths] == ["0-4k", "0-4k", "4-8k", "4-8k", "8k+", "8k+"]
    e = scoring.score_dataset_e("hotpotqa_e", ["Paris"], [["Paris"]], [10])
    assert e["0-4k"] == 100.0 and math.isnan(e["8k+"])
    # one shared class list for every sample
    assert scoring.score_dataset("trec", ["City", "Date"], [["City"], ["City"]], ["City", "Date"]) == 50.0


def test_tables_and_summary():
    assert len(m.DATASET2METRIC) == 21 and len(scoring.LONGBENCH_E) == 13
    assert sorted(n for names in scoring.CATEGORIES.values() for n in names) == sorted(m.DATASET2METRIC)
    assert set(scoring.LONGBENCH_E) <= set(m.DATASET2METRIC)
    assert m.DATASET2METRIC["multifieldqa_zh"] is m.qa_f1_zh_score
    assert m.DATASET2METRIC["dureader"] is m.rouge_zh_score and m.DATASET2METRIC["vcsum"] is m.rouge_zh_score
    assert m.DATASET2METRIC["lsht"] is m.classification_score
    assert m.DATASET2METRIC["repobench-p"] is m.code_sim_score
    assert scoring.category_of("lcc_e") == "code"
    s = scoring.summarize({"hotpotqa": 40.0, "musique": 20.0, "lcc": 60.0})
    # Avg = mean of the category means (30, 60); the dataset mean weighs multi twice
    assert s == {"multi": 30.0, "code": 60.0, "average": 45.0, "dataset_mean": 40.0, "n_datasets": 3}
    with pytest.raises(ValueError, match="unknown LongBench dataset"):
        scoring.base_dataset("nq")


# ------------------------------------------------------------------------------------------------ v2


def test_v2_extraction():
    assert m.extract_v2_answer('The correct answer is (B)') == "B"
    assert m.extract_v2_answer("**The correct answer is (C)**") == "C"
    assert m.extract_v2_answer("The correct answer is D.") == "D"
    assert m.extract_v2_answer("The *correct* answer is (A)") == "A"  # '*' removed first
    assert m.extract_v2_answer("The correct answer is A; no: The correct answer is (B)") == "B"  # paren form first
    assert m.extract_v2_answer("The correct answer is (E)") is None
    assert m.extract_v2_answer("the correct answer is (A)") is None  # case-sensitive, as the reference
    assert m.extract_v2_answer("I think B") is None
    assert m.v2_correct("The correct answer is (A)", "A") and not m.v2_correct("", "A")


def test_v2_breakdowns():
    recs = [
        {"difficulty": "easy", "length": "short", "answer": "A"},
        {"difficulty": "hard", "length": "short", "answer": "B"},
        {"difficulty": "easy", "length": "medium", "answer": "C"},
        {"difficulty": "hard", "length": "medium", "answer": "D"},
        {"difficulty": "easy", "length": "long", "answer": "A"},
        {"difficulty": "hard", "length": "long", "answer": "B"},
    ]
    preds = ["A", "A", "C", None, "A", "B"]
    acc = scoring.v2_accuracy(recs, preds)
    assert acc == {"overall": 66.7, "easy": 100.0, "hard": 33.3, "short": 50.0, "medium": 50.0, "long": 100.0,
                   "n_scored": 6, "n_empty": 0}
    comp = scoring.v2_accuracy(recs, preds, compensated=True)  # None counts 0.25
    assert comp["overall"] == round(100 * 4.25 / 6, 1) and comp["hard"] == round(100 * 1.25 / 3, 1)
    # from raw responses
    raw = [dict(r, response=f"The correct answer is ({p})" if p else "no idea") for r, p in zip(recs, preds)]
    assert scoring.v2_accuracy(raw) == acc
    assert math.isnan(scoring.v2_accuracy(recs[:1], ["A"])["hard"])


# ------------------------------------------------------------------------------------------------ truncation


class _WordTokenizer:
    """Whitespace 'tokenizer' with a BOS id 0 added like HF tokenizers do (skipped when decoding)."""

    def __init__(self):
        self.vocab = {"<s>": 0}

    def __call__(self, text, truncation=False):
        ids = [0]
        for w in text.split(" "):
            ids.append(self.vocab.setdefault(w, len(self.vocab)))
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=False):
        inv = {v: k for k, v in self.vocab.items()}
        return " ".join(inv[i] for i in ids if not (skip_special_tokens and i == 0))


def test_middle_truncation_on_token_lists():
    ids = list(range(10))
    assert truncation.middle_truncate_ids(ids, 4) == ([0, 1], [8, 9])
    assert truncation.middle_truncate_ids(ids, 5) == ([0, 1], [8, 9])  # v1 pred.py: half = int(5/2) = 2 each side: 4 kept
    # v2 pred.py: ids[:5//2] + ids[-5//2:]; -5//2 is -3 in Python, so 2 + 3 = 5 tokens are kept
    assert truncation.middle_truncate_ids(ids, 5, "v2") == ([0, 1], [7, 8, 9])
    assert truncation.middle_truncate_ids(ids, 4, "v2") == ([0, 1], [8, 9])  # even budgets agree
    assert truncation.middle_truncate_ids(ids, 10, "v2") is None
    with pytest.raises(ValueError, match="rule"):
        truncation.middle_truncate_ids(ids, 5, "v3")
    assert truncation.middle_truncate_ids(ids, 10) is None
    assert truncation.middle_truncate_ids(ids, 9) == ([0, 1, 2, 3], [6, 7, 8, 9])
    with pytest.raises(ValueError, match="max_length"):
        truncation.middle_truncate_ids(ids, 1)


def test_middle_truncation_on_strings():
    tok = _WordTokenizer()
    text = "w1 w2 w3 w4 w5 w6 w7 w8"  # 9 ids with BOS
    assert truncation.middle_truncate(text, tok, 9) == (text, False)
    out, cut = truncation.middle_truncate(text, tok, 6)  # keep ids[:3] = <s> w1 w2 and ids[-3:] = w6 w7 w8
    assert cut and out == "w1 w2" + "w6 w7 w8"  # halves decoded separately (BOS skipped) and concatenated
    out, cut = truncation.middle_truncate(text, tok, 6, rule="v2")
    assert cut and out == "w1 w2 w6 w7 w8"  # joined ids decoded at once
    out, cut = truncation.middle_truncate(text, tok, 7, rule="v2")  # ids[:3] + ids[-4:]: odd budget, 7 ids kept
    assert cut and out == "w1 w2 w5 w6 w7 w8"
    out, cut = truncation.middle_truncate(text, tok, 7)  # v1: int(7/2) = 3 each side
    assert cut and out == "w1 w2" + "w6 w7 w8"


# ------------------------------------------------------------------------------------------------ prompts


def test_prompts_verbatim_details():
    assert len(p.DATASET2PROMPT) == 21 and set(p.DATASET2PROMPT) == set(m.DATASET2METRIC)
    assert set(p.DATASET2MAXLEN) == set(p.DATASET2PROMPT)
    assert "asconcisely" in p.DATASET2PROMPT["narrativeqa"]
    assert "\n\n Answer the question based on the above article" in p.DATASET2PROMPT["qasper"]
    assert p.DATASET2PROMPT["multi_news"].startswith("You are given several news passages. Write a one-page "
                                                     "summary of all news. \n\nNews:")
    assert p.DATASET2PROMPT["passage_count"].endswith("The final answer is: ")
    assert p.DATASET2PROMPT["passage_retrieval_en"].endswith("The answer is: ")
    assert p.DATASET2PROMPT["lcc"] == "Please complete the code given below. \n{context}Next line of code:\n"
    assert p.DATASET2PROMPT["repobench-p"].endswith("{context}{input}Next line of code:\n")
    assert p.DATASET2PROMPT["hotpotqa"] == p.DATASET2PROMPT["2wikimqa"] == p.DATASET2PROMPT["musique"]
    assert p.DATASET2PROMPT["multifieldqa_zh"].endswith("问题：{input}\n回答：")
    assert {k: v for k, v in p.DATASET2MAXLEN.items() if v == 512} == dict.fromkeys(
        ["gov_report", "qmsum", "multi_news", "vcsum"], 512)
    assert p.DATASET2MAXLEN["samsum"] == 128 and p.DATASET2MAXLEN["lcc"] == 64
    assert p.UNTEMPLATED == {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}
    assert not p.needs_chat_template("samsum_e") and p.needs_chat_template("hotpotqa")
    rec = {"context": "CTX", "input": "Q?", "answers": ["a"]}
    assert p.build_prompt("trec", rec) == "Please determine the type of the question below. Here are some " \
                                          "examples of questions.\n\nCTX\nQ?"


def test_v2_prompt():
    t = p.V2_PROMPT_0SHOT
    assert t.startswith("Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>")
    assert t.endswith('Format your response as follows: "The correct answer is (insert answer here)".')
    rec = {"context": "  doc  ", "question": " q? ", "choice_A": "a ", "choice_B": "b", "choice_C": "c",
           "choice_D": " d"}
    out = p.build_v2_prompt(rec)
    assert "<text>\ndoc\n</text>" in out and "question: q?\nChoices:\n(A) a\n(B) b\n(C) c\n(D) d\n\n" in out
