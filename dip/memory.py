"""Will the run fit? An estimate of its memory before it starts, and a clear refusal if not.

``bytes = trainable parameters x 4 x 5`` (weights, gradients, two Adam moments, the backtracking
copy; one more with early stopping: its best weights) ``+ frozen parameters x 4``
``+ activations`` (the tensors the generator saves for its backward pass, traced on the meta
device at the padded size, so nothing is computed or allocated; halved under 16-bit precision;
plus twice the largest one for the transient buffers of the backward pass)
``+ images`` (``z``, observation, ground truth, EMA and the early-stopping buffers, in float32).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import torch

from dip.errors import DipError
from dip.inputs import padded_size

log = logging.getLogger(__name__)
GIB = 2**30
PARAMETER_COPIES = 5  # weights, gradients, Adam's two moments, backtracking's last good weights
HEADROOM = 0.9  # use at most this share of the free memory (allocator fragmentation, workspaces)


@dataclass
class MemoryEstimate:
    parameters: int
    activations: int
    images: int
    pixels: int  # of the padded generator input

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.images


def traced_activations(generator: torch.nn.Module, z_shape: tuple[int, ...]) -> tuple[int, int]:
    """Bytes the forward pass saves for backward, and the largest single saved tensor, traced on a
    meta-device copy of ``generator`` (no memory, no arithmetic)."""
    meta = copy.deepcopy(generator).to("meta")
    sizes: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    z = torch.empty(z_shape, device="meta", requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        meta(z)
    return sum(sizes), max(sizes, default=0)


def estimate(module, precision: str = "32-true", early_stopping_window: int = 0) -> MemoryEstimate:
    """The memory a run of ``module`` (a ``DeepImagePrior``) needs, by the formula above."""
    copies = PARAMETER_COPIES + (1 if early_stopping_window else 0)  # early stopping's best weights
    trainable = sum(p.numel() for p in module.trainable_parameters())
    frozen = sum(p.numel() for p in module.parameters()) - trainable  # a fixed feature extractor: weights only
    parameters = (trainable * copies + frozen) * 4
    saved, largest = traced_activations(module.generator, tuple(module.z.shape))
    activations = saved + 2 * largest
    if "16" in str(precision):
        activations //= 2
    image = module.ema.numel() * 4
    images = module.z.numel() * 4 + image * (3 + (early_stopping_window + 1 if early_stopping_window else 0))
    return MemoryEstimate(parameters, activations, images, module.z.shape[-2] * module.z.shape[-1])


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


def run_device(accelerator: str) -> torch.device:
    """The device a Lightning Trainer with this ``accelerator`` setting will train on."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_fits(module, device: torch.device, precision: str = "32-true", early_stopping_window: int = 0,
               available: int | None = None) -> MemoryEstimate | None:
    """Raise ``DipError`` naming the size and the options that would fit when the run of ``module``
    needs more than ``HEADROOM`` of the free memory on ``device`` (``available`` overrides it)."""
    try:
        need = estimate(module, precision, early_stopping_window)
    except (NotImplementedError, RuntimeError) as error:  # a layer the meta device does not support
        log.warning("memory not estimated (%s): the run starts unchecked", " ".join(str(error).split())[:200])
        return None
    free = available if available is not None else available_bytes(device)
    if free is None or need.total <= HEADROOM * free:
        return need
    budget = HEADROOM * free
    height, width = module.output_size
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
    padded = "x".join(map(str, reversed(padded_size(height, width, multiple))))
    advice = f"options that would fit: {', '.join(options)}" if options else "nothing smaller fits: use a smaller image"
    raise DipError(
        f"a {width}x{height} image (generator input {padded}) needs about {need.total / GIB:.1f} GiB "
        f"(activations {need.activations / GIB:.1f}, parameters and optimiser {need.parameters / GIB:.2f}) but "
        f"{device} has {free / GIB:.1f} GiB free; {advice}"
    )
