"""inference/runtime.py: process-level settings (memory given back to the system)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
