"""Will the run fit? An estimate of its memory before it starts, and a clear refusal if not (or,
when a fit runs out of memory all the same, the same kind of one-line error).

``bytes = trainable parameters x 4 x 5`` (weights, gradients, two Adam moments, the backtracking
copy; plus those early stopping keeps: its best weights) ``+ frozen parameters x 4``
``+ activations`` (the peak of the tensors one training step creates, from the perturbed input through
the generator and the data term and back: simulated on a meta-device copy of the module, so nothing is
computed or allocated, in the precision's activation dtype; plus the largest of those tensors again, for
convolution workspaces)
``+ images`` (``z``, observation, ground truth, EMA and the early-stopping buffers, in float32).
"""

from __future__ import annotations

import copy
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from dip.errors import MemoryShortError, one_line
from dip.inputs import padded_size

log = logging.getLogger(__name__)
GIB = 2**30
PARAMETER_COPIES = 5  # weights, gradients, Adam's two moments, backtracking's last good weights
HEADROOM = 0.9  # use at most this share of the free memory (allocator fragmentation, workspaces)
DECODING_BYTES = 24  # per sample, at the peak of reading an image: Pillow's, numpy's float64 copies, the tensor


@dataclass
class MemoryEstimate:
    parameters: int
    activations: int
    images: int
    pixels: int  # of the padded generator input

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.images

    @property
    def mib(self) -> float:
        """``total`` in MiB, to one decimal, as runs record their measured peak (``peak_mem_mb``)."""
        return round(self.total / 2**20, 1)


class LiveTensors(TorchDispatchMode):
    """Bytes held by the tensors the operators under this mode create: each new storage counts from
    the operator that makes it until it is freed, so views and in-place results count once, and what
    autograd saves counts until the backward pass lets it go. ``peak`` is the most held at once."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = self.largest = 0
        self._storages: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self._storages.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(output):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            if storage._cdata in self._storages:
                continue
            nbytes = storage.nbytes()
            self._storages.add(storage._cdata)
            weakref.finalize(storage, self._freed, storage._cdata, nbytes)
            self.live += nbytes
            self.peak, self.largest = max(self.peak, self.live), max(self.largest, nbytes)
        return output


def meta_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``module`` whose tensors are shapes on the meta device (floating ones in ``dtype``):
    the weights and images are not copied, only described."""
    def meta_like(tensor: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(tensor, device="meta", dtype=dtype if tensor.is_floating_point() else None)

    memo = {id(tensor): meta_like(tensor) for tensor in module.buffers()}
    memo.update({id(p): torch.nn.Parameter(meta_like(p), p.requires_grad) for p in module.parameters()})
    return copy.deepcopy(module, memo)


def step_tensors(module) -> LiveTensors:
    """The tensors one training step of ``module`` (a ``DeepImagePrior``) creates: its forward pass,
    data term and backward pass, without the optimiser (whose state the parameter copies count)."""
    with LiveTensors() as tensors:
        x = module(module.perturbed_input())
        loss = module.objective(x, module.physics.data_term(x, module.observation))
        if loss.requires_grad:  # not when nothing trains (the prior is fixed)
            loss.backward()
    return tensors


def simulated_step(module, dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """Peak bytes of the tensors one training step of ``module`` creates (the weight gradients left at
    its end excepted: the parameter copies count them), and the largest of them, simulated on a
    meta-device copy in ``dtype``."""
    meta = meta_copy(module, dtype)
    tensors = step_tensors(meta)
    return tensors.peak - tensors.live, tensors.largest  # live: the gradients, while meta holds them


def activation_dtype(precision: str) -> torch.dtype:
    """The dtype Lightning's ``precision`` setting computes the generator's activations in."""
    precision = str(precision)
    if "bf16" in precision:
        return torch.bfloat16
    if "16" in precision:
        return torch.float16
    return torch.float64 if "64" in precision else torch.float32


def estimate(module, precision: str = "32-true", kept: tuple[int, int] = (0, 0)) -> MemoryEstimate:
    """The memory a run of ``module`` (a ``DeepImagePrior``) needs, by the formula above; ``kept``: the
    copies of the weights and of the images that early stopping keeps (its ``kept_copies``)."""
    kept_weights, kept_images = kept
    copies = PARAMETER_COPIES + kept_weights
    trainable = sum(p.numel() for p in module.trainable_parameters())
    frozen = sum(p.numel() for p in module.parameters()) - trainable  # a fixed feature extractor: weights only
    parameters = (trainable * copies + frozen) * 4
    peak, largest = simulated_step(module, activation_dtype(precision))
    image = module.ema.numel() * 4
    images = module.z.numel() * 4 + image * (3 + kept_images)
    return MemoryEstimate(parameters, peak + largest, images, module.z.shape[-2] * module.z.shape[-1])


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device``: the GPU's free memory, or the RAM the OS can give (None if unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def run_device(accelerator: str, devices=1) -> torch.device:
    """The device a Lightning Trainer with these ``accelerator`` and (one-device) ``devices`` settings
    trains on: a list of one GPU index, ``[2]``, picks that GPU; a count, the first."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        listed = isinstance(devices, Sequence) and not isinstance(devices, str)
        return torch.device("cuda", int(devices[0]) if listed else 0)
    return torch.device("cpu")


def checked_estimate(module, precision: str = "32-true", kept: tuple[int, int] = (0, 0)) -> MemoryEstimate | None:
    """``estimate``, or None (with a warning) where the meta device cannot run the step."""
    try:
        return estimate(module, precision, kept)
    except Exception as error:  # noqa: BLE001 (a layer the meta device cannot run must not stop the run)
        log.warning("memory not estimated (%s): the run starts unchecked", one_line(error, 200))
        return None


def options_within(module, need: MemoryEstimate, budget: float, device: torch.device, precision: str) -> str:
    """The settings that would bring the run of ``module`` (needing ``need``) within ``budget`` bytes."""
    options = []
    per_pixel = (need.activations + need.images) / need.pixels
    multiple = getattr(module.generator, "size_multiple", 1)
    side = int(((budget - need.parameters) / per_pixel) ** 0.5) if budget > need.parameters else 0
    side = side // multiple * multiple
    if side >= max(multiple, 8):
        options.append(f"data.size={side}")
    if need.parameters + need.activations / 2 + need.images <= budget:
        options.append(f"fewer channels (arch.channels_* halved: ~{(need.total - need.activations / 2) / GIB:.1f} GiB)")
        if "16" not in str(precision):
            options.append(f"trainer.precision=bf16-mixed (~{(need.total - need.activations / 2) / GIB:.1f} GiB)")
    if device.type == "cuda":
        ram = available_bytes(torch.device("cpu"))
        if ram is not None and need.total <= HEADROOM * ram:
            options.append(f"trainer.accelerator=cpu (slow; {ram / GIB:.0f} GiB of RAM free)")
    return f"options that would fit: {', '.join(options)}" if options else "nothing smaller fits: use a smaller image"


def describe_need(module, need: MemoryEstimate) -> str:
    """``a WxH image (generator input W'xH') needs about X GiB (activations ..., parameters ...)``."""
    height, width = module.output_size
    padded = "x".join(map(str, reversed(padded_size(height, width, getattr(module.generator, "size_multiple", 1)))))
    return (f"a {width}x{height} image (generator input {padded}) needs about {need.total / GIB:.1f} GiB "
            f"(activations {need.activations / GIB:.1f}, parameters and optimiser {need.parameters / GIB:.2f})")


def _ram_short_of(need: int, available: int | None = None) -> int | None:
    """The RAM the OS can give (``available`` overrides it) when ``need`` bytes exceed ``HEADROOM`` of it,
    else None (None too when unknown)."""
    free = available if available is not None else available_bytes(torch.device("cpu"))
    return None if free is None or need <= HEADROOM * free else free


def check_codes_fit(channels: int, height: int, width: int, count: int = 1, available: int | None = None) -> None:
    """Raise ``MemoryShortError`` when ``count`` codes ``z`` of ``channels`` float32 maps of ``height`` x
    ``width`` exceed the RAM the OS can give (``available`` overrides it). They are made on the host
    before the module that ``check_memory_fits`` estimates exists: a too large one would end in a traceback, or
    the OOM killer, instead (x4 super-resolution of a phone photo: a 32-channel code of 190 MP)."""
    need = 4 * channels * height * width * count
    if (free := _ram_short_of(need, available)) is None:
        return
    codes = f"{count} codes z of {channels} channels alone need" if count > 1 else \
        f"code z of {channels} channels alone needs"
    raise MemoryShortError(f"a {width}x{height} restoration's {codes} "
                           f"{need / GIB:.1f} GiB, but this machine has {free / GIB:.1f} GiB free: restore a crop "
                           f"(data.size=...), or a smaller observation")


def check_image_fits(file: Path, width: int, height: int, bands: int, available: int | None = None) -> None:
    """Raise ``MemoryShortError`` when reading the ``width`` x ``height`` image ``file`` of ``bands`` samples
    per pixel would exceed the RAM the OS can give (``available`` overrides it). It stands in for Pillow's
    decompression-bomb limit (about 179 MP), which refuses a large scan that ``data.size`` would crop."""
    need = DECODING_BYTES * bands * width * height
    if (free := _ram_short_of(need, available)) is None:
        return
    raise MemoryShortError(f"image file {file} is {width}x{height} ({width * height / 1e6:.0f} MP): reading it needs "
                           f"about {need / GIB:.1f} GiB, but this machine has {free / GIB:.1f} GiB free: crop or "
                           f"shrink it with an image editor first")


def check_memory_fits(module, device: torch.device, precision: str = "32-true", kept: tuple[int, int] = (0, 0),
                      available: int | None = None) -> MemoryEstimate | None:
    """Raise ``MemoryShortError`` naming the size and the options that would fit when the run of ``module``
    needs more than ``HEADROOM`` of the free memory on ``device`` (``available`` overrides it)."""
    need = checked_estimate(module, precision, kept)
    free = available if available is not None else available_bytes(device)
    if need is None or free is None or need.total <= HEADROOM * free:
        return need
    advice = options_within(module, need, HEADROOM * free, device, precision)
    raise MemoryShortError(f"{describe_need(module, need)} but {device} has {free / GIB:.1f} GiB free; {advice}")


def out_of_memory(module, need: MemoryEstimate | None, device: torch.device, step: int,
                  precision: str = "32-true") -> MemoryShortError:
    """The error for a fit of ``module`` (estimated to need ``need``; None: not estimated) that ran out
    of memory on ``device`` at ``step`` although the check let it start: the estimate fell short
    (cuDNN's workspaces, another process), so the options offered are those that need a quarter less
    than it."""
    what = f"{device} ran out of memory at step {step}"
    if need is None:
        return MemoryShortError(f"{what}: try a smaller data.size or trainer.precision=bf16-mixed")
    advice = options_within(module, need, 0.75 * need.total, device, precision)
    return MemoryShortError(f"{what}: {describe_need(module, need)}; {advice}")
