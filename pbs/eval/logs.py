"""Quiet by default: a job shows one progress bar (the model's requests) and our own lines; ``verbose=true`` shows
the rest (lm-eval's task building and warnings, transformers' and datasets' bars, wandb's banners)."""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings

#: loggers whose INFO/WARNING lines a quiet job drops (errors still show)
NOISY_LOGGERS = ("lm_eval", "lm-eval", "transformers", "datasets", "huggingface_hub", "httpx", "urllib3", "wandb",
                 "filelock", "fsspec", "absl", "accelerate")
_NOISY_MODULES = r"(lm_eval|transformers|datasets|huggingface_hub|wandb|accelerate|torch)(\.|$)"


@contextlib.contextmanager
def quiet_logs(verbose: bool = False):
    """Silence third-party chatter for the duration (restored afterwards); a no-op when ``verbose``."""
    if verbose:
        yield
        return
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", module=_NOISY_MODULES)
        stack.callback(_restore, levels)
        stack.enter_context(_no_task_bars())
        _progress_bars(False)
        stack.callback(_progress_bars, True)
        yield


def _restore(levels: dict) -> None:
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _progress_bars(enabled: bool) -> None:
    """transformers' (weight loading, shard writing) and datasets' progress bars."""
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    with contextlib.suppress(ImportError):
        import datasets

        (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()


@contextlib.contextmanager
def _no_task_bars():
    """lm-eval's per-task "building contexts" bars (its task module's tqdm takes no ``disable`` switch)."""
    try:
        from lm_eval.api import task as lm_task
    except ImportError:
        yield
        return
    original = lm_task.tqdm
    lm_task.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        lm_task.tqdm = original
