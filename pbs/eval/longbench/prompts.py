"""LongBench prompts, verbatim: v1 ``dataset2prompt`` / ``dataset2maxlen`` and the v2 templates of ``prompts/``.

These strings are benchmark *data* and must stay byte-for-byte as published, typos included ("asconcisely" in
narrativeqa, the leading space before "Answer the question" in qasper, the space before "\n\nNews:" in multi_news,
the trailing spaces of the passage tasks, no newline between ``{context}`` and "Next line of code" in lcc; v2's
"questions" and typographic apostrophe in the CoT templates).
Source: THUDM/LongBench v1 ``LongBench/config/dataset2prompt.json`` and ``dataset2maxlen.json`` (a later
root-level copy of the prompt file fixes "asconcisely"; the v1 code keeps it), and LongBench v2's
``prompts/0shot.txt``, ``0shot_cot.txt``, ``0shot_cot_ans.txt``, ``0shot_no_context.txt``, ``0shot_rag.txt``
(no trailing newlines). v1 prompts are filled with ``str.format(**record)``; the v2 templates with ``str.replace``
of ``$DOC$``, ``$Q$``, ``$C_A$`` .. ``$C_D$`` (and ``$COT$``), as ``pred.py`` does.
"""

from __future__ import annotations

from .scoring import base_dataset

#: v1 prompt per dataset (``template.format(**record)``; ``{context}`` and ``{input}``).
DATASET2PROMPT: dict[str, str] = {
    'narrativeqa': (
        'You are given a story, which can be either a novel or a movie script, and a question. Answer the question asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:'
    ),
    'qasper': (
        'You are given a scientific article and a question. Answer the question as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:'
    ),
    'multifieldqa_en': (
        'Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:'
    ),
    'multifieldqa_zh': (
        '阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答：'
    ),
    'hotpotqa': (
        'Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:'
    ),
    '2wikimqa': (
        'Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:'
    ),
    'musique': (
        'Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:'
    ),
    'dureader': (
        '请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：'
    ),
    'gov_report': (
        'You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:'
    ),
    'qmsum': (
        'You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:'
    ),
    'multi_news': (
        'You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:'
    ),
    'vcsum': (
        '下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：'
    ),
    'trec': (
        'Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}'
    ),
    'triviaqa': (
        'Answer the question based on the given passage. Only give me the answer and do not output any other words. The following are some examples.\n\n{context}\n\n{input}'
    ),
    'samsum': (
        'Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}'
    ),
    'lsht': (
        '请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}'
    ),
    'passage_count': (
        'There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: '
    ),
    'passage_retrieval_en': (
        'Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", etc.\n\nThe answer is: '
    ),
    'passage_retrieval_zh': (
        '以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是"段落1"，"段落2"等格式\n\n答案是：'
    ),
    'lcc': (
        'Please complete the code given below. \n{context}Next line of code:\n'
    ),
    'repobench-p': (
        'Please complete the code given below. \n{context}{input}Next line of code:\n'
    ),
}

#: max new tokens per v1 dataset (the official ``dataset2maxlen``).
DATASET2MAXLEN: dict[str, int] = {
    "narrativeqa": 128,
    "qasper": 128,
    "multifieldqa_en": 64,
    "multifieldqa_zh": 64,
    "hotpotqa": 32,
    "2wikimqa": 32,
    "musique": 32,
    "dureader": 128,
    "gov_report": 512,
    "qmsum": 512,
    "multi_news": 512,
    "vcsum": 512,
    "trec": 64,
    "triviaqa": 32,
    "samsum": 128,
    "lsht": 64,
    "passage_count": 32,
    "passage_retrieval_en": 32,
    "passage_retrieval_zh": 32,
    "lcc": 64,
    "repobench-p": 64,
}

#: datasets whose prompt is NOT wrapped in the chat template (official ``pred.py``: "chat models are better off
#: without build prompts on these tasks").
UNTEMPLATED: frozenset[str] = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})

#: LongBench v2 ``prompts/0shot.txt`` (no trailing newline).
V2_PROMPT_0SHOT: str = (
    "Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)

#: LongBench v2 ``prompts/0shot_cot.txt``: the first call of the chain-of-thought protocol (note "questions" and the
#: typographic apostrophe in "Let’s").
V2_PROMPT_COT: str = (
    "Please read the following text and answer the questions below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    "Let\u2019s think step by step:"
)

#: LongBench v2 ``prompts/0shot_cot_ans.txt``: the second call; the document is *not* repeated, ``$COT$`` is the
#: stripped first output.
V2_PROMPT_COT_ANS: str = (
    "Please read the following text and answer the questions below.\n\nThe text is too long and omitted here.\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    "Let\u2019s think step by step: $COT$\n\n"
    'Based on the above, what is the single, most likely answer choice? Format your response as follows: '
    '"The correct answer is (insert answer here)".'
)

#: LongBench v2 ``prompts/0shot_no_context.txt`` (memorization baseline: no document).
V2_PROMPT_NO_CONTEXT: str = (
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    'What is the single, most likely answer choice? Format your response as follows: '
    '"The correct answer is (insert answer here)".'
)

#: LongBench v2 ``prompts/0shot_rag.txt``: ``$DOC$`` is the joined retrieved chunks (:func:`rag_context`).
V2_PROMPT_RAG: str = (
    "Please read the following retrieved text chunks and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)

#: the v2 protocols (``pred.py``'s flags): template of the (first) call and its max new tokens
V2_PROTOCOLS: dict[str, tuple[str, int]] = {
    "0shot": (V2_PROMPT_0SHOT, 128),
    "cot": (V2_PROMPT_COT, 1024),
    "no_context": (V2_PROMPT_NO_CONTEXT, 128),
    "rag": (V2_PROMPT_RAG, 128),
}

#: max new tokens for the v2 direct-answer protocol (and the CoT protocol's answer call).
V2_MAXLEN: int = 128
#: max new tokens of the CoT protocol's first (reasoning) call.
V2_COT_MAXLEN: int = 1024
#: the reference's decoding for every v2 call: sampling at temperature 0.1 (``query_llm(..., temperature=0.1)``;
#: top-p is not set, so the server's default of 1.0 applies).
V2_TEMPERATURE: float = 0.1


def build_prompt(dataset: str, record: dict) -> str:
    """The v1 prompt for one record: ``DATASET2PROMPT[dataset].format(**record)`` (LongBench-E's ``<name>_e`` shares
    its dataset's prompt)."""
    return DATASET2PROMPT[base_dataset(dataset)].format(**record)


def build_v2_prompt(record: dict, template: str = V2_PROMPT_0SHOT, cot: str | None = None) -> str:
    """A v2 prompt: placeholders replaced by the record's stripped values, as the official ``pred.py`` does
    (``$DOC$`` by ``record["context"]``; ``$COT$`` by ``cot``, the CoT call's stripped output)."""
    out = (
        template.replace("$DOC$", record["context"].strip())
        .replace("$Q$", record["question"].strip())
        .replace("$C_A$", record["choice_A"].strip())
        .replace("$C_B$", record["choice_B"].strip())
        .replace("$C_C$", record["choice_C"].strip())
        .replace("$C_D$", record["choice_D"].strip())
    )
    return out if cot is None else out.replace("$COT$", cot)


def rag_context(retrieved: list[dict], top_n: int) -> str:
    """The RAG protocol's document: the first ``top_n`` retrieved chunks (ranked by the retriever), put back in
    document order (``c_idx``) and joined as ``"Retrieved chunk {i}: {content}"`` with blank lines (``pred.py``)."""
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ValueError(f"rag_top_n must be an integer >= 1, got rag_top_n={top_n!r}")
    chunks = sorted(retrieved[:top_n], key=lambda c: c["c_idx"])
    return "\n\n".join(f"Retrieved chunk {i + 1}: {c['content']}" for i, c in enumerate(chunks))


def needs_chat_template(dataset: str) -> bool:
    """False for the six untemplated v1 tasks (and their ``_e`` variants), True otherwise (incl. v2)."""
    return dataset.removesuffix("_e") not in UNTEMPLATED
