"""Loglikelihood requests of the ``pbs`` lm-eval model (e.g. lm-eval's ``longbench2_*`` multiple choice): batch 1,
one prefill per distinct input with ``logits_to_keep`` = the continuation length, an over-long context
middle-truncated on tokens with the continuation kept whole; each forward logged like a generation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .longbench.truncation import middle_truncate_ids


class LoglikelihoodRequests:
    """Mixed into :class:`pbs.eval.lm_eval_model.PBSLM` before lm-eval's HFLM (uses its ``_prefill``, request log,
    cache hook and ``max_length``)."""

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self._ll_meta = [(r.task_name, r.doc_id) for r in requests]
        try:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            self._ll_meta = None

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        """Batch 1, one forward per distinct input, ``logits_to_keep`` = the longest continuation among them."""
        meta = getattr(self, "_ll_meta", None)
        if meta is not None and len(meta) != len(requests):
            meta = None
        budget = self.max_length
        prepared = []
        for i, (_, ctx, cont) in enumerate(requests):
            ctx, cut = self._fit_context(list(ctx), list(cont), int(budget))
            inp = (ctx + cont)[:-1]
            prepared.append((tuple(inp), cont, cut))
        groups: dict[tuple, list[int]] = {}
        for i, (inp, _, _) in enumerate(prepared):
            groups.setdefault(inp, []).append(i)
        res: list[tuple[float, bool] | None] = [None] * len(requests)
        for inp, members in tqdm(groups.items(), disable=disable_tqdm or self.rank != 0, desc="pbs loglikelihood"):
            keep = max(len(prepared[i][1]) for i in members)
            inp_t = torch.tensor([inp], dtype=torch.long, device=self.device)
            out, seconds, summary = self._prefill(inp_t, keep, use_cache=False)
            logprobs = F.log_softmax(out.logits[0].float(), dim=-1)  # (keep, vocab)
            del out
            for i in members:
                cont = prepared[i][1]
                lp = logprobs[-len(cont):]
                target = torch.tensor(cont, dtype=torch.long, device=lp.device)
                greedy = bool((lp.argmax(-1) == target).all())
                answer = (float(lp.gather(1, target[:, None]).sum()), greedy)
                res[i] = answer
                request_str = requests[i][0]
                if request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", request_str, answer)
            task, doc_id = meta[members[0]] if meta else (None, None)
            self.request_log.append({
                "index": self._next_index(),
                "task": task,
                "doc_id": doc_id,
                "request_type": "loglikelihood",
                "prompt_tokens": len(inp),
                "truncated": any(prepared[i][2] for i in members),
                "templated": False,
                "prefill_s": seconds,
                **self._density_fields(summary),
                "continuations": len(members),
            })
        return res

    @staticmethod
    def _fit_context(ctx: list[int], cont: list[int], budget: int) -> tuple[list[int], bool]:
        """Middle-truncate the context tokens so that ``len(ctx + cont) - 1 <= budget``; the continuation stays."""
        room = budget - len(cont) + 1
        if len(ctx) <= room:
            return ctx, False
        if room < 2:
            raise ValueError(f"continuation of {len(cont)} tokens does not fit max_length={budget}")
        head, tail = middle_truncate_ids(ctx, room)
        return head + tail, True
