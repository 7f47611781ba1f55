"""CPU smoke test of pbs.train.proxy: train, checkpoint, resume, export, reload, retrieval eval."""

import dataclasses

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from pbs.train import proxy
from pbs.train.checkpoint import latest_checkpoint
from pbs.train.config import (
    CheckpointConfig,
    CurriculumStage,
    OptimizationConfig,
    ProxyModelConfig,
    TaskEvalConfig,
    TokenizerConfig,
    TrainProxyConfig,
)


def _cfg(tmp_path, **train) -> TrainProxyConfig:
    return TrainProxyConfig(
        device="cpu",
        max_corpus_chars=300_000,
        tokenizer=TokenizerConfig(vocab_size=512),
        model=ProxyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                               head_dim=32, intermediate_size=128, max_position_embeddings=1024),
        curriculum=[CurriculumStage(length=512, until=1.0)],
        train=OptimizationConfig(**{"tokens_per_step": 1024, "warmup_steps": 2, "log_every": 1, **train}),
        eval=TaskEvalConfig(every=3, n_samples=1, final=True, final_lengths=[512]),
        checkpoint=CheckpointConfig(every=3, keep=2),
        run_dir=str(tmp_path / "run"),
        out_dir=str(tmp_path / "export"),
        progress_bar=False,
    )


def test_train_resume_export(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    s1 = proxy.train(_cfg(tmp_path, max_steps=3))
    assert s1["step"] == 3
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "step_00000003" and (ckpt / "state.pt").exists()

    s2 = proxy.train(dataclasses.replace(_cfg(tmp_path, max_steps=5), resume=True))
    assert s2["step"] == 5
    assert latest_checkpoint(tmp_path / "run").name == "step_00000005"
    assert 0.0 <= s2["eval_acc"] <= 1.0 and set(s2["final_scores"]) == {"512"}
    # held-out perplexity: logged at each evaluation and after the last step, below the untrained model's ~vocab
    assert set(s2["final_heldout_ppl"]) == {"512"} and 1.0 < s2["final_heldout_ppl"]["512"] < 2 * 512

    log = (tmp_path / "export" / "training_log.csv").read_text().splitlines()
    assert log[0].endswith(",heldout_ppl") and sum(1 for r in log[1:] if r.split(",")[-1]) >= 2
    steps = [int(r.split(",")[0]) for r in log[1:]]
    assert steps == sorted(steps) and set(range(1, 6)) <= set(steps)  # resumed rows continue the step count

    out = tmp_path / "export"
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_key_value_heads == 1 and model.config.tie_word_embeddings
    ids = tok("The special magic number is 1234567.", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    assert tok.decode(ids[0], skip_special_tokens=True) == "The special magic number is 1234567."
    assert model(ids).logits.shape[-1] == len(tok)
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|assistant|>\n")
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())

    from pbs.train.tasks import TaskSampler

    scores = proxy.evaluate_tasks(model, TaskSampler(tok, (0.95, 1.0)), ["niah_single_1", "vt"], 512, 1, 0,
                                  model.device)
    assert set(scores) == {"niah_single_1", "vt"} and all(0.0 <= v <= 1.0 for v in scores.values())


def test_init_from_a_saved_model(tmp_path):
    from transformers import AutoModelForCausalLM

    first = proxy.train(_cfg(tmp_path / "a", max_steps=2))
    src = AutoModelForCausalLM.from_pretrained(first["out_dir"])
    cfg = dataclasses.replace(_cfg(tmp_path / "b", max_steps=1, lr=0.0, warmup_steps=1), init_from=first["out_dir"],
                              tokenizer=TokenizerConfig(path=first["out_dir"]))
    second = proxy.train(cfg)
    got = AutoModelForCausalLM.from_pretrained(second["out_dir"])
    for (name, a), (_, b) in zip(src.state_dict().items(), got.state_dict().items()):
        assert torch.equal(a, b), name  # lr 0: the weights are exactly the source's

    bad = dataclasses.replace(_cfg(tmp_path / "c", max_steps=1), init_from=first["out_dir"],
                              tokenizer=TokenizerConfig(path=first["out_dir"]))
    bad.model = dataclasses.replace(bad.model, hidden_size=96, num_attention_heads=3)
    with pytest.raises(ValueError, match="init_from="):
        proxy.train(bad)


class _UniformModel(torch.nn.Module):
    """Logits all zero over a vocabulary of ``vocab``: perplexity exactly ``vocab`` on any text."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids, use_cache=False):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


def test_heldout_perplexity_of_a_uniform_model_is_the_vocabulary():
    import numpy as np

    windows = np.random.default_rng(0).integers(0, 37, size=(3, 20))
    assert proxy.heldout_perplexity(_UniformModel(37), windows, torch.device("cpu"), batch=2) == pytest.approx(37.0)


def test_lm_only_phase_and_heldout_windows():
    import numpy as np

    from pbs.train.config import DataConfig
    from pbs.train.data import ProxyData, lm_heldout, lm_split, train_tokenizer

    text = "In the beginning was the word, and the word was with the number 42.\n" * 400
    tok = train_tokenizer(text, vocab_size=300)
    ids = np.arange(1000, dtype=np.int32) % 250 + 6
    dcfg = DataConfig(lm_fraction=0.0, lm_only_below=1024)
    data = ProxyData(tok, lm_split(ids, dcfg), dcfg)
    assert not data.batch(8, 512, [0, 1])[2].any()  # below lm_only_below: LM windows only
    assert data.batch(8, 1024, [0, 1])[2].all()  # from it on: lm_fraction (0 here: tasks only)
    held = lm_heldout(ids, dcfg)
    assert len(lm_split(ids, dcfg)) + len(held) == len(ids)
    w = data.heldout_windows(held, 16, 3)
    assert w.shape == (3, 16) and (w[:, 0] == tok.bos_token_id).all()
    assert len(held) == 50
    for row, start in zip(w, (0, 11, 23)):  # evenly spaced: i * (50 - 16 + 1) // 3
        assert (row[1:] == held[start : start + 15]).all()
