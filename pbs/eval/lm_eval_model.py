"""An lm-eval model ``pbs``: HFLM with a sparse-prefill method switched on and the LongBench inference protocol.

    python -m pbs.eval run --model pbs --model_args pretrained=PATH,method=pbs,threshold=0.9,max_length=127500 \
        --tasks pbs_longbench_hotpotqa          (registers the model, adds our tasks; lm-eval's CLI otherwise)

Model args: everything :class:`lm_eval.models.huggingface.HFLM` takes (``pretrained``, ``dtype``, ``device``,
``max_length``, ``tokenizer``, ...), plus

- ``method`` (default ``"pbs"``): one of ``pbs.available_methods()``; ``"sdpa"`` leaves the model untouched;
- ``backend`` (default ``"auto"``): the attention backend of ``pbs.sparse_attention`` -- *not* HFLM's ``backend``
  (always ``"causal"`` here; ``hf_backend`` overrides it);
- ``short_seq_policy`` (default True): passed to :func:`pbs.hf.enable`;
- every field of the method's config dataclass (``dataclasses.fields(get_method(method).config_cls)``), e.g.
  ``threshold=0.9,block_size=128``; numbers and booleans given as strings are parsed; or, from Python,
  ``method_config``: the config object itself (``pbs.PBSConfig(threshold=0.9)``), passed to ``pbs.hf.enable`` as
  it is;
- ``apply_chat_template`` (default True): the LongBench rule (below); a tokenizer without a chat template needs
  ``apply_chat_template=false``. Use this instead of lm-eval's global ``--apply_chat_template`` (that one templates
  before truncation and for every task);
- ``max_length_v2``: LongBench v2's prompt budget (``config/model2maxlen.json``: 120000 for Llama-3.1-8B and
  Qwen2.5-7B); unset: ``max_length``;
- ``seed`` (default 42): seeds the sampled decoding of tasks that sample (LongBench v2), per request;
- ``enable_thinking`` / ``chat_template_kwargs``: passed to the chat template (Qwen3: ``enable_thinking=false``);
- ``rope_scaling``: a dict (or JSON string) merged into the model's RoPE parameters before loading, e.g. Qwen3's
  YaRN ``{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}``; the model's
  ``max_position_embeddings`` becomes ``factor * original_max_position_embeddings``.

Protocol (THUDM/LongBench ``LongBench/pred.py`` for v1, ``pred.py`` for v2; README, "LongBench protocol"), batch
size 1:

1. middle truncation of the prompt to the budget, *before* the chat template: ``max_length`` (v1, LongBench's
   ``model2maxlen``: e.g. 127500 for a 128K model; new tokens come on top) or ``max_length_v2`` (v2). v1 keeps
   ``int(L/2)`` tokens from each end and decodes the halves separately; v2 keeps ``ids[:L//2] + ids[-L//2:]``
   (L tokens for odd L) and decodes them together, as the two ``pred.py`` do. Without an explicit budget it is the
   model's maximum length minus the request's ``max_gen_toks``; a budget above the model's
   ``max_position_embeddings`` is refused;
2. the chat template (one user message, generation prompt added) unless the task is trec, triviaqa, samsum,
   lsht, lcc or repobench-p (or their ``_e`` variants) -- when ``apply_chat_template=True``;
3. token ids: a templated prompt is encoded with ``add_special_tokens=False`` (the template writes any BOS), an
   untemplated one with the tokenizer's defaults (BOS added), as ``pred.py``'s ``tokenizer(prompt)`` -- whatever
   the installed lm-eval's HFLM would do;
4. one prefill forward with ``logits_to_keep=1`` (no full-vocabulary logits for the prompt), then decoding over the
   KV cache: greedy, or sampled when the task's ``generation_kwargs`` say ``do_sample`` (LongBench v2: temperature
   0.1, top-p 1.0; :mod:`pbs.eval.decoding`); stops at an EOS id (tokenizer + generation config) or a stop string.
   samsum follows the reference: its first new token may not be EOS or the newline token, and it stops at a
   newline;
5. ``pbs_longbench_v2_cot`` makes two calls per question, as ``pred.py --cot``: the CoT prompt with 1024 new tokens,
   then (unless that output is empty) ``0shot_cot_ans`` holding the stripped first output, 128 new tokens;
6. loglikelihood requests (e.g. lm-eval's ``longbench2_*``) run one prefill per distinct input with
   ``logits_to_keep`` = the continuation length (one forward serves every single-token choice of a question);
   an over-long context is middle-truncated on tokens, the continuation kept whole.

Each call appends a record to ``self.request_log``: index (0 for the first request this model object serves --
its prefill time includes one-off costs such as Triton JIT compilation, 2.5 s on an H100 for PBS), task, doc_id,
stage (``"answer"``, or ``"cot"`` for the CoT protocol's first call), prompt tokens, whether it was truncated /
templated / sampled, prefill seconds (CUDA events on GPU, ``perf_counter`` on CPU), the prefill's mean density and
per-layer density from the :class:`pbs.hf.StatsCollector`, dense-fallback reasons (e.g. the short-sequence policy),
new tokens and the generation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import time

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from .decoding import Sampling, next_token, request_seed, sampling_from_gen_kwargs
from .loglikelihood import LoglikelihoodRequests
from .longbench.prompts import V2_MAXLEN, V2_PROMPT_COT_ANS, build_v2_prompt, needs_chat_template
from .longbench.scoring import DATASETS
from .longbench.truncation import middle_truncate
from .model_args import NO_METHOD, method_config_from_args, parse_mapping, parse_value, scaled_rope_config

eval_logger = logging.getLogger(__name__)

_ENABLE_ARGS = ("short_seq_policy",)


def task_kind(task_name: str | None) -> tuple[str | None, str | None]:
    """``("v1", dataset)`` for a LongBench v1/E task (ours or lm-eval's), ``("v2", None)`` for LongBench v2
    (ours: generative; lm-eval's ``longbench2_*``: loglikelihood), ``(None, None)`` otherwise."""
    if not task_name:
        return None, None
    name = task_name
    if name.startswith(("pbs_longbench_v2", "longbench2")):
        return "v2", None
    for prefix in ("pbs_longbench_", "longbench_"):
        if name.startswith(prefix):
            ds = name[len(prefix):]
            base = ds.removesuffix("_e")
            if base in DATASETS:
                return "v1", ds
    return None, None


@register_model("pbs")
class PBSLM(LoglikelihoodRequests, HFLM):
    """HFLM + ``pbs.hf.enable`` + the LongBench protocol (see the module docstring)."""

    def __init__(
        self,
        pretrained,
        method: str = "pbs",
        backend: str = "auto",
        apply_chat_template: bool = True,
        hf_backend: str = "causal",
        batch_size: int | str = 1,
        max_length_v2: int | str | None = None,
        seed: int | str = 42,
        enable_thinking: bool | str | None = None,
        chat_template_kwargs: dict | str | None = None,
        rope_scaling: dict | str | None = None,
        method_config=None,
        **kwargs,
    ) -> None:
        method = str(method)
        method_config, hf_kwargs = method_config_from_args(method, method_config, kwargs)
        enable_kwargs = {k: parse_value(hf_kwargs.pop(k)) for k in _ENABLE_ARGS if k in hf_kwargs}
        if "max_length" in hf_kwargs:
            hf_kwargs["max_length"] = parse_value(hf_kwargs["max_length"])
        if str(batch_size) != "1":
            raise ValueError(f"the pbs model runs one request at a time: batch_size must be 1, got {batch_size!r}")
        self.rope_scaling = parse_mapping("rope_scaling", rope_scaling)
        if self.rope_scaling and not isinstance(pretrained, str):
            raise ValueError("rope_scaling applies while loading a checkpoint: pass pretrained as a path or hub id, "
                             f"got a {type(pretrained).__name__}")
        if self.rope_scaling:
            config_kwargs = {k: hf_kwargs[k] for k in ("revision", "trust_remote_code") if k in hf_kwargs}
            hf_kwargs["config"] = scaled_rope_config(pretrained, self.rope_scaling, **config_kwargs)
        super().__init__(pretrained=pretrained, backend=hf_backend, batch_size=1, **hf_kwargs)
        self.method = method
        self.attn_backend = backend
        self.method_config = method_config
        self.apply_chat_template_longbench = bool(parse_value(apply_chat_template))
        self.max_length_v2 = parse_value(max_length_v2)
        self.seed = int(parse_value(seed))
        self.chat_template_kwargs = parse_mapping("chat_template_kwargs", chat_template_kwargs) or {}
        if parse_value(enable_thinking) is not None:
            self.chat_template_kwargs["enable_thinking"] = bool(parse_value(enable_thinking))
        self._check_protocol_settings()
        self.request_log: list[dict] = []
        self.collector = None
        if method not in NO_METHOD:
            import pbs.hf

            pbs.hf.register()
            self.collector = pbs.hf.enable(self.model, method=method, backend=backend, config=method_config,
                                           **enable_kwargs)
        self._eos_ids = self._collect_eos_ids()
        # transformers >= 5.2x renamed the forward's `past_key_values` to `cache` (the old name warns)
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        nl = self.tokenizer.encode("\n", add_special_tokens=False)
        self._newline_id = nl[-1] if nl else None

    @property
    def method_kwargs(self) -> dict:
        """The method's settings that differ from its defaults ({} for ``method="sdpa"``)."""
        if self.method_config is None:
            return {}
        default = type(self.method_config)()
        return {f.name: getattr(self.method_config, f.name) for f in dataclasses.fields(self.method_config)
                if getattr(self.method_config, f.name) != getattr(default, f.name)}

    # ------------------------------------------------------------------------------------------------- helpers

    def _check_protocol_settings(self) -> None:
        if self.apply_chat_template_longbench and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                "apply_chat_template=True (the LongBench rule, the default) but the tokenizer has no chat template: "
                "pass apply_chat_template=false for a base model"
            )
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for name, value in (("max_length", self._max_length), ("max_length_v2", self.max_length_v2)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {name}={value!r}")
            if limit and value > limit:
                raise ValueError(
                    f"{name}={value} exceeds the model's context (max_position_embeddings={limit}): lower {name}, "
                    "or configure rope_scaling where the model card documents it (e.g. Qwen3's YaRN)"
                )

    def _next_index(self) -> int:
        """Requests served by this model object so far (index 0 pays one-off costs such as Triton compilation)."""
        self._served = getattr(self, "_served", -1) + 1
        return self._served

    def _collect_eos_ids(self) -> set[int]:
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif gen_eos:
            ids.update(int(i) for i in gen_eos)
        return ids

    def _prompt_budget(self, max_gen_toks: int, kind: str | None = None) -> int:
        if kind == "v2" and self.max_length_v2:
            return int(self.max_length_v2)
        if self._max_length:  # explicit: LongBench's prompt budget (model2maxlen)
            return int(self._max_length)
        return int(self.max_length) - int(max_gen_toks)

    def encode_prompt(self, prompt: str, templated: bool) -> list[int]:
        """Token ids of a final prompt: the template already holds any BOS; an untemplated prompt gets the
        tokenizer's special tokens (BOS), as the references' ``tokenizer(prompt)``."""
        return list(self.tokenizer.encode(prompt, add_special_tokens=not templated))

    def prepare_prompt(self, context: str, kind: str | None, dataset: str | None, max_new: int):
        """``(ids, truncated, templated)``: middle truncation (v1 or v2 rule), chat template, encoding."""
        budget = self._prompt_budget(max_new, kind)
        prompt, truncated = middle_truncate(context, self.tokenizer, budget, rule="v2" if kind == "v2" else "v1")
        templated = self.apply_chat_template_longbench and (kind != "v1" or needs_chat_template(dataset))
        if templated:
            prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                        add_generation_prompt=True, **self.chat_template_kwargs)
        return self.encode_prompt(prompt, templated), truncated, templated

    def _timer(self):
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()

            def stop() -> float:
                end.record()
                end.synchronize()
                return start.elapsed_time(end) / 1000.0

            return stop
        t0 = time.perf_counter()
        return lambda: time.perf_counter() - t0

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                              enabled=self.mixed_precision_dtype is not None)

    def _prefill(self, input_ids: torch.Tensor, logits_to_keep: int, use_cache: bool = True):
        """One forward over the prompt; returns (output, seconds, density summary or None).

        ``use_cache=False`` for scoring-only prefills: no KV cache is kept (16 GB for Llama-3.1-8B at 128K).
        """
        if self.collector is not None:
            self.collector.reset()
        stop = self._timer()
        with torch.no_grad(), self._autocast():
            out = self.model(input_ids=input_ids, use_cache=use_cache, logits_to_keep=logits_to_keep)
        seconds = stop()
        summary = self.collector.summary() if self.collector is not None else None
        return out, seconds, summary

    @staticmethod
    def _density_fields(summary: dict | None) -> dict:
        if summary is None:
            return {"density": None, "per_layer_density": None, "dense_fallbacks": None}
        return {
            "density": summary.get("mean_density"),
            "per_layer_density": summary.get("per_layer"),
            "dense_fallbacks": summary.get("dense_fallbacks") or None,
        }

    # ------------------------------------------------------------------------------------------------- generation

    def _generate(self, ids: list[int], max_new: int, until: list[str], *, samsum: bool, longbench: bool,
                  sampling: Sampling | None = None, generator: torch.Generator | None = None):
        """Prefill + decode; returns ``(text, new tokens, prefill seconds, density summary)``."""
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        out, seconds, summary = self._prefill(input_ids, logits_to_keep=1)
        stop_ids = set(self._eos_ids)
        if samsum and self._newline_id is not None:
            stop_ids.add(self._newline_id)
        new: list[int] = []
        past = _cache_of(out)
        logits = out.logits[0, -1]
        with torch.no_grad(), self._autocast():
            for step in range(max_new):
                if samsum and step == 0 and stop_ids:  # the reference's min_length=context+1
                    logits = logits.clone()
                    logits[list(stop_ids)] = float("-inf")
                tok = next_token(logits, sampling, generator)
                if tok in stop_ids:
                    break
                new.append(tok)
                if until:
                    text = self.tok_decode(new)
                    if _find_stop(text, until, skip_leading_newlines=longbench) is not None:
                        break
                if step + 1 == max_new:
                    break
                step_out = self.model(
                    input_ids=torch.tensor([[tok]], dtype=torch.long, device=self.device),
                    use_cache=True, logits_to_keep=1, **{self._cache_kw: past},
                )
                past = _cache_of(step_out)
                logits = step_out.logits[0, -1]
        del past, out
        text = self.tok_decode(new)
        cut = _find_stop(text, until, skip_leading_newlines=longbench) if until else None
        if cut is not None:
            text = text[:cut]
        return text, len(new), seconds, summary

    def _call(self, req, context: str, stage: str, max_new: int, until: list[str], sampling: Sampling | None) -> str:
        """One prompt -> one generation, logged."""
        kind, dataset = task_kind(req.task_name)
        ids, truncated, templated = self.prepare_prompt(context, kind, dataset, max_new)
        base = dataset[:-2] if dataset and dataset.endswith("_e") else dataset
        generator = None
        if sampling is not None:
            generator = torch.Generator().manual_seed(request_seed(self.seed, req.task_name, req.doc_id, stage))
        text, n_new, seconds, summary = self._generate(
            ids, max_new, until, samsum=(base == "samsum"), longbench=kind == "v1", sampling=sampling,
            generator=generator,
        )
        self.request_log.append({
            "index": self._next_index(),
            "task": req.task_name,
            "doc_id": req.doc_id,
            "request_type": "generate_until",
            "stage": stage,
            "prompt_sha1": hashlib.sha1(context.encode("utf-8")).hexdigest(),
            "prompt_tokens": len(ids),
            "truncated": truncated,
            "templated": templated,
            "sampled": sampling is not None,
            "prefill_s": seconds,
            **self._density_fields(summary),
            "new_tokens": n_new,
            "generation": text,
        })
        return text

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="pbs generate_until"):
            context, gen_kwargs = req.args
            gen = dict(gen_kwargs or {})
            until = gen.pop("until", None) or []
            if isinstance(until, str):
                until = [until]
            max_new = int(gen.pop("max_gen_toks", self.max_gen_toks))
            sampling = sampling_from_gen_kwargs(gen)
            if req.task_name == "pbs_longbench_v2_cot":  # pred.py --cot: reasoning call, then the answer call
                text = self._call(req, context, "cot", max_new, list(until), sampling)
                if text != "":  # an empty output ends the item (it is left out of the results)
                    answer_prompt = build_v2_prompt(req.doc, V2_PROMPT_COT_ANS, cot=text.strip())
                    text = self._call(req, answer_prompt, "answer", V2_MAXLEN, [], sampling)
            else:
                text = self._call(req, context, "answer", max_new, list(until), sampling)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            results.append(text)
        return results


def _cache_of(out):
    """The KV cache of a forward's output (``cache`` in transformers >= 5.2x, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None) if "cache" in out else None
    return cache if cache is not None else out["past_key_values"]


def _find_stop(text: str, until: list[str], *, skip_leading_newlines: bool) -> int | None:
    """Index of the earliest stop string in ``text`` (searched after the leading newlines for LongBench tasks, so
    samsum's "\\n" stop acts on the first non-empty line, as the reference's stop token + first-line rule do)."""
    start = len(text) - len(text.lstrip("\n")) if skip_leading_newlines else 0
    hits = [i for i in (text.find(s, start) for s in until if s) if i >= 0]
    return min(hits) if hits else None
