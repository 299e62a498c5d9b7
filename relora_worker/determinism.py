"""Repeatable CPU numerics for the demo and the synthetic scenarios: the same bits on every x86-64 machine.

The tiny CPU scenarios train models from scratch; a different summation order (another thread count, AVX-512
instead of AVX2 kernels, another BLAS code path on an AMD or Intel CPU) changes the last bits of the first
step and the runs drift apart from there. ``relora demo`` and ``python -m relora_worker.synthetic`` therefore
pin, before torch is imported:

* one thread everywhere (PyTorch, OpenMP, MKL, OpenBLAS): no reduction is split differently;
* PyTorch's own vectorised kernels to AVX2 (``ATEN_CPU_CAPABILITY``), MKL to its conditional-numerical-
  reproducibility ``COMPATIBLE`` branch (``MKL_CBWR``), oneDNN to AVX2 and OpenBLAS (used by SciPy's
  optimiser under the GP fit) to one core type, so an AVX-512 machine computes what an AVX2 one does;
* deterministic algorithms in torch.

What may still differ: another version of torch, transformers, PEFT, BoTorch or SciPy (their kernels or
defaults change between releases) and CPUs without AVX2 or of another architecture (ARM). Timings differ
everywhere; the demo prints them in a table of their own. Production re-adaptation does not pin anything:
it uses every core and the fastest kernels.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PINNED_THREADS = 1


def _has_avx2() -> bool:
    try:
        return " avx2 " in f" {Path('/proc/cpuinfo').read_text()} ".replace("\n", " ")
    except OSError:  # not Linux: leave the kernels as they are
        return False


def pinned_environment(threads: int = PINNED_THREADS) -> dict[str, str]:
    """The variables that must be in the environment before torch (and NumPy/SciPy) are first imported."""
    count = str(threads)
    env = {
        "OMP_NUM_THREADS": count,
        "MKL_NUM_THREADS": count,
        "OPENBLAS_NUM_THREADS": count,
        "MKL_CBWR": "COMPATIBLE",
    }
    if _has_avx2():
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
        # Keep a core type the machine's administrator chose (some processors need one); otherwise pin one.
        env["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "Haswell")
    return env


def pin_cpu_numerics(threads: int = PINNED_THREADS) -> bool:
    """Pins thread count and kernels for repeatable results; returns False when torch was imported too early.

    Call it first thing in a process. When torch is already imported (e.g. inside pytest), only the thread
    count and deterministic algorithms can still be set; the kernel choice stays the machine's.
    """
    early = "torch" not in sys.modules
    if early:
        os.environ.update(pinned_environment(threads))
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return early
