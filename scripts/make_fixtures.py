"""Write the small synthetic LongBench fixtures shipped in ``pbs/eval/longbench/fixtures/`` (deterministic).

    python scripts/make_fixtures.py            # rewrite the fixtures
    python scripts/make_fixtures.py --check    # exit 1 if the files on disk differ from what would be written

Every record is invented here (fictional places, people and numbers; no text from LongBench): three per v1 dataset
in the original THUDM schema (``input, context, answers, length, dataset, language, all_classes, _id``) with short
contexts (~200 words / ~300 characters), and six LongBench v2 records (easy/hard x short/medium/long) in the v2
schema (``_id, domain, sub_domain, difficulty, length, question, choice_A..D, answer, context``), and the same six
with an invented ``retrieved_context`` in the official RAG schema (``v2_rag.json``). They exercise the
harness end to end (prompts, chat-template rules, metrics, length buckets), not a model's ability.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "pbs" / "eval" / "longbench" / "fixtures"

# ----------------------------------------------------------------------------------------------- building blocks

TOWNS = ["Marrow Creek", "Hollin Vale", "Tessbury", "Quorn Ridge", "Ashfield Cross", "Vellmoor", "Dunmere", "Orrin Bay"]
PEOPLE = ["Ada Lindqvist", "Tomas Ferrell", "Mira Okonkwo", "Jonah Pike", "Lena Sauvé", "Ravi Menon", "Ilse Brandt"]
RIVERS = ["the Sallow", "the Brennet", "the Quill", "the Morrow", "the Hask"]
TRADES = ["clockmaking", "wool dyeing", "glass blowing", "salt panning", "paper milling", "bell casting"]
FILLER = [
    "The surrounding hills are covered in heather and low stone walls.",
    "Local records describe a market held every second Thursday.",
    "A narrow-gauge railway once connected the valley to the coast.",
    "Most houses in the old quarter are built from pale limestone.",
    "The annual lantern festival draws visitors from nearby villages.",
    "Winters are long, and the river often freezes near the mill.",
    "A small museum keeps tools, maps and letters from the early settlers.",
    "The parish church has a square tower and a bell cast in the town.",
    "Footpaths follow the old drovers' roads across the moor.",
    "The school was rebuilt after a fire destroyed the original hall.",
    "Fishermen still use flat-bottomed boats on the shallow reaches.",
    "An observatory on the ridge is open to the public on clear nights.",
]
ZH_FILLER = [
    "这座小城四面环山，空气清新，四季分明。",
    "城里的老街保留着许多青石板路和木结构房屋。",
    "每年春天，河两岸的桃花盛开，吸引了大量游客。",
    "当地居民以种茶和养蚕为主要生计。",
    "镇上的图书馆收藏了大量地方志和手稿。",
    "夏季多雨，河水常常漫过低洼的田地。",
    "一条古老的驿道从城北穿过，通向邻近的县城。",
    "这里的传统手工艺包括竹编和刺绣。",
]


def _rng(name: str) -> random.Random:
    return random.Random(int(hashlib.sha256(name.encode()).hexdigest()[:16], 16))


def _id(*parts) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:48]


def _filler(rng: random.Random, n: int, pool=FILLER) -> list[str]:
    return [rng.choice(pool) for _ in range(n)]


def _paragraph(rng: random.Random, town: str, fact: str, n_filler: int = 4) -> str:
    sentences = _filler(rng, n_filler)
    sentences.insert(rng.randrange(len(sentences) + 1), fact)
    return f"{town} is a small town. " + " ".join(sentences)


def _record(name: str, i: int, *, inp: str, context: str, answers, all_classes=None, language="en") -> dict:
    text = inp + context + "".join(answers)
    length = len(text) if language == "zh" else len(text.split())
    return {
        "input": inp,
        "context": context,
        "answers": list(answers),
        "length": length,
        "dataset": name,
        "language": language,
        "all_classes": all_classes,
        "_id": _id(name, i),
    }


# ----------------------------------------------------------------------------------------------- v1 datasets


def hotpotqa() -> list[dict]:
    rng = _rng("hotpotqa")
    out = []
    for i in range(3):
        town, person, trade = TOWNS[i], PEOPLE[i], TRADES[i]
        river = RIVERS[i % len(RIVERS)]
        passages = [
            (town, _paragraph(rng, town, f"{town} lies on the banks of {river} and is known for {trade}.", 6)),
            (person, f"{person} is a writer. " + " ".join(_filler(rng, 3))
             + f" {person} was born in {town} and later taught history there. " + " ".join(_filler(rng, 3))),
            (TOWNS[i + 3], _paragraph(rng, TOWNS[i + 3], f"{TOWNS[i + 3]} is famous for its {TRADES[i + 3]}.", 6)),
        ]
        rng.shuffle(passages)
        context = "\n".join(f"Passage {k + 1}:\n{title}\n{body}" for k, (title, body) in enumerate(passages))
        out.append(_record("hotpotqa", i, inp=f"Which river flows past the birthplace of {person}?",
                           context=context, answers=[river.removeprefix("the ")]))
    return out


def multifieldqa_zh() -> list[dict]:
    rng = _rng("multifieldqa_zh")
    facts = [
        ("青溪镇", "青溪镇始建于明朝初年，距今已有六百多年历史。", "青溪镇始建于什么时候？", "明朝初年"),
        ("石桥村", "石桥村的特产是一种名为“云雾”的绿茶。", "石桥村的特产是什么？", "云雾绿茶"),
        ("柳河县", "柳河县的县城位于柳河与白水河的交汇处。", "柳河县县城位于哪里？", "柳河与白水河的交汇处"),
    ]
    out = []
    for i, (place, fact, q, a) in enumerate(facts):
        sents = _filler(rng, 10, ZH_FILLER)
        sents.insert(rng.randrange(len(sents) + 1), fact)
        context = f"{place}简介。" + "".join(sents)
        out.append(_record("multifieldqa_zh", i, inp=q, context=context, answers=[a], language="zh"))
    return out


TREC_CLASSES = [
    "Abbreviation", "Animal", "City", "Country", "Date", "Definition of something", "Description of a person",
    "Individual", "Number of something", "Other location", "Reason", "Sport", "State", "Manner of an action",
]
TREC_QUESTIONS = [
    ("What does the abbreviation NATO stand for?", "Abbreviation"),
    ("Which animal is the largest living mammal?", "Animal"),
    ("What city hosts the annual lantern festival of the valley?", "City"),
    ("In what country is the Quorn Ridge observatory?", "Country"),
    ("When was the parish bell first cast?", "Date"),
    ("What is heather?", "Definition of something"),
    ("Who was Ada Lindqvist?", "Description of a person"),
    ("Who founded the Tessbury paper mill?", "Individual"),
    ("How many bridges cross the Brennet?", "Number of something"),
    ("Where can one see the old drovers' roads?", "Other location"),
    ("Why does the river freeze near the mill?", "Reason"),
    ("What sport is played on the frozen river?", "Sport"),
    ("What state is Vellmoor in?", "State"),
    ("How do fishermen steer flat-bottomed boats?", "Manner of an action"),
]


def trec() -> list[dict]:
    rng = _rng("trec")
    out = []
    targets = [("Which town is known for bell casting?", "City"), ("When did the railway close?", "Date"),
               ("How many houses are in the old quarter?", "Number of something")]
    for i, (q, label) in enumerate(targets):
        shots = [rng.choice(TREC_QUESTIONS) for _ in range(24)]
        context = "\n".join(f"Question: {sq}\nType: {sl}" for sq, sl in shots)
        out.append(_record("trec", i, inp=f"Question: {q}\nType:", context=context, answers=[label],
                           all_classes=TREC_CLASSES))
    return out


def samsum() -> list[dict]:
    rng = _rng("samsum")
    dialogues = [
        ("Ada: Are you coming to the market on Thursday?\nTomas: Yes, I need wool.\nAda: Great, see you at ten.",
         "Ada and Tomas will meet at the market on Thursday at ten."),
        ("Mira: The train is late again.\nJonah: How late?\nMira: Forty minutes. Start the meeting without me.",
         "Mira's train is forty minutes late, so Jonah will start the meeting without her."),
        ("Lena: Did you fix the clock?\nRavi: Not yet, the spring is broken.\nLena: Order a new one, please.",
         "Ravi has not fixed the clock because the spring is broken; Lena asks him to order a new one."),
        ("Ilse: Lantern festival tonight!\nAda: I'll bring candles.\nIlse: Perfect, I'll bring food.",
         "Ilse and Ada are going to the lantern festival; Ada brings candles and Ilse brings food."),
        ("Tomas: Is the museum open on Sunday?\nMira: Only in the afternoon.\nTomas: Then let's go at two.",
         "The museum opens on Sunday afternoon, so Tomas and Mira will go at two."),
    ]
    out = []
    for i in range(3):
        shots = [d for j, d in enumerate(dialogues) if j != i]
        rng.shuffle(shots)
        context = "\n\n".join(f"Dialogue: {d}\nSummary: {s}" for d, s in shots)
        d, s = dialogues[i]
        out.append(_record("samsum", i, inp=f"Dialogue: {d}\nSummary: ", context=context, answers=[s]))
    return out


def passage_retrieval_en() -> list[dict]:
    rng = _rng("passage_retrieval_en")
    out = []
    for i in range(3):
        towns = rng.sample(TOWNS, 6)
        paras = [_paragraph(rng, t, f"{t} is known for {rng.choice(TRADES)}.", 3) for t in towns]
        gold = rng.randrange(len(paras))
        context = "\n\n".join(f"Paragraph {k + 1}: {p}" for k, p in enumerate(paras))
        abstract = f"This paragraph describes {towns[gold]}, a small town."
        out.append(_record("passage_retrieval_en", i, inp=abstract, context=context,
                           answers=[f"Paragraph {gold + 1}"]))
    return out


def passage_count() -> list[dict]:
    rng = _rng("passage_count")
    out = []
    for i in range(3):
        n_unique = 3 + i
        towns = rng.sample(TOWNS, n_unique)
        uniques = [_paragraph(rng, t, f"{t} lies near {rng.choice(RIVERS)}.", 3) for t in towns]
        paras = uniques + [rng.choice(uniques) for _ in range(2)]
        rng.shuffle(paras)
        context = "\n\n".join(f"Paragraph {k + 1}: {p}" for k, p in enumerate(paras))
        out.append(_record("passage_count", i, inp="", context=context, answers=[str(n_unique)]))
    return out


def passage_retrieval_zh() -> list[dict]:
    rng = _rng("passage_retrieval_zh")
    places = ["青溪镇", "石桥村", "柳河县", "白云乡", "东湖镇", "松林村"]
    specialties = ["绿茶", "竹编", "刺绣", "米酒", "陶器", "丝绸"]
    out = []
    for i in range(3):
        order = rng.sample(range(len(places)), 5)
        paras = [f"{places[k]}以{specialties[k]}闻名。" + "".join(_filler(rng, 3, ZH_FILLER)) for k in order]
        gold = rng.randrange(len(paras))
        context = "\n\n".join(f"段落{k + 1}：{p}" for k, p in enumerate(paras))
        abstract = f"本段介绍了以{specialties[order[gold]]}闻名的{places[order[gold]]}。"
        out.append(_record("passage_retrieval_zh", i, inp=abstract, context=context, answers=[f"段落{gold + 1}"],
                           language="zh"))
    return out


LCC_SNIPPETS = [
    ("def mean(values):\n    total = 0\n    for v in values:\n        total += v\n", "    return total / len(values)"),
    ("class Counter:\n    def __init__(self):\n        self.count = 0\n\n    def increment(self):\n",
     "        self.count += 1"),
    (("public int Max(int[] xs) {\n    int best = xs[0];\n    foreach (var x in xs) {\n        if (x > best) best = x;\n"
      "    }\n"), "    return best;"),
]


def lcc() -> list[dict]:
    rng = _rng("lcc")
    out = []
    helpers = [
        "import math\nimport os\n\n\ndef clamp(x, lo, hi):\n    return max(lo, min(hi, x))\n\n\n",
        "def norm(v):\n    return math.sqrt(sum(c * c for c in v))\n\n\n",
        "def read_lines(path):\n    with open(path) as f:\n        return [line.rstrip() for line in f]\n\n\n",
        "def pairs(xs):\n    return list(zip(xs, xs[1:]))\n\n\n",
    ]
    for i, (code, nxt) in enumerate(LCC_SNIPPETS):
        pre = "".join(rng.sample(helpers, 3)) if i < 2 else "// utility functions\n"
        out.append(_record("lcc", i, inp="", context=pre + code, answers=[nxt]))
    return out


def repobench_p() -> list[dict]:
    rng = _rng("repobench-p")
    files = [
        ("# Path: geometry/vector.py\nclass Vector:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n"
         "    def dot(self, other):\n        return self.x * other.x + self.y * other.y\n"),
        ("# Path: geometry/shapes.py\nfrom geometry.vector import Vector\n\n\nclass Circle:\n"
         "    def __init__(self, center, r):\n        self.center = center\n        self.r = r\n"),
        ("# Path: util/io.py\ndef load_points(path):\n    with open(path) as f:\n"
         "        return [tuple(map(float, line.split())) for line in f]\n"),
    ]
    tasks = [
        ("import math\nfrom geometry.vector import Vector\n\n\ndef length(v):\n", "    return math.sqrt(v.dot(v))"),
        ("from geometry.shapes import Circle\n\n\ndef area(c):\n", "    return 3.14159 * c.r * c.r"),
        ("from util.io import load_points\n\n\ndef count(path):\n", "    return len(load_points(path))"),
    ]
    out = []
    for i, (code, nxt) in enumerate(tasks):
        ctx = "".join(rng.sample(files, len(files)))
        out.append(_record("repobench-p", i, inp=code, context=ctx, answers=[nxt]))
    return out


def gov_report() -> list[dict]:
    rng = _rng("gov_report")
    out = []
    topics = [("rural rail services", "ridership fell by a third", "restore two daily trains"),
              ("river flood defenses", "three levees need repair", "fund the repairs over five years"),
              ("public library funding", "opening hours were cut", "restore weekend opening")]
    for i, (topic, finding, rec) in enumerate(topics):
        body = [f"This report reviews {topic} in the valley districts."]
        body += _filler(rng, 5)
        body.append(f"The review found that {finding} since the last assessment.")
        body += _filler(rng, 5)
        body.append(f"The agency recommends that the council {rec}.")
        summary = f"The report reviews {topic}, finds that {finding}, and recommends that the council {rec}."
        out.append(_record("gov_report", i, inp="", context=" ".join(body), answers=[summary]))
    return out


V1_BUILDERS = {
    "hotpotqa": hotpotqa,
    "multifieldqa_zh": multifieldqa_zh,
    "trec": trec,
    "samsum": samsum,
    "passage_retrieval_en": passage_retrieval_en,
    "passage_count": passage_count,
    "passage_retrieval_zh": passage_retrieval_zh,
    "lcc": lcc,
    "repobench-p": repobench_p,
    "gov_report": gov_report,
}

# ----------------------------------------------------------------------------------------------- v2


def longbench_v2() -> list[dict]:
    rng = _rng("longbench_v2")
    specs = [
        ("easy", "short", "Single-Document QA", "Academic", 0),
        ("hard", "short", "Multi-Document QA", "Financial", 1),
        ("easy", "medium", "Long In-context Learning", "Many-shot learning", 2),
        ("hard", "medium", "Long-dialogue History Understanding", "Agent history QA", 3),
        ("easy", "long", "Code Repository Understanding", "Code repo QA", 0),
        ("hard", "long", "Long Structured Data Understanding", "Table QA", 2),
    ]
    out = []
    for i, (difficulty, length, domain, sub, gold) in enumerate(specs):
        town, trade = TOWNS[i], TRADES[i % len(TRADES)]
        sents = _filler(rng, 14)
        sents.insert(rng.randrange(len(sents) + 1), f"The main craft of {town} is {trade}.")
        options = [trade] + [t for t in TRADES if t != trade][:3]
        rest = options[1:]
        rng.shuffle(rest)
        options = rest[:gold] + [trade] + rest[gold:]
        out.append({
            "_id": _id("longbench_v2", i),
            "domain": domain,
            "sub_domain": sub,
            "difficulty": difficulty,
            "length": length,
            "question": f"What is the main craft of {town}?",
            "choice_A": options[0],
            "choice_B": options[1],
            "choice_C": options[2],
            "choice_D": options[3],
            "answer": "ABCD"[gold],
            "context": f"{town} is a small town. " + " ".join(sents),
        })
    return out


def longbench_v2_rag() -> list[dict]:
    """The v2 records plus ``retrieved_context`` in the official RAG schema: the context's sentences as chunks
    ``{"c_idx", "content", "start_idx", "end_idx"}`` (character offsets, as LongCite's ``text_split_by_punctuation``
    returns them), ranked by how many question words they share (ties: document order). An invented retriever:
    the fixture exercises the loading and prompt assembly, not retrieval quality."""
    out = []
    for rec in longbench_v2():
        chunks, pos = [], 0
        for sentence in rec["context"].replace(". ", ".\n").split("\n"):
            start = rec["context"].index(sentence, pos)
            pos = start + len(sentence)
            chunks.append({"c_idx": len(chunks), "content": sentence, "start_idx": start, "end_idx": pos})
        words = set(rec["question"].lower().rstrip("?").split())
        ranked = sorted(chunks, key=lambda c: (-len(words & set(c["content"].lower().rstrip(".").split())),
                                               c["c_idx"]))
        out.append(dict(rec, retrieved_context=ranked))
    return out


# ----------------------------------------------------------------------------------------------- writing


def render() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for name, build in V1_BUILDERS.items():
        lines = [json.dumps(rec, ensure_ascii=False) for rec in build()]
        files[OUT / "v1" / f"{name}.jsonl"] = "\n".join(lines) + "\n"
    files[OUT / "v2.json"] = json.dumps(longbench_v2(), ensure_ascii=False, indent=1) + "\n"
    files[OUT / "v2_rag.json"] = json.dumps(longbench_v2_rag(), ensure_ascii=False, indent=1) + "\n"
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = ap.parse_args(argv)
    files = render()
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)}")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
