"""The proxy trainer's settings: one dataclass (nested), the Hydra schema that ``conf/train_proxy.yaml`` extends.

Defaults are the Step 4 proxy's (``results/proxy/model-card.md``; Step 11's is conf/train_proxy_v2.yaml): a 6-layer GQA Llama, 4096-entry byte-level BPE,
10% LM windows + 90% RULER-task samples, a 512 -> 32K curriculum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the corpus (256-byte base alphabet: no unknowns; digits split)."""

    path: str | None = None  # null: train it on the corpus; or a saved tokenizer folder (e.g. models/pbs-proxy-llama-v2)
    vocab_size: int = 4096
    min_frequency: int = 2


@dataclass
class ProxyModelConfig:
    """transformers ``LlamaConfig`` fields (``rope_theta`` becomes ``rope_parameters``)."""

    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 6  # query heads
    num_key_value_heads: int = 2  # GQA: 3 query heads per KV head
    head_dim: int = 64
    intermediate_size: int = 1024
    rope_theta: float = 500000.0
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = True
    attn_implementation: str = "sdpa"
    initializer_range: float = 0.02


def _task_weights() -> dict[str, float]:
    # harder tasks weigh more: equal weights solved niah_single_* but never vt in a 7-minute run
    return {"niah_single_1": 0.5, "niah_single_2": 0.5, "niah_single_3": 1.0, "niah_multikey": 2.0,
            "niah_multivalue": 1.0, "niah_multiquery": 1.0, "vt": 3.0, "kv_retrieval": 1.5}


@dataclass
class DataConfig:
    lm_fraction: float = 0.1  # probability that a batch row is a plain LM window (else a RULER-task sample)
    # RULER tasks (pbs.eval.ruler.generate.TASKS) sampled in proportion; 0 = never
    task_weights: dict[str, float] = field(default_factory=_task_weights)
    retrieval_loss_weight: float = 0.8  # loss = (1-w) * mean LM-token CE + w * mean answer-token CE
    heldout_fraction: float = 0.05  # tail of the KJV verses (task haystacks) and of the LM corpus kept for evaluation
    # curriculum lengths below this train on LM windows only (a language-modelling phase before the tasks); 0 = off
    lm_only_below: int = 0
    # held-out text for the perplexity evaluation (e.g. corpus/heldout.txt.xz); null = the LM corpus's tail
    heldout_corpus: str | None = None
    # batch-building processes: an int, or auto = min(12, cpus - 2) on CUDA, 0 (in-process) on CPU
    workers: Any = "auto"

    def __post_init__(self) -> None:
        if self.workers != "auto" and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                       or self.workers < 0):
            raise ValueError(f"data.workers must be 'auto' or an integer >= 0, got workers={self.workers!r}")
        if not 0 <= self.lm_fraction <= 1:
            raise ValueError(f"data.lm_fraction must be in [0, 1], got lm_fraction={self.lm_fraction!r}")


@dataclass
class CurriculumStage:
    """Sequence length until training progress (0..1) reaches ``until``."""

    length: int
    until: float


def _curriculum() -> list[CurriculumStage]:
    return [CurriculumStage(512, 0.2), CurriculumStage(1024, 0.35), CurriculumStage(2048, 0.5),
            CurriculumStage(4096, 0.65), CurriculumStage(8192, 0.8), CurriculumStage(16384, 0.95),
            CurriculumStage(32768, 1.0)]


@dataclass
class OptimizationConfig:
    tokens_per_step: int = 65536  # batch = max(1, tokens_per_step // length)
    max_steps: int = 100000  # progress = max(step / max_steps, trained seconds / (60 * max_minutes))
    max_minutes: float | None = None  # time budget of the training loop (checkpoint + export after it); null = steps
    # end this invocation after this many minutes of training (checkpoint, export, final evaluation) without changing
    # the schedule above: `resume=true` (same run_dir) or `continue_from=<export>` (a later session) goes on from there
    stop_after_minutes: float | None = None
    lr: float = 1.0e-3  # AdamW peak LR: linear warmup, then cosine over progress to lr * min_lr_ratio
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1  # matrices only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    log_every: int = 10  # CSV row + tqdm postfix every N steps


@dataclass
class TaskEvalConfig:
    """RULER score of greedy decoding on held-out task samples, per task."""

    every: int = 1000  # steps between evaluations at the current length; 0 = never during training
    n_samples: int = 4  # samples per task
    final: bool = True  # also after the last step, at each of final_lengths
    final_lengths: list[int] = field(default_factory=lambda: [4096, 16384])
    perplexity_windows: int = 8  # held-out LM windows per evaluation (perplexity at the current length); 0 = never


@dataclass
class CheckpointConfig:
    """``<run_dir>/checkpoints/step_XXXXXXXX/state.pt``: model, optimizer, step, elapsed, RNG states."""

    every: int = 1000  # 0 = only at the end
    keep: int = 2  # newest checkpoints kept


@dataclass
class TrainProxyConfig:
    seed: int = 0
    device: str = "auto"  # auto = cuda if available else cpu; or cpu / cuda / cuda:1
    autocast_dtype: str | None = "bfloat16"  # autocast dtype on CUDA (weights and optimizer stay fp32); CPU: none
    compile: bool = False  # torch.compile the model (one recompile per curriculum length)
    corpus: str = "auto"  # auto = the shipped KJV if present, else LongBench fixture contexts; or a .txt/.gz/.xz path
    max_corpus_chars: int | None = None  # truncate the corpus (smoke tests)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ProxyModelConfig = field(default_factory=ProxyModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: list[CurriculumStage] = field(default_factory=_curriculum)
    train: OptimizationConfig = field(default_factory=OptimizationConfig)
    eval: TaskEvalConfig = field(default_factory=TaskEvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: bool = False  # continue from the newest checkpoint in run_dir (same run_dir, tokenizer reloaded)
    init_from: str | None = None  # a saved model folder to start from, fresh optimizer; pass tokenizer.path too
    # an exported milestone (weights, tokenizer, training_log.csv) of this same config to go on from in a fresh
    # run_dir (e.g. a later GPU session): its step and trained seconds set the schedule's progress, the log continues,
    # the optimizer starts fresh and its LR re-warms over train.warmup_steps
    continue_from: str | None = None
    run_dir: str = "outputs/train_proxy/run"  # checkpoints, tokenizer/, training_log.csv
    out_dir: str | None = None  # export folder (null = <run_dir>/export): safetensors + tokenizer + training_log.csv
    export_dtype: str = "bfloat16"  # weights cast for export (bf16: ~11 M params -> ~22 MB)
    max_shard_size: str = "15MB"  # safetensors shards kept under 16 MB each
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.init_from and self.continue_from:
            raise ValueError(f"set at most one of init_from (new schedule) and continue_from (the milestone's "
                             f"schedule), got init_from={self.init_from!r}, continue_from={self.continue_from!r}")
        self.curriculum = [s if isinstance(s, CurriculumStage) else CurriculumStage(**s) for s in self.curriculum]
        if not self.curriculum:
            raise ValueError("curriculum must have at least one stage, got curriculum=[]")
        too_long = [s.length for s in self.curriculum if s.length > self.model.max_position_embeddings]
        if too_long:
            raise ValueError(f"curriculum lengths {too_long} exceed model.max_position_embeddings="
                             f"{self.model.max_position_embeddings}")
