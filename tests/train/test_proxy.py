"""CPU smoke test of pbs.train.proxy: train, checkpoint, resume, export, reload, retrieval eval."""

import dataclasses
from pathlib import Path

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


def _log_rows(folder):
    import csv

    with open(folder / "training_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_continue_from_a_milestone_goes_on_with_its_schedule(tmp_path):
    """A later session: weights, tokenizer, step and trained seconds from the export; curriculum and cosine go on
    at the milestone's progress, the fresh optimizer's LR re-warms from there, the log continues."""
    from transformers import AutoModelForCausalLM

    two_stages = [CurriculumStage(length=512, until=0.5), CurriculumStage(length=1024, until=1.0)]
    quiet = TaskEvalConfig(every=0, n_samples=0, final=False, perplexity_windows=0)
    cfg = dataclasses.replace(_cfg(tmp_path / "b", max_steps=6, lr=0.0, warmup_steps=4), curriculum=two_stages,
                              eval=quiet)
    milestone = tmp_path / "milestone"
    proxy.train(dataclasses.replace(_cfg(tmp_path / "m", max_steps=6, stop_after_minutes=1e-9), curriculum=two_stages,
                                    out_dir=str(milestone), eval=quiet))
    stopped = [r for r in _log_rows(milestone) if r["loss"]]
    assert [int(r["step"]) for r in stopped] == [1]  # stop_after_minutes ~0: one step, then checkpoint + export
    src = AutoModelForCausalLM.from_pretrained(milestone)

    second = proxy.train(dataclasses.replace(cfg, continue_from=str(milestone)))
    assert second["step"] == 6 and second["stopped_by"] == "steps"
    rows = [r for r in _log_rows(Path(second["out_dir"])) if r["loss"]]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]  # the milestone's row, then steps 2-6
    assert [int(r["length"]) for r in rows] == [512, 512, 512, 1024, 1024, 1024]  # progress 1/6 .. 5/6 at step start
    got = AutoModelForCausalLM.from_pretrained(second["out_dir"])
    for (name, a), (_, b) in zip(src.state_dict().items(), got.state_dict().items()):
        assert torch.equal(a, b), name  # lr 0: exactly the milestone's weights went on
    tcfg = OptimizationConfig(lr=1.0, warmup_steps=4, max_steps=6)
    assert proxy.lr_at(1, 1 / 6, tcfg, warm_from=1) == 0.25  # re-warm: the first step after the milestone
    assert proxy.lr_at(4, 4 / 6, tcfg, warm_from=1) == 1.0 and proxy.lr_at(5, 0.5, tcfg, warm_from=1) == 0.55

    with pytest.raises(ValueError, match="continue_from="):
        proxy.train(dataclasses.replace(cfg, continue_from=str(tmp_path / "a" / "run"), run_dir=str(tmp_path / "c")))
    with pytest.raises(ValueError, match="at most one of init_from"):
        dataclasses.replace(cfg, continue_from=str(milestone), init_from=str(milestone))


def test_stop_after_minutes_then_resume(tmp_path):
    quiet = TaskEvalConfig(every=0, n_samples=0, final=False, perplexity_windows=0)
    s1 = proxy.train(dataclasses.replace(_cfg(tmp_path, max_steps=4, stop_after_minutes=1e-9), eval=quiet))
    assert s1["step"] == 1 and s1["stopped_by"] == "stop_after_minutes" and s1["progress"] == 0.25
    assert latest_checkpoint(tmp_path / "run").name == "step_00000001"
    s2 = proxy.train(dataclasses.replace(_cfg(tmp_path, max_steps=4), eval=quiet, resume=True))
    assert s2["step"] == 4 and s2["stopped_by"] == "steps"


def test_batch_workers_build_the_same_batches_from_the_memory_mapped_corpus(tmp_path):
    """A spawned worker maps <run_dir>/corpus_ids.npy and builds exactly the batch this process would."""
    import numpy as np

    from pbs.train.config import DataConfig
    from pbs.train.data import BatchPool, ProxyData, lm_split, train_tokenizer

    tok = train_tokenizer("In the beginning was the word, and the word was with the number 42.\n" * 400, 300)
    tok.save_pretrained(tmp_path / "tokenizer")
    ids = (np.arange(5000, dtype=np.int32) * 7) % 250 + 6
    np.save(tmp_path / "corpus_ids.npy", ids)
    dcfg = DataConfig(lm_fraction=0.5, task_weights={"niah_single_1": 1.0})
    data = ProxyData(tok, lm_split(ids, dcfg), dcfg)
    pool = BatchPool(data, tmp_path / "tokenizer", dcfg, tmp_path / "corpus_ids.npy", workers=1)
    try:
        got = pool.get(3, 4, 512, 0)
    finally:
        pool.close()
    for a, b in zip(got, data.batch(4, 512, [0, 3])):
        assert np.array_equal(a, b)
    assert 0 < got[2].sum() < 4  # both kinds of rows
