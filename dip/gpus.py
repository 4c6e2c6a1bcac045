"""Spreading independent restorations over the GPUs of one machine.

DIP runs are independent single-image optimisations, so several GPUs are used by running several
jobs, not by splitting one. A pool of ``n * jobs_per_gpu`` worker processes runs them, and worker slot
``k`` holds GPU ``k mod n``: slots, not job numbers, so that a GPU never runs more than ``jobs_per_gpu``
jobs at a time whichever jobs finish first.
"""

from __future__ import annotations

import os


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as ``CUDA_VISIBLE_DEVICES`` would name them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def worker_count(gpus: list[str], jobs_per_gpu: int = 1, cpu_jobs: int = 1) -> int:
    """How many jobs to run at once: ``jobs_per_gpu`` per GPU, or ``cpu_jobs`` without GPUs."""
    for name, value in (("jobs_per_gpu", jobs_per_gpu), ("cpu_jobs", cpu_jobs)):
        if value < 1:  # callers check their settings first (dip.benchmark): this is a programming error
            raise ValueError(f"{name} must be >= 1, got {value}")
    return len(gpus) * jobs_per_gpu if gpus else cpu_jobs


def pin_to_gpu(slot: int, gpus: list[str]) -> str | None:
    """Make only worker slot ``slot``'s GPU (``gpus[slot mod n]``) visible to this process, and return it;
    None, and nothing changed, without GPUs. Call before CUDA is initialised."""
    gpu = gpus[slot % len(gpus)] if gpus else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu
