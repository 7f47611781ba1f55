"""Token-space RULER training samples (pbs.train.tasks) against the evaluation generator's text format."""

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from pbs.eval.ruler import generate as ruler
from pbs.train import data as proxy_data
from pbs.train.config import DataConfig
from pbs.train.tasks import TASKS, TaskSampler


@pytest.fixture(scope="module")
def sampler():
    text, _ = proxy_data.load_corpus_text(max_chars=400_000)
    return TaskSampler(proxy_data.train_tokenizer(text, vocab_size=1024), (0.0, 0.9))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [768, 3000])
def test_sample_is_the_eval_prompt_in_tokens(sampler, task, length):
    tok = sampler.tok
    for seed in range(3):
        s = sampler.sample(task, length, np.random.default_rng([seed, length]))
        assert s.task == task and s.ids[0] == tok.bos_token_id and s.ids[-1] == tok.eos_token_id
        assert length - 120 <= len(s.ids) <= length  # whole units only: short by less than one unit
        prompt = tok.decode(s.ids[1 : s.prompt_len])
        # assembled unit by unit, the ids equal the tokenization of the whole text
        assert tok(prompt, add_special_tokens=False).input_ids == s.ids[1 : s.prompt_len].tolist()
        answer = tok.decode(s.ids[s.prompt_len : -1])
        assert ruler.score(task, answer, s.outputs) == 1.0
        cfg = ruler.TASKS[task]
        if cfg["kind"] == "niah":
            prefix, _ = ruler.NIAH_TEMPLATE.format(type_v=cfg["value"], context="\0", query="").split("\0")
            assert prompt.startswith(prefix)
            assert prompt.count(f"One of the special magic {cfg['value']} for ") == cfg["num_k"] * cfg["num_v"]
            for v in s.outputs:
                assert prompt.count(v) == 1
            assert prompt.endswith("mentioned in the provided text are")
        elif cfg["kind"] == "vt":
            value = prompt.split("assigned the value ")[1].split(" ")[0]
            assert f"VAR {s.outputs[0]} = {value}." in prompt
            for a, b in zip(s.outputs, s.outputs[1:]):
                assert f"VAR {b} = VAR {a}." in prompt
            assert prompt.endswith("they are: ")
        else:
            key = prompt.split('Key: "')[1].split('"')[0]
            assert f'"{key}": "{s.outputs[0]}"' in prompt
            ctx = prompt.split("JSON data:\n")[1].split("\n\nKey:")[0]
            import json

            assert json.loads(ctx)[key] == s.outputs[0]


def test_many_samples_fit_and_are_seeded(sampler):
    for i in range(300):
        task = TASKS[i % len(TASKS)]
        a = sampler.sample(task, 512, np.random.default_rng(i))
        assert len(a.ids) <= 512
        b = sampler.sample(task, 512, np.random.default_rng(i))
        assert np.array_equal(a.ids, b.ids)


def test_bad_task_and_too_short_length(sampler):
    with pytest.raises(ValueError, match="task='nope'"):
        sampler.sample("nope", 512, np.random.default_rng(0))
    with pytest.raises(ValueError, match="length=64"):
        sampler.sample("kv_retrieval", 64, np.random.default_rng(0))


def test_batch_rows_and_labels():
    text, _ = proxy_data.load_corpus_text(max_chars=200_000)
    tok = proxy_data.train_tokenizer(text, vocab_size=512)
    cfg = DataConfig(lm_fraction=0.5)
    data = proxy_data.ProxyData(tok, proxy_data.encode_corpus(tok, text), cfg)
    x, y, is_task = data.batch(16, 1024, [0, 7])
    x2, _, _ = data.batch(16, 1024, [0, 7])
    assert np.array_equal(x, x2) and x.shape == y.shape == (16, 1024)
    assert 0 < is_task.sum() < 16
    for r in range(16):
        if is_task[r]:
            lab = np.flatnonzero(y[r] != -100)
            assert y[r, lab[-1]] == tok.eos_token_id and np.array_equal(y[r, lab], x[r, lab])
            assert (x[r, lab[-1] + 1 :] == tok.pad_token_id).all()
        else:
            assert np.array_equal(x[r], y[r]) and x[r, 0] == tok.bos_token_id


def test_verify_catches_a_tokenizer_with_other_boundaries(sampler):
    sampler.verify(768)
    from tokenizers import pre_tokenizers

    tok = sampler.tok
    saved = tok.backend_tokenizer.pre_tokenizer
    try:  # a prefix space on every encode call breaks the unit-by-unit assembly
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=True)])
        broken = TaskSampler(tok, (0.0, 0.9))
        with pytest.raises(RuntimeError, match="differs from the tokenized text"):
            broken.verify(768)
    finally:
        tok.backend_tokenizer.pre_tokenizer = saved
