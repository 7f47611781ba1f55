"""Test environment: offline hub flags, a temporary HF_HOME, wandb offline, Triton's CPU interpreter.

Set before anything imports triton, transformers or wandb. The GPU tests (``pytest -m gpu``) compile Triton for the
GPU, so a run that selects them does not switch the interpreter on (run them on their own).
"""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="pbs-hf-home-"))

import torch

# under pytest-xdist each worker gets one thread, so two workers fill the two CI cores
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    """Before the test modules (and so triton) are imported: Triton's CPU interpreter unless GPU tests are run."""
    markexpr = config.getoption("markexpr") or ""
    if not ("gpu" in markexpr and "not gpu" not in markexpr):
        os.environ.setdefault("TRITON_INTERPRET", "1")
