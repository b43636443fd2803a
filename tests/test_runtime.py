"""inference/runtime.py: process-level settings (memory given back to the system)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import STARDIST2D

# Fill the heap with 300 MB of small blocks, free all but every 100th (they pin the heap, so it
# cannot shrink from its top), then report the resident set before and after the release.
CODE = """
from gruunet_cli.inference.runtime import release_freed_memory
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) // 1024
blocks = [bytearray(1000) for _ in range(300_000)]
kept = blocks[::100]
del blocks
before = rss()
assert release_freed_memory()
print(before, rss())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="Linux only")
def test_release_freed_memory_returns_the_heap_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
    before, after = map(int, out.split())
    assert before - after > 150  # MB: most of the freed 300 MB leaves the process


def _onednn_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@pytest.mark.skipif(not _onednn_bf16(), reason="oneDNN has no bf16 on this CPU, not even emulated")
def test_cpu_bf16_segments_the_sample_like_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 on the CPU (`segment`'s default where the CPU has native bf16) against fp32
    (``--no-amp``): the shipped weights on the bundled 01 image's validation rows. Forced on, so it
    runs (emulated by oneDNN, slower) on AVX-512 CPUs without native bf16 too."""
    import numpy as np
    import tifffile
    import torch

    from gruunet_cli.evaluation.metrics import match_objects
    from gruunet_cli.inference import runtime, segment
    from gruunet_cli.tools import demo

    image = tifffile.imread(demo.SAMPLE / "01" / "t000.tif")[384:]
    results = {}
    for amp in (False, True):
        monkeypatch.setattr(runtime, "cpu_bf16", lambda: True)
        pred = segment.Predictor(STARDIST2D, segment.SegmentOptions(device="cpu", diameter=None, amp=amp, threads=1))
        seen = []
        hook = pred.model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        p = pred.probabilities(image)[0]
        hook.remove()
        assert seen == [torch.bfloat16 if amp else torch.float32]  # the switch reaches the network
        results[amp] = (p, pred.labels_from(p, image))
    (p32, l32), (p16, l16) = results[False], results[True]
    assert 0 < np.abs(p32 - p16).max() < 0.1  # not the same computation, close to it
    assert ((p32 > 0.5) != (p16 > 0.5)).mean() < 0.002
    assert l16.max() == l32.max()
    assert match_objects(l32, l16).jaccard.mean() > 0.97  # SEG of one against the other
    with runtime.autocast(torch.device("cpu"), True, cpu=False):  # training steps stay fp32
        assert not torch.is_autocast_enabled("cpu")
