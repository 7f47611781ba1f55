"""Test environment: offline hub flags, a temporary HF_HOME, wandb offline, Triton's CPU interpreter.

Set before anything imports triton, transformers or wandb.
"""

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="pbs-hf-home-"))

import torch

# under pytest-xdist each worker gets one thread, so two workers fill the two CI cores
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))
