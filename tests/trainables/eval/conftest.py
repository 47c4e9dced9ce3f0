"""Fixtures of the evaluation tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Single-threaded torch ops: these tiny batches gain nothing from a 2-thread OpenMP team,
    which stalls at every op's barrier when other jobs load the cores."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
