"""A tiny random-weight Llama (GQA) and a byte-level BPE tokenizer trained on the shipped LongBench fixtures
(``model=tiny``): it runs the whole LongBench pipeline offline on a CPU in seconds, for tests; its scores mean
nothing. The embedded default model is the trained proxy, ``models/pbs-proxy-llama-v2`` (``model=proxy``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .longbench.data import FIXTURES_V1_DIR, FIXTURES_V2_FILE

VERSION = "1"  # bump when the recipe changes: the cache folder is keyed by it


def default_path() -> Path:
    cache = Path(os.environ.get("PBS_CACHE", Path.home() / ".cache" / "pbs"))
    return cache / f"tiny-llama-v{VERSION}"


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def fixture_text() -> list[str]:
    texts = []
    for path in sorted(FIXTURES_V1_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            texts += [rec["context"], rec["input"], *rec["answers"]]
    for rec in json.loads(FIXTURES_V2_FILE.read_text(encoding="utf-8")):
        texts += [rec["context"], rec["question"]] + [rec[f"choice_{c}"] for c in "ABCD"]
    return texts


def build_tiny_model(out_dir: str | Path | None = None, *, vocab_size: int = 384, seed: int = 0) -> Path:
    """Create (once) and return the tiny model's folder: config, weights, tokenizer (default: the user cache)."""
    out_dir = Path(out_dir) if out_dir else default_path()
    if (out_dir / "config.json").exists() and (out_dir / "tokenizer.json").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(fixture_text(), trainer=trainer)
    from tokenizers import processors

    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   additional_special_tokens=["<|user|>", "<|assistant|>"])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out_dir)
    return out_dir

