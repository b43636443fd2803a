"""Device, threads and mixed precision: one place that decides where tensors live."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → the GPU when present, else the CPU; 'cpu', 'cuda', 'cuda:N' as given.

    Also flushes denormal floats to zero on the CPU: a trained model's gradients hold many
    values below 1e-38, and computing with them made a GRUU-Net training step about 3x slower
    (`gruunet bench denormals`). The flag is per thread and torch's worker threads copy it
    when they are created, so this runs first in `train` and `segment`.
    """
    torch.set_flush_denormal(True)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA GPU is available")
    return device


def release_freed_memory() -> bool:
    """Give the memory that freed small objects left in the heap back to the system (glibc's
    ``malloc_trim``). Scanning 4,790 masks for `train` left 1.29 GB resident of which 0.43 GB
    was live; the augmentation workers forked after it inherited the rest. Returns False where
    the C library has no ``malloc_trim`` (nothing to do there)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def free_cores() -> int:
    """CPU cores this process may use that other processes do not keep busy right now: the cores
    it is allowed to run on less the other runnable processes (``/proc/loadavg``'s running count,
    less this process; elsewhere the 1-minute load average), at least 1. On a busy machine torch's
    default (one thread per core) made a 2D model 10x slower than one thread."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/loadavg") as f:
            busy = float(f.read().split()[3].split("/")[0]) - 1  # runnable now, less ourselves
    except (OSError, IndexError, ValueError):
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def set_threads(threads: int | None) -> int:
    """CPU threads for torch: ``threads``, or the free cores (`free_cores`). Returns the number."""
    n = threads or free_cores()
    torch.set_num_threads(n)
    return n


def cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). oneDNN also offers bf16 on
    plain AVX-512 by emulation, which is slower than fp32, so its own check is not used."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, enabled: bool = True, cpu: bool = True):
    """Mixed precision when ``enabled``: on CUDA bf16 (fp16 where the GPU has no bf16); on a CPU
    with native bf16 (`cpu_bf16`) and ``cpu``, bf16: convolutions then run at about twice the
    fp32 rate and activations move half the bytes (README, "Benchmarks"). Elsewhere a no-op."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if enabled and cpu and device.type == "cpu" and cpu_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def precision(device: torch.device, amp: bool = True) -> str:
    """The number format `autocast` gives inference on ``device``: 'bf16', 'fp16' or 'fp32'."""
    if amp and device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if amp and device.type == "cpu" and cpu_bf16() else "fp32"


def foreground_fn(model: torch.nn.Module, device: torch.device, amp: bool = True,
                  iterations: bool = False):
    """A numpy → numpy forward for `tiling.predict_tiled`: (B, *t) normalised tiles →
    (B, K, *t) foreground probabilities, K = 1, or 9 per-step maps with ``iterations``
    (GRUU-Net). The model must already be in eval mode."""

    def run(batch):
        x = torch.from_numpy(batch).unsqueeze(1).to(device, non_blocking=True)  # (B, 1, *t)
        with torch.inference_mode(), autocast(device, amp):
            if iterations:
                steps = model(x, return_iterations=True)
                p = torch.stack([s.float().softmax(1)[:, 1] for s in steps], dim=1)  # (B, 9, *t)
            else:
                p = model(x).float().softmax(1)[:, 1:2]  # (B, 1, *t)
        return p.cpu().numpy()

    return run
