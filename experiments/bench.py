"""Time the framework's training step against two reference loops, side by side in one process.

Loops, each on the same denoising problem, network, seed and settings (``dip.pipeline.prepare``):
- ``framework``: ``DeepImagePrior`` fitted by the Lightning Trainer exactly as ``dip.pipeline.run``
  does (``dip.pipeline.fit``), with the config's ``speed`` switches;
- ``eager``: a clean PyTorch loop: no host synchronisation per step, EMA and backtracking on the
  device, fused Adam, torch's default backend flags, float32;
- ``official``: the authors' notebook style: three PSNRs on the CPU and the weights copied to the
  CPU (for backtracking) at every step;
- ``packed``: ``--pack N`` restarts of the same problem in one ``Skip(copies=N)``, in the eager loop
  and through the framework (``restarts=N``);
- ``--variant NAME=OVERRIDE,...``: further framework loops with other overrides, at each size and
  packed (``NAME_packed``) (``--variant bf16=trainer.precision=bf16-mixed,speed.channels_last=true``).

``--count-ops`` also counts the operations the host dispatches in one step of each framework loop
(torch.profiler): on a GPU, a step of small kernels costs about that many launches of host time.

Runs are interleaved (every loop once, then every loop again, ``--repeats`` times, in rotating
order) so that a slow spell of a shared machine hits all loops alike; ms/step is the median over
repeats of each run's mean over its timed steps (after ``--warmup`` untimed ones). PSNR is that of
the final output (unperturbed code) against the clean image after ``warmup + steps`` steps.

    python experiments/bench.py                       # 256, 512, 1024 px: meant for a GPU
    python experiments/bench.py --quick               # seconds on a CPU
    python experiments/bench.py --sizes 128 --steps 10 --repeats 5 --pack 2
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import Container, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from skimage.metrics import peak_signal_noise_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dip.config_checks import check_settings, checked_config, config_message  # noqa: E402
from dip.errors import DipError, fail, one_line  # noqa: E402
from dip.files import write_atomically  # noqa: E402
from dip.images import load_image  # noqa: E402
from dip.memory import checked_estimate  # noqa: E402
from dip.metrics import per_image_psnr, psnr, psnr_from_mse  # noqa: E402
from dip.pipeline import fit, prepare  # noqa: E402
from dip.problem import problem_from_config  # noqa: E402
from dip.speed import Speed  # noqa: E402
from experiments.cli_args import ArgumentParser, whole_number  # noqa: E402

# The reference loops run under torch's default backend flags (TF32 convolutions, no cuDNN
# autotuning) with the fused optimizer (GPU and CPU), as a careful user would write them.
EAGER_SPEED = Speed(tf32=True, cudnn_benchmark=False, deterministic=False, fused_optimizer=True)


@dataclass
class Measurement:
    ms: float  # per step
    psnr: float  # of the final output against the clean image (mean over copies when packed)
    peak_mem_mb: float | None  # GPU memory at the peak of the run; None on a CPU
    psnr_of_average: float | None = None  # packed restarts: PSNR of the copies' mean output
    host_syncs: int | None = None  # --sync-check on a GPU: synchronisations over the timed steps
    host_ops: int | None = None  # --count-ops: operations the host dispatched in one step
    host_op_names: dict[str, int] | None = None  # --count-ops: how many of each
    warmup_s: float | None = None  # the untimed first steps, compiling and cuDNN's autotuning included
    memory_estimate_mb: float | None = None  # the framework's: what dip.memory estimated beforehand
    kernels: dict | None = None  # --profile-kernels: what one step's kernels took (kernel_profile)


def clock() -> float:
    """Seconds on the chosen clock: wall time, or with ``--clock cpu`` the process's CPU time, which a
    busy neighbour on a shared CPU machine disturbs far less (CPU only: a GPU's work is not in it)."""
    return time.process_time() if CLOCK == "cpu" else time.perf_counter()


CLOCK = "wall"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def start_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def clean_image(cfg) -> torch.Tensor | None:
    """The config's image, upscaled (bicubic) when it is smaller than ``data.size`` (the built-in
    images are at most 640 px); None when the config's own crop fits."""
    image = load_image(cfg.data.default_image)
    if min(image.shape[-2:]) >= cfg.data.size:
        return None
    size = (cfg.data.size, cfg.data.size)
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False).clamp(0, 1)[0]


def prepare_like_trainer(cfg):
    """``prepare(cfg)``, then the one draw from the CPU generator that the Trainer's DataLoader makes
    (its base seed), so that a reference loop perturbs the code with the framework's noise on a CPU."""
    problem, module = prepare(cfg, problem_from_config(cfg, clean_image(cfg)))
    torch.empty((), dtype=torch.int64).random_()
    return problem, module


def target_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class StepTimer(pl.Callback):
    """Wall time of the steps after the first ``warmup``, synchronised with the device: from the
    start of step ``warmup`` to the end of the epoch's last step (the module's own end-of-step
    hook included, the Trainer's end-of-fit work not); and the wall time of the ``warmup`` steps before
    them (``warmup_s``)."""

    def __init__(self, warmup: int):
        self.warmup = warmup

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx in (0, self.warmup):
            sync(pl_module.device)
            now = clock()
            if batch_idx == 0:
                self.first = now
            if batch_idx == self.warmup:
                self.start = now

    def on_train_epoch_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.ms = (clock() - self.start) * 1e3 / (trainer.global_step - self.warmup)
        self.warmup_s = self.start - self.first


class LoopTimer:
    """The reference loops' counterpart of ``StepTimer``: call ``at(step)`` before every step."""

    def __init__(self, device: torch.device, warmup: int):
        self.device, self.warmup = device, warmup
        sync(device)
        self.first = clock()

    def at(self, step: int) -> None:
        if step == self.warmup:
            sync(self.device)
            self.start = clock()

    @property
    def warmup_s(self) -> float:
        return self.start - self.first

    def ms_per_step(self, steps: int) -> float:
        sync(self.device)
        return (clock() - self.start) * 1e3 / steps


class SyncCounter(pl.Callback):
    """Counts the host-device synchronisations CUDA reports (``torch.cuda.set_sync_debug_mode``)
    over the timed steps. Lightning's callbacks run in order: put it after the ``StepTimer``, whose
    own synchronisations then fall outside the counted window."""

    def __init__(self, warmup: int):
        self.warmup, self.count = warmup, 0
        self.record = warnings.catch_warnings(record=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.caught = self.record.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_epoch_end(self, trainer, pl_module):
        torch.cuda.set_sync_debug_mode("default")
        self.record.__exit__(None, None, None)
        self.count = sum("synchroniz" in str(w.message) for w in self.caught)


AUTOGRAD_NODE = "autograd::engine::evaluate_function"  # the profiler's name prefix for a backward node


def outermost_operations(events) -> Counter:
    """How many times the host dispatched each ATen operator or autograd node itself, from profiler
    ``events``: calls made inside another operation (a convolution's own inner calls) do not count."""
    def is_operation(event) -> bool:
        return event.name.startswith(("aten::", AUTOGRAD_NODE))

    def outermost(event) -> bool:
        parent = event.cpu_parent
        while parent is not None and not is_operation(parent):
            parent = parent.cpu_parent
        return parent is None

    return Counter(event.name.removeprefix(AUTOGRAD_NODE + ": ") for event in events
                   if is_operation(event) and outermost(event))


# What a kernel (on a CPU, an ATen operator) does, from its name: the first pattern that matches it.
# Inductor's kernels come first (their names list the operations they fused), then cuDNN's and ATen's.
KERNEL_KINDS = (
    ("generated (inductor)", r"^(triton|cpp)_"),
    ("convolution, backward (input)", r"dgrad"),
    ("convolution, backward (weights)", r"wgrad"),
    ("convolution, backward", r"convolution_backward|conv2d_backward"),
    ("layout conversion", r"nchwtonhwc|nhwctonchw"),
    ("convolution", r"fprop|convolution|convolve|conv2d|implicit_gemm|xmma|cutlass"),
    ("batch norm", r"batch_norm|bn_fw|bn_bw|welford"),
    ("padding", r"pad"),
    ("upsampling", r"upsample|index_put"),
    ("optimizer", r"adam|multi_tensor"),
    ("activation", r"leaky_relu|sigmoid"),
    ("copy, fill, concatenation", r"memcpy|memset|copy|fill|catarray|^aten::cat$"),
)


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, pattern in KERNEL_KINDS if re.search(pattern, lowered)), "other")


def kernel_profile(averages, device: torch.device, top: int = 15) -> dict:
    """What one profiled step's time went to, from ``profiler.key_averages()``: on a GPU the device's
    kernels (graph replays included), on a CPU the ATen operators' own time (their children's excluded;
    inductor's generated C++ kernels record no event, so a compiled step shows only its library calls).
    ``ms`` and ``launches`` in all, ``by_kind`` (``KERNEL_KINDS``), the ``top`` kernels by time, and the
    CUDA graphs the host launched (``graph_launches``: their kernels count among the others). A
    ``record_function`` range (Lightning's ``Optimizer.step#Adam.step``) also appears on the device's
    timeline, spanning the kernels inside it: it is no kernel, and counting it would count them twice."""
    if device.type == "cuda":
        entries = [(e.key, e.count, e.self_device_time_total / 1e3) for e in averages
                   if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0
                   and not e.is_user_annotation]
    else:
        entries = [(e.key, e.count, e.self_cpu_time_total / 1e3) for e in averages
                   if e.key.startswith("aten::") and e.self_cpu_time_total > 0]
    by_kind: Counter = Counter()
    for name, _, ms in entries:
        by_kind[kernel_kind(name)] += ms
    ranked = sorted(entries, key=lambda entry: -entry[2])
    return {"source": "cuda kernels" if device.type == "cuda" else "cpu operators",
            "ms": sum(ms for *_, ms in entries), "launches": sum(count for _, count, _ in entries),
            "graph_launches": sum(e.count for e in averages if e.key == "cudaGraphLaunch"),
            "by_kind": {kind: round(ms, 4) for kind, ms in by_kind.most_common()},
            "top": [[name[:160], count, round(ms, 4)] for name, count, ms in ranked[:top]]}


class StepProfiler(pl.Callback):
    """Profiles one whole step, ``step`` (an untimed one: the profiler slows it), with torch.profiler:
    the operations the host dispatched (``counts``: on a GPU, a step of small kernels costs about that
    many launches of host time) and, with ``kernels``, what the step's kernels took (``kernel_profile``):
    beside the timed ms/step, whether the device or the host bounds the step, and by which kernels."""

    def __init__(self, step: int, kernels: bool = False):
        self.step, self.kernels = step, kernels
        self.counts, self.profile = Counter(), None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.step:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.kernels and pl_module.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.step:
            sync(pl_module.device)  # the step's last kernels inside the profiled window
            self.profiler.__exit__(None, None, None)
            self.counts = outermost_operations(self.profiler.events())
            if self.kernels:
                self.profile = kernel_profile(self.profiler.key_averages(), pl_module.device)


def run_framework(cfg, warmup: int, sync_check: bool = False, count_ops: bool = False,
                  profile_kernels: bool = False) -> Measurement:
    """The framework's own fit (its steps are ``cfg``'s ``trainer.max_steps``), timed after ``warmup`` steps."""
    _, module = prepare(cfg, problem_from_config(cfg, clean_image(cfg)))
    need = checked_estimate(module, cfg.trainer.precision)
    device = target_device()
    start_memory(device)
    timer = StepTimer(warmup)
    counter = SyncCounter(warmup) if sync_check and device.type == "cuda" else None
    profiler = StepProfiler(warmup - 1, profile_kernels) if count_ops or profile_kernels else None
    fit(cfg, module, [timer] + [callback for callback in (counter, profiler) if callback])
    outputs, truth = module.restart_outputs(), module.ground_truth
    if module.restarts > 1:  # as the packed eager loop reports it: the restarts' mean, and their average's
        result = Measurement(timer.ms, float(per_image_psnr(outputs, truth).mean()), peak_memory(device),
                             float(psnr(outputs.mean(0, keepdim=True), truth)))
    else:
        result = Measurement(timer.ms, float(psnr(outputs, truth)), peak_memory(device))
    result.host_syncs = counter.count if counter else None
    result.warmup_s = timer.warmup_s
    result.memory_estimate_mb = need.mib if need else None
    if count_ops:
        result.host_ops = sum(profiler.counts.values())
        result.host_op_names = dict(profiler.counts.most_common())
    if profile_kernels:
        result.kernels = profiler.profile
    return result


def run_eager(cfg, warmup: int, steps: int) -> Measurement:
    """The clean loop; with ``restarts=N`` in ``cfg``, N restarts in one packed network (the
    framework's codes and initial weights), each with its own BatchNorm, EMA and backtracking (the
    weights' first dimension is copy-major)."""
    device = target_device()
    _, module = prepare_like_trainer(cfg)
    generator = module.generator.to(device)
    copies, z = module.restarts, module.z.to(device)
    y, truth = module.observation.to(device), module.ground_truth.to(device)
    reg_noise_std, ema_weight, backtrack_db = module.code.reg_noise_std, cfg.ema_weight, cfg.backtrack_db
    params = list(generator.parameters())
    start_memory(device)
    with EAGER_SPEED.backends():
        optimizer = EAGER_SPEED.optimizer(instantiate(cfg.optim))(params)
        good = [p.detach().clone() for p in params]
        last_good = torch.full((copies,), -math.inf, device=device)
        ema = None

        def output(code):  # restarts x C x H x W, unpacked and cropped as the framework's step has them
            return module(code)

        timer = LoopTimer(device, warmup)
        for step in range(warmup + steps):
            timer.at(step)
            x = output(z + reg_noise_std * torch.randn_like(z))
            mse = ((x - y) ** 2).flatten(1).mean(1)  # one per copy
            optimizer.zero_grad(set_to_none=True)
            mse.sum().backward()
            with torch.no_grad():
                x = x.detach()
                ema = x.clone() if ema is None else torch.where(x.isfinite(), torch.lerp(x, ema, ema_weight), ema)
                if backtrack_db is not None:
                    fit_psnr = psnr_from_mse(mse.detach())
                    diverged = (~fit_psnr.isfinite() | (last_good - fit_psnr > backtrack_db))[:, None]
                    for g, p in zip(good, params):
                        g.view(copies, -1).copy_(torch.where(diverged, g.view(copies, -1), p.view(copies, -1)))
                    last_good = torch.where(diverged[:, 0], last_good, fit_psnr)
            optimizer.step()
            if backtrack_db is not None:
                with torch.no_grad():
                    for g, p in zip(good, params):
                        p.view(copies, -1).copy_(torch.where(diverged, g.view(copies, -1), p.view(copies, -1)))
        ms = timer.ms_per_step(steps)
        with torch.no_grad():
            restored = output(z).clamp(0, 1)
    average = float(psnr(restored.mean(0, keepdim=True), truth)) if copies > 1 else None
    return Measurement(ms, float(per_image_psnr(restored, truth).mean()), peak_memory(device), average,
                       warmup_s=timer.warmup_s)


def run_official(cfg, warmup: int, steps: int) -> Measurement:
    """The notebooks' loop: the output, the EMA and the weights go to the CPU at every step."""
    device = target_device()
    _, module = prepare_like_trainer(cfg)
    generator = module.generator.to(device)
    z, y = module.z.to(device), module.observation.to(device)
    y_np, truth_np = module.observation[0].numpy(), module.ground_truth[0].numpy()
    reg_noise_std, ema_weight, backtrack_db = module.code.reg_noise_std, cfg.ema_weight, cfg.backtrack_db
    start_memory(device)
    with EAGER_SPEED.backends():
        optimizer = instantiate(cfg.optim)(generator.parameters())
        out_avg, last_net, psnr_noisy_last = None, None, 0.0
        timer = LoopTimer(device, warmup)
        for step in range(warmup + steps):
            timer.at(step)
            optimizer.zero_grad()
            out = module(z + reg_noise_std * torch.randn_like(z))
            out_avg = out.detach() if out_avg is None else out_avg * ema_weight + out.detach() * (1 - ema_weight)
            F.mse_loss(out, y).backward()
            out_np = out.detach().cpu().numpy()[0]
            psnr_noisy = peak_signal_noise_ratio(y_np, out_np, data_range=1)
            peak_signal_noise_ratio(truth_np, out_np, data_range=1)
            peak_signal_noise_ratio(truth_np, out_avg.cpu().numpy()[0], data_range=1)
            if backtrack_db is not None:
                if last_net is not None and psnr_noisy - psnr_noisy_last < -backtrack_db:
                    for saved, param in zip(last_net, generator.parameters()):
                        param.data.copy_(saved.to(device))
                else:
                    last_net = [param.detach().cpu() for param in generator.parameters()]
                    psnr_noisy_last = psnr_noisy
            optimizer.step()
        ms = timer.ms_per_step(steps)
        with torch.no_grad():
            restored = module(z).clamp(0, 1)
    return Measurement(ms, float(psnr(restored.cpu(), module.ground_truth)), peak_memory(device),
                       warmup_s=timer.warmup_s)


def compose(size: int, warmup: int, steps: int, overrides: list[str]):
    """The config of a loop; an override the config refuses is a ``DipError`` naming it (run.py's checks)."""
    return checked_config([
        "task=denoising", "logger=none", f"data.size={size}", f"trainer.max_steps={warmup + steps}",
        f"metrics_every={max(1, min(50, warmup + steps))}", *overrides,
    ])


def interleave(loops: dict[str, Callable[[], Measurement]], repeats: int,
               report: Callable[[dict, dict], None]) -> None:
    """Run the loops; after every run, ``report(runs, errors)``: each loop's measurements so far and
    the error of each loop that failed (which then runs no more), so that one broken switch costs
    its own figures, not the other loops', and a time limit keeps what was measured."""
    names = list(loops)
    runs: dict[str, list[Measurement]] = {name: [] for name in names}
    errors: dict[str, str] = {}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            if name in errors:
                continue
            try:
                runs[name].append(loops[name]())
            except Exception as error:  # noqa: BLE001  (any failure of a loop is a figure: its message)
                # all of it, on one line: Hydra's first line only names the target, its cause follows
                errors[name] = f"{type(error).__name__}: {one_line(error, 500)}"
                print(f"  {name:<12} repeat {repeat + 1}/{repeats}: failed: {errors[name]}", flush=True)
            else:
                print(f"  {name:<12} repeat {repeat + 1}/{repeats}: {runs[name][-1].ms:9.2f} ms/step, "
                      f"PSNR {runs[name][-1].psnr:6.2f} dB", flush=True)
            report(runs, errors)


def summarise(runs: dict[str, list[Measurement]], errors: dict[str, str]) -> dict[str, dict]:
    """Per loop: median time over repeats, PSNR and memory of the first run (the same seed every
    time); or the loop's error when it never finished a run."""
    summary = {}
    for name, measured in runs.items():
        if measured:
            first = asdict(measured[0])
            summary[name] = dict(first, ms=statistics.median(r.ms for r in measured),
                                 ms_all=[round(r.ms, 3) for r in measured])
        elif name in errors:
            summary[name] = {"error": errors[name]}
    return summary


def paired_ratio(numerator: dict, denominator: dict) -> float | None:
    """Median over repeats of the ratio of two loops' times in the same repeat (run back to back):
    steadier than a ratio of medians when the machine's load drifts. None when a loop has no times."""
    pairs = list(zip(numerator.get("ms_all", []), denominator.get("ms_all", [])))
    return statistics.median(a / b for a, b in pairs) if pairs else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def bench_size(size, args, overrides, variants, report: Callable[[dict], None]) -> None:
    """Measure one size; ``report(row)`` gets its row after every run, the last time complete."""
    print(f"{size}x{size}: {args.warmup} + {args.steps} steps x {args.repeats} repeats", flush=True)
    cfg = compose(size, args.warmup, args.steps, overrides)
    loops = {
        "framework": lambda: run_framework(cfg, args.warmup, args.sync_check, args.count_ops, args.profile_kernels),
        "eager": lambda: run_eager(cfg, args.warmup, args.steps),
    }
    if not args.no_official:
        loops["official"] = lambda: run_official(cfg, args.warmup, args.steps)
    for name, extra in variants.items():
        variant_cfg = compose(size, args.warmup, args.steps, overrides + extra)
        loops[name] = lambda variant_cfg=variant_cfg: run_framework(variant_cfg, args.warmup,
                                                                    count_ops=args.count_ops,
                                                                    profile_kernels=args.profile_kernels)
    steps = args.warmup + args.steps
    interleave(loops, args.repeats, lambda runs, errors: report(size_row(runs, errors, steps)))


def size_row(runs: dict[str, list[Measurement]], errors: dict[str, str], steps: int) -> dict:
    loops = summarise(runs, errors)
    framework, eager, official = (loops.get(name, {}) for name in ("framework", "eager", "official"))
    return {
        "framework_ms": framework.get("ms"),
        "eager_ms": eager.get("ms"),
        "official_ms": official.get("ms"),
        "peak_mem_mb": framework.get("peak_mem_mb"),
        "psnr_framework": framework.get("psnr"),
        "psnr_eager": eager.get("psnr"),
        "psnr_official": official.get("psnr"),
        "steps": steps,
        "host_syncs": framework.get("host_syncs"),
        "host_ops": framework.get("host_ops"),
        "loops": loops,
        "speedup_vs_eager": ratio(eager.get("ms"), framework.get("ms")),
        "paired_speedup_vs_eager": paired_ratio(eager, framework),
        "speedup_vs_official": ratio(official.get("ms"), framework.get("ms")),
    }


def bench_packed(size, copies, args, overrides, variants, report: Callable[[dict], None]) -> None:
    """The packed comparison (with a framework loop ``NAME_packed`` per variant); ``report(row)`` gets
    its row after every run, the last time complete."""
    print(f"{size}x{size}, {copies} restarts packed vs one: {args.warmup} + {args.steps} steps x {args.repeats}",
          flush=True)
    cfg = compose(size, args.warmup, args.steps, overrides)
    packed_cfg = compose(size, args.warmup, args.steps, overrides + [f"restarts={copies}"])
    loops = {
        "eager": lambda: run_eager(cfg, args.warmup, args.steps),
        "packed": lambda: run_eager(packed_cfg, args.warmup, args.steps),
        "framework_packed": lambda: run_framework(packed_cfg, args.warmup),
    }
    for name, extra in variants.items():
        variant_cfg = compose(size, args.warmup, args.steps, overrides + extra + [f"restarts={copies}"])
        loops[f"{name}_packed"] = lambda variant_cfg=variant_cfg: run_framework(variant_cfg, args.warmup)
    interleave(loops, args.repeats, lambda runs, errors: report(packed_row(runs, errors, size, copies)))


def packed_row(runs: dict[str, list[Measurement]], errors: dict[str, str], size: int, copies: int) -> dict:
    loops = summarise(runs, errors)
    single, packed, framework = (loops.get(name, {}) for name in ("eager", "packed", "framework_packed"))

    def per_second(loop: dict, images: int) -> float | None:
        return ratio(1e3 * images, loop.get("ms"))

    def throughput(loop: dict) -> float | None:
        return ratio(copies * single["ms"], loop.get("ms")) if single.get("ms") else None

    def paired(loop: dict) -> float | None:
        pairs = paired_ratio(single, loop)
        return copies * pairs if pairs is not None else None

    return {
        "size": size, "copies": copies, "eager_ms": single.get("ms"), "packed_ms": packed.get("ms"),
        "image_steps_per_s": per_second(packed, copies), "eager_image_steps_per_s": per_second(single, 1),
        "throughput_vs_eager": throughput(packed), "paired_throughput_vs_eager": paired(packed),
        "peak_mem_mb": packed.get("peak_mem_mb"), "psnr_eager": single.get("psnr"),
        "psnr_packed_mean": packed.get("psnr"), "psnr_packed_average": packed.get("psnr_of_average"),
        "framework_packed_ms": framework.get("ms"),
        "framework_throughput_vs_eager": throughput(framework),
        "paired_framework_throughput_vs_eager": paired(framework),
        "psnr_framework_packed_mean": framework.get("psnr"),
        "psnr_framework_packed_average": framework.get("psnr_of_average"),
        "framework_packed_peak_mem_mb": framework.get("peak_mem_mb"),
        "variants_throughput_vs_eager": {name: throughput(loop) for name, loop in loops.items()
                                         if name not in ("eager", "packed", "framework_packed") and "ms" in loop},
        "loops": loops,
    }


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash as wide where there is none (a loop that failed or did not run)."""
    return format(value, spec) if value is not None else "-".rjust(len(format(0.0, spec)))


def kernel_line(name: str, loop: dict, kinds: int = 6) -> str:
    """One loop's profiled step: its kernels' time against its timed step (near 100 %: the device
    bounds the step; far below: the host does), and the largest kinds."""
    kernels = loop["kernels"]
    busy = f", {kernels['ms'] / loop['ms']:.0%} of its timed step" if loop.get("ms") else ""
    largest = ", ".join(f"{kind} {ms:.2f}" for kind, ms in list(kernels["by_kind"].items())[:kinds])
    return (f"       {name}: one step's {kernels['source']} {kernels['ms']:.2f} ms in {kernels['launches']} "
            f"launches{busy}: {largest}")


def table(results: dict) -> str:
    lines = [f"{results['date']}  {results['device']}  torch {results['torch']}  {results.get('clock', 'wall')} clock  "
             f"{results['command']}"]
    if results["sizes"]:
        lines.append("size   framework ms  eager ms  official ms  fw steps/s  eager/fw  official/fw  peak MB  "
                     "PSNR fw / eager / official")
    for size, row in results["sizes"].items():
        lines.append(
            f"{size:>5}  {fmt(row['framework_ms'], '12.2f')}  {fmt(row['eager_ms'], '8.2f')}  "
            f"{fmt(row['official_ms'], '11.2f')}  {fmt(ratio(1e3, row['framework_ms']), '10.1f')}  "
            f"{fmt(row['speedup_vs_eager'], '8.3f')}  {fmt(row['speedup_vs_official'], '11.3f')}  "
            f"{fmt(row['peak_mem_mb'], '7.0f')}  "
            + " / ".join(fmt(row[f"psnr_{name}"], ".2f") for name in ("framework", "eager", "official"))
        )
        lines.append(f"       eager/framework paired by repeat (median): {fmt(row['paired_speedup_vs_eager'], '.3f')}")
        first_steps = [f"{name} {loop['warmup_s']:.1f}" for name, loop in row["loops"].items()
                       if loop.get("warmup_s") is not None]
        if first_steps:
            lines.append(f"       seconds of the {results.get('warmup', 0)} untimed first steps: "
                         + ", ".join(first_steps))
        if row.get("host_syncs") is not None:
            lines.append(f"       framework host syncs over {row['steps'] - results.get('warmup', 0)} timed steps: "
                         f"{row['host_syncs']}")
        if row.get("host_ops") is not None:
            lines.append(f"       framework host operations per step: {row['host_ops']}")
        lines += [kernel_line(name, loop) for name, loop in row["loops"].items() if loop.get("kernels")]
        for name, loop in row["loops"].items():
            if "error" in loop:
                lines.append(f"       {name} failed: {loop['error']}")
            elif name not in ("framework", "eager", "official"):
                vs_eager = fmt(ratio(row["eager_ms"], loop["ms"]), ".3f")
                operations = f", {loop['host_ops']} host operations per step" if loop.get("host_ops") else ""
                lines.append(f"       variant {name}: {loop['ms']:.2f} ms ({vs_eager}x eager), "
                             f"PSNR {loop['psnr']:.2f}, peak {fmt(loop['peak_mem_mb'], '.0f')} MB "
                             f"(estimated {fmt(loop.get('memory_estimate_mb'), '.0f')}){operations}")
    if "packed" in results:
        p = results["packed"]
        lines.append(
            f"packed {p['copies']} x {p['size']}^2: {fmt(p['packed_ms'], '.2f')} ms/step = "
            f"{fmt(p['image_steps_per_s'], '.1f')} image-steps/s vs eager {fmt(p['eager_image_steps_per_s'], '.1f')} "
            f"({fmt(p['throughput_vs_eager'], '.2f')}x); PSNR mean {fmt(p['psnr_packed_mean'], '.2f')}, of the average "
            f"{fmt(p['psnr_packed_average'], '.2f')} (one run {fmt(p['psnr_eager'], '.2f')})"
        )
        if "framework_packed_ms" in p:  # files written before the framework's packed step was timed lack it
            lines.append(
                f"  through the framework (restarts={p['copies']}): {fmt(p['framework_packed_ms'], '.2f')} ms/step, "
                f"{fmt(p['framework_throughput_vs_eager'], '.2f')}x eager's image-steps/s (paired "
                f"{fmt(p['paired_framework_throughput_vs_eager'], '.2f')}x); PSNR mean "
                f"{fmt(p['psnr_framework_packed_mean'], '.2f')}, "
                f"of the average {fmt(p['psnr_framework_packed_average'], '.2f')}"
            )
        for name, speedup in p.get("variants_throughput_vs_eager", {}).items():
            loop = p["loops"][name]
            lines.append(f"  variant {name}: {loop['ms']:.2f} ms/step, {fmt(speedup, '.2f')}x eager's image-steps/s; "
                         f"PSNR mean {loop['psnr']:.2f}, of the average {fmt(loop['psnr_of_average'], '.2f')}")
        lines += [f"  {name} failed: {loop['error']}" for name, loop in p.get("loops", {}).items() if "error" in loop]
    return "\n".join(lines)


BUILT_IN_LOOPS = ("framework", "eager", "official")


def result_rows(results: dict) -> list[dict]:
    """The figures of each size and of the packed comparison, each with its ``loops``."""
    return [*results["sizes"].values(), *([results["packed"]] if "packed" in results else [])]


def every_loop_failed(results: dict, output: Path) -> str:
    """The refusal of a run none of whose loops finished: its loops' errors, each different one once."""
    failed: dict[str, list[str]] = {}  # error -> the loops that failed with it
    for row in result_rows(results):
        for name, loop in row["loops"].items():
            if "error" in loop and name not in failed.setdefault(loop["error"], []):
                failed[loop["error"]].append(name)
    kept = "left as it was" if output.exists() else "not written"
    return (f"every loop failed, nothing was measured ({output} {kept}): "
            + "; ".join(f"{', '.join(names)}: {error}" for error, names in failed.items()))


def parse_variants(texts: list[str]) -> dict[str, list[str]]:
    variants = {}
    for text in texts:
        name, _, overrides = text.partition("=")
        if not name or not overrides:
            fail(f"--variant takes NAME=OVERRIDE[,OVERRIDE...], got '{text}'")
        if name in variants or name in BUILT_IN_LOOPS:  # its figures would silently replace the other loop's
            fail(f"--variant {name}: the name of {'another --variant' if name in variants else 'a built-in loop'}; "
                 "give it another")
        variants[name] = overrides.split(",")
    return variants


def check_arguments(args) -> None:
    """Refuse the combinations of options that would time nothing, or nothing meaningful."""
    if args.pack == 1:
        fail("--pack 1 packs nothing: give 0 to skip the packed comparison, or 2 or more restarts")
    if not args.sizes and not args.pack:
        fail("nothing to measure: --sizes names no size and --pack is 0")
    profiled = [flag for flag, wanted in (("--count-ops", args.count_ops), ("--profile-kernels", args.profile_kernels))
                if wanted]
    if profiled and args.warmup < 2:  # step 0 also creates the optimizer's state: not a typical step
        fail(f"{' and '.join(profiled)}: the profiled step is the last warm-up step, which must not be step 0: "
             "use --warmup 2 or more")
    if args.clock == "cpu" and torch.cuda.is_available():
        fail("--clock cpu times CPU work only; use the wall clock on a GPU")


def composes(size: int, args, overrides: list[str]) -> bool:
    try:
        compose(size, args.warmup, args.steps, overrides)
    except DipError:
        return False
    return True


def check_configs(size: int, args, variants: dict[str, list[str]]) -> None:
    """Compose every loop's config before any timing: a misspelt override is refused in one line, not
    with a traceback once the sizes before it were timed. The shared settings are checked too, since
    they would fail every loop; a variant's own may fail its loop, which costs only its figures."""
    def composed(overrides: list[str], where: str):
        try:
            return compose(size, args.warmup, args.steps, overrides)
        except DipError as error:
            # the message does not always name the override (a parse error quotes a fragment of it): the
            # culprit is the one without which the rest compose (+folder=/x is read by a data.path after it),
            # else the first whose addition to the ones before it fails
            culprit = next((override for index, override in enumerate(overrides)
                            if composes(size, args, overrides[:index] + overrides[index + 1:])), None)
            culprit = culprit or next((override for end, override in enumerate(overrides, 1)
                                       if not composes(size, args, overrides[:end])), " ".join(overrides))
            fail(f"{where} {culprit}: {error}")

    cfg = composed(args.overrides, "override")
    try:  # resolved (an interpolation to nothing fails here), but for Hydra's own node, which only a job resolves
        for key in cfg:
            if key != "hydra" and isinstance(cfg[key], Container):  # a plain value resolves as it is read
                OmegaConf.to_container(cfg[key], resolve=True)
        check_settings(cfg)
    except DipError as error:
        fail(str(error))
    except OmegaConfBaseException as error:
        fail(f"{error.full_key}: {config_message(error)}")
    loops = {"": cfg} | {f"--variant {name}: ": composed(args.overrides + extra, f"--variant {name}: override")
                         for name, extra in variants.items()}
    for where, loop in loops.items():
        if loop.task.name != "denoising":  # the reference loops fit |x - y|^2: another task is another problem
            fail(f"{where}task={loop.task.name}: bench.py times the denoising step, the one its reference loops "
                 "implement")


def check_output(output: Path) -> None:
    """Refuse an ``--output`` that could not be written before the timing, not after it; the folders
    missing on its way are created when it is written (``write_atomically``)."""
    if output.is_dir():
        fail(f"--output {output} is a folder: name the file to write")
    folder = output.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        fail(f"--output {output}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"--output {output}: no permission to write in {folder}")


def show(file: str) -> None:
    """Print the table of an earlier run's figures; a file that holds none is refused in one line."""
    try:
        text = table(json.loads(Path(file).read_text()))
    except OSError as error:
        fail(f"--show {file}: cannot read it ({error.strerror or one_line(error)})")
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # not JSON, or not bench.py's figures
        fail(f"--show {file}: not the figures of a bench.py run ({type(error).__name__}: {one_line(error, 200)})")
    print(text)


def main(argv: list[str] | None = None) -> dict:
    positive, not_negative = whole_number(1), whole_number(0)
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps on a 32 px image (seconds on a CPU)")
    parser.add_argument("--sizes", type=positive, nargs="*", default=None,
                        help="image sizes (default 256 512 1024; none: only the packed comparison)")
    parser.add_argument("--steps", type=positive, default=None, help="timed steps per run (default 200)")
    parser.add_argument("--warmup", type=not_negative, default=None, help="untimed steps first (default 20)")
    parser.add_argument("--repeats", type=positive, default=None, help="interleaved runs per loop (default 3)")
    parser.add_argument("--pack", type=not_negative, default=None,
                        help="restarts packed into one network (default 4; 0 = skip)")
    parser.add_argument("--pack-size", type=positive, default=None,
                        help="image size for --pack (default: the middle size)")
    parser.add_argument("--no-official", action="store_true", help="skip the official-style loop")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDE,...",
                        help="another framework loop with these config overrides")
    parser.add_argument("--sync-check", action="store_true",
                        help="count the framework's host-device synchronisations over the timed steps (CUDA)")
    parser.add_argument("--count-ops", action="store_true",
                        help="count the host's operations in the last warm-up step of each framework loop")
    parser.add_argument("--profile-kernels", action="store_true",
                        help="profile the last warm-up step of each framework loop: its kernels' time, by kind")
    parser.add_argument("--show", metavar="BENCH_JSON", help="print the table of an earlier run and exit")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time steps by wall clock (default) or by process CPU time (steadier on a shared CPU)")
    parser.add_argument("--threads", type=positive, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--output", default="bench.json", help="where to write the figures (default bench.json)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every loop, e.g. speed=exact")
    args = parser.parse_args(argv)
    if args.show:
        show(args.show)
        return {}
    quick = dict(sizes=[32], steps=2, warmup=1, repeats=2, pack=2)
    full = dict(sizes=[256, 512, 1024], steps=200, warmup=20, repeats=3, pack=4)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    # Everything the user can get wrong is refused here, before any timing and before --output is touched.
    check_arguments(args)
    variants = parse_variants(args.variant)
    if args.quick:  # a narrower network too, so that a CPU runs every loop in seconds
        args.overrides = [f"arch.{key}=[16,16,16,16,16]" for key in ("channels_down", "channels_up")] + args.overrides
    pack_size = args.pack_size or (args.sizes[len(args.sizes) // 2] if args.sizes else 256)
    check_configs(args.sizes[0] if args.sizes else pack_size, args, variants)
    output = Path(args.output)
    check_output(output)

    global CLOCK
    CLOCK = args.clock
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    device = target_device()
    results = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "experiments/bench.py", *(sys.argv[1:] if argv is None else argv)]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "clock": CLOCK,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "numpy": np.__version__,
        "warmup": args.warmup,
        "overrides": args.overrides,
        "variants": variants,
        "sizes": {},
    }

    def measured() -> bool:  # whether any loop of the run has finished a run so far
        return any("ms" in loop for row in result_rows(results) for loop in row["loops"].values())

    def save() -> None:  # after every run: a run cut short by a time limit keeps what it measured
        if not measured():  # only failures so far: an earlier run's figures are not replaced by nulls
            return
        try:  # atomically: a failed write leaves the previous file whole
            write_atomically(output, lambda handle: handle.write((json.dumps(results, indent=2) + "\n").encode()))
        except OSError as error:  # checked before the timing, but a disk can fill
            fail(f"--output {output}: cannot write it ({error.strerror or one_line(error)})")

    def record(place: dict, key: str) -> Callable[[dict], None]:
        def report(row: dict) -> None:
            place[key] = row
            save()
        return report

    for size in args.sizes:
        bench_size(size, args, args.overrides, variants, record(results["sizes"], str(size)))
    if args.pack:
        bench_packed(pack_size, args.pack, args, args.overrides, variants, record(results, "packed"))
    if not measured():
        fail(every_loop_failed(results, output))
    print(table(results))
    print(f"figures in {args.output}")
    return results


if __name__ == "__main__":
    main()
