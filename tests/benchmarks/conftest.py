"""Fixtures shared by the benchmark tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Timing loops of tiny ops: one thread avoids thread-pool thrash on a busy 2-core CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
