"""Speed switches: how a fit uses the hardware, not what it computes (beyond rounding).

Each switch is a key of the ``speed`` config group; ``speed=exact`` is the paper's numerics and
network (IEEE float32 convolutions, deterministic cuDNN algorithms, torch's default optimizer
implementation, every layer the paper's code has). Mixed precision is Lightning's own switch,
``trainer.precision`` (``bf16-mixed``); ``docs/speed.md`` lists what each switch was measured to give.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from dip.errors import DipError, check_choice
from dip.nets.layers import Upsample
from dip.nets.normalised import drop_cancelled_biases, drop_running_statistics

FUSED_DEVICES = ("cuda", "cpu")  # where torch's fused Adam, AdamW and SGD kernels exist
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_BACKENDS = ("inductor", "cudagraphs", "aot_eager")
GRAPHS_PER_FUNCTION = 64  # image sizes one process may compile a fit for (Set14 has eleven)

log = logging.getLogger("dip")


@dataclass
class Speed:
    """The switches; those for a GPU are no-ops where it is absent, the layer switches apply anywhere.

    - ``tf32``: float32 convolutions and matrix products on the tensor cores' TF32 mode (CUDA);
      torch's own default for convolutions.
    - ``cudnn_benchmark``: let cuDNN time its algorithms once per shape (the shapes never change
      during a fit).
    - ``deterministic``: only cuDNN's deterministic algorithms (same weights, same result).
    - ``fused_optimizer``: the optimizer's single-kernel implementation (``fused=True``), where the
      optimizer has one and the weights are on a GPU or the CPU (there it is about 4x faster than
      torch's default per-tensor loop for the skip network's Adam step).
    - ``channels_last``: the generator's weights (hence its activations) in NHWC layout.
    - ``conv_bias_before_norm``: keep the biases of convolutions that feed a BatchNorm, which
      cancels them (off: about 25 fewer kernels and weight tensors per step in "skip",
      ``dip.nets.normalised``).
    - ``batchnorm_running_stats``: keep BatchNorm's running statistics and step counter, which a fit
      never reads (off: 30 fewer host operations per step in "skip", and no buffer that a compiled
      step mutates, which would keep ``reduce-overhead`` from CUDA graphs). Both layer switches change
      the state dict's keys, so a checkpoint resumes only with the setting it was made with.
    - ``gather_upsampling``: the generator's exact 2x upsamplings as shifts and sums
      (``dip.nets.layers.Upsample``), whose gradient a compiled step computes without a scatter-add;
      eager, it is more kernels.
    - ``compile``: ``torch.compile`` the generator (forward and backward); ``compile_mode``
      ``reduce-overhead`` also replays the step's kernels as a CUDA graph. ``compile_backend``
      ``cudagraphs`` generates no kernels: it traces the step and replays torch's own kernels as CUDA
      graphs, which takes seconds where inductor's code generation takes about a minute (``compile_mode``
      is inductor's). ``aot_eager`` runs that traced step as it is, on any device: the trace without CUDA
      graphs, to check what it computes on a CPU. Tracing turns the upsamplings' gradients
      into accumulating ``index_put``s, which made it 2x slower than the default step on an H200
      (docs/speed.md).
    - ``one_weight_tensor``: during a fit, autograd and the optimizer see the generator's weights as
      one tensor (``DeepImagePrior``): one gradient accumulation per step instead of one per weight
      (87 in "skip"), which stay outside a compiled graph. Only with ``compile`` are the weights'
      views inside the graph; eager, they cost more host operations than they save.
    """

    tf32: bool = True
    cudnn_benchmark: bool = True
    deterministic: bool = False
    fused_optimizer: bool = True
    channels_last: bool = False
    conv_bias_before_norm: bool = False
    batchnorm_running_stats: bool = False
    gather_upsampling: bool = False
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    one_weight_tensor: bool = False

    def __post_init__(self):
        check_choice("compile mode", self.compile_mode, COMPILE_MODES)
        check_choice("compile backend", self.compile_backend, COMPILE_BACKENDS)
        if self.compile_backend != "inductor" and self.compile_mode != "default":  # torch would ignore it
            raise ValueError(f"compile mode '{self.compile_mode}' is inductor's: the {self.compile_backend} "
                             "backend takes only 'default'")

    def check_device(self, device: torch.device) -> None:
        """``DipError`` for switches that cannot run on ``device``, and a warning for those that only slow it:
        compiling on a CPU."""
        if not self.compile or device.type != "cpu":
            return
        if self.compile_backend == "cudagraphs":
            raise DipError("speed.compile_backend=cudagraphs replays CUDA graphs, and this run is on the CPU: leave "
                           "speed.compile false here, or use compile_backend=inductor (or aot_eager: the same "
                           "trace, run as it is)")
        if self.compile_backend == "inductor":
            log.warning("speed.compile on a CPU: torch.compile takes minutes before the first step, and the step is "
                        "slower for it here (docs/speed.md); speed=default does not compile")

    def prepare_generator(self, generator: nn.Module) -> nn.Module:
        """The generator in the chosen memory layout, compiled if asked (in place: the state dict's
        keys stay those of the plain network, less what the layer switches remove)."""
        if not self.conv_bias_before_norm:
            drop_cancelled_biases(generator)
        if not self.batchnorm_running_stats:
            drop_running_statistics(generator)
        for upsample in (m for m in generator.modules() if isinstance(m, Upsample)):
            upsample.gather = self.gather_upsampling
        if self.channels_last:
            generator.to(memory_format=torch.channels_last)
        if self.compile and not self.one_weight_tensor:  # else the module compiles its call over the one tensor
            generator.compile(**self._compile_options())
        return generator

    def compiled(self, function: Callable) -> Callable:
        """``function`` compiled as the compile switches say (itself when ``compile`` is off)."""
        if not self.compile:
            return function
        return torch.compile(function, **self._compile_options())

    def _compile_options(self) -> dict:
        """``torch.compile``'s arguments: one graph per image size, with its sizes fixed.

        A fit's shapes never change, but a process may fit several sizes (a benchmark's worker). Left to
        itself, torch compiles the second size it sees, and every later one, as one graph with symbolic
        sizes (on an H200 a 256 px fit after a 512 px one spent about 100 s compiling such a graph, against
        some 65 s for a fixed-size one, and a time budget cut it 120 steps short), and runs eagerly once
        a function has eight graphs."""
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, GRAPHS_PER_FUNCTION)
        return {"backend": self.compile_backend, "mode": self.compile_mode, "dynamic": False}

    def optimizer(self, factory: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
        """``factory`` (``params -> optimizer``), asking for the fused implementation where it applies."""
        fused_exists = "fused" in inspect.signature(factory).parameters

        def build(params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
            params = list(params)
            fused_device = bool(params) and all(p.device.type in FUSED_DEVICES for p in params)
            if self.fused_optimizer and fused_exists and fused_device:
                return factory(params, fused=True)
            return factory(params)

        return build

    @contextlib.contextmanager
    def backends(self) -> Iterator[None]:
        """Set the process-wide cuDNN / TF32 flags for the duration of a fit, then restore them."""
        flags = [(torch.backends.cudnn, "benchmark", self.cudnn_benchmark),
                 (torch.backends.cudnn, "deterministic", self.deterministic)]
        if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9
            flags.append((torch.backends.cudnn.conv, "fp32_precision", "tf32" if self.tf32 else "ieee"))
        else:
            flags.append((torch.backends.cudnn, "allow_tf32", self.tf32))
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in flags]
        # Matmuls go through the older API, which Lightning reads on CUDA: since torch 2.9 that reader
        # raises once torch.backends.cuda.matmul.fp32_precision has been set directly.
        saved_matmul = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high" if self.tf32 else "highest")
        for owner, name, value in flags:
            setattr(owner, name, value)
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(saved_matmul)
            for owner, name, value in saved:
                setattr(owner, name, value)
