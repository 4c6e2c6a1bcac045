"""Spreading independent restorations over the GPUs of one machine.

DIP runs are independent single-image optimisations, so several GPUs are used by running several
jobs, not by splitting one: job ``k`` goes to GPU ``k mod n``, and a pool of ``n * jobs_per_gpu``
workers keeps at most ``jobs_per_gpu`` jobs on each GPU at a time.
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


def gpu_for_job(job: int, gpus: list[str]) -> str | None:
    """Round-robin assignment of job number ``job``; None when there is no GPU."""
    return gpus[job % len(gpus)] if gpus else None


def worker_count(gpus: list[str], jobs_per_gpu: int = 1, cpu_jobs: int = 1) -> int:
    """How many jobs to run at once: ``jobs_per_gpu`` per GPU, or ``cpu_jobs`` without GPUs."""
    for name, value in (("jobs_per_gpu", jobs_per_gpu), ("cpu_jobs", cpu_jobs)):
        if value < 1:  # callers check their settings first (dip.benchmark): this is a programming error
            raise ValueError(f"{name} must be >= 1, got {value}")
    return len(gpus) * jobs_per_gpu if gpus else cpu_jobs


def pin_to_gpu(job: int, gpus: list[str]) -> str | None:
    """Make only job ``job``'s GPU visible to this process; call before CUDA is initialised."""
    gpu = gpu_for_job(job, gpus)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu
