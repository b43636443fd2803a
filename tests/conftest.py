"""Shared fixtures: the optional ../shared/data folder and temporary CTC layouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Tests run in parallel (xdist's -n): one share of the cores per worker. A worker left at torch's
    # default, one thread per core, oversubscribed them beside the others; OpenMP's waiting threads
    # then made tests 5-12x slower than alone (test_bands' 3D case: 89 s against 7 s).
    import torch

    _threads = max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)  # for the processes tests start, too
    torch.set_num_threads(_threads)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
