"""The embedded default model until the trained proxy lands: a tiny Llama with random weights and a BPE
tokenizer trained on the shipped fixture text. It exercises the whole pipeline offline on a CPU in seconds;
its scores mean nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FIXTURES = Path(__file__).with_name("fixtures")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
VERSION = "1"  # bump when the recipe changes: the cache folder is keyed by it


def default_path() -> Path:
    cache = Path(os.environ.get("PBS_CACHE", Path.home() / ".cache" / "pbs"))
    return cache / f"tiny-llama-v{VERSION}"


def _corpus() -> list[str]:
    texts = []
    for path in sorted(FIXTURES.rglob("*.json*")):
        raw = path.read_text(encoding="utf-8")
        records = [json.loads(line) for line in raw.splitlines() if line.strip()] if path.suffix == ".jsonl" \
            else json.loads(raw)
        for r in records:
            texts.extend(str(r.get(key, "")) for key in ("context", "input", "question"))
    return [t for t in texts if t] or ["the quick brown fox jumps over the lazy dog"]


def build_tiny_model(path: str | Path | None = None, seed: int = 0) -> Path:
    """Create (once) and return the folder of the tiny model: config, safetensors weights, tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path) if path else default_path()
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=32768,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
