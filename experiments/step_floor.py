"""The floor of one denoising step: the bytes its layers must move and the arithmetic they must do.

Traced on the meta device (nothing is computed or allocated), for the default skip network at
``--size`` px in float32: the outputs of every operator of the forward pass, from which the bytes an
unfused eager step moves through device memory follow (forward: each operator reads its input and writes
its output; backward: each reads its output's gradient and what it saved, and writes its input's
gradient), and the FLOPs of the convolutions. Divided by a GPU's bandwidth and arithmetic rate they
give the two times below which no version of the step runs (docs/speed.md, "The floor").

    python experiments/step_floor.py --size 512 --bandwidth-tb 3.0 --tflops 400
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dip.config import compose_config  # noqa: E402
from dip.pipeline import prepare  # noqa: E402

ALLOCATIONS = (torch.ops.aten.empty, torch.ops.aten.empty_like, torch.ops.aten.empty_strided)  # write nothing


class Traffic(TorchDispatchMode):
    """Bytes written by each ATen operator (views write nothing) and the convolutions' multiply-adds."""

    def __init__(self):
        super().__init__()
        self.written: collections.Counter = collections.Counter()
        self.multiply_adds = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if not func.is_view and func.overloadpacket not in ALLOCATIONS:
            for tensor in (output if isinstance(output, (tuple, list)) else [output]):
                if isinstance(tensor, torch.Tensor):
                    self.written[func.overloadpacket.__name__] += tensor.numel() * tensor.element_size()
        if func.overloadpacket is torch.ops.aten.convolution:
            weight = args[1]  # out x in/groups x kh x kw
            self.multiply_adds += output.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]
        return output


def layer_traffic(generator: nn.Module, z_shape: tuple[int, ...]) -> tuple[dict[str, int], int]:
    """Bytes each operator writes in one forward pass, and the convolutions' multiply-adds."""
    meta = generator.to("meta")
    with torch.no_grad(), Traffic() as traffic:
        meta(torch.empty(z_shape, device="meta"))
    return dict(traffic.written), traffic.multiply_adds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--bandwidth-tb", type=float, default=3.0, help="device memory bandwidth, TB/s")
    parser.add_argument("--tflops", type=float, default=400.0, help="arithmetic rate of the convolutions, TFLOP/s")
    args = parser.parse_args(argv)
    _, module = prepare(compose_config(["task=denoising", "logger=none", f"data.size={args.size}"]))
    written, multiply_adds = layer_traffic(module.generator, tuple(module.z.shape))
    activations = sum(written.values())
    # forward: read input + write output (2x); backward: read grad_out and what was saved, write grad_in (3x)
    eager_bytes = 5 * activations
    flops = 3 * 2 * multiply_adds  # forward, and the two products of the backward pass
    print(f"{args.size} px: operator outputs {activations / 1e9:.2f} GB per forward pass "
          f"({', '.join(f'{name} {size / 1e9:.2f}' for name, size in sorted(written.items()))})")
    print(f"unfused eager step moves about {eager_bytes / 1e9:.1f} GB: {eager_bytes / args.bandwidth_tb / 1e9:.2f} ms "
          f"at {args.bandwidth_tb} TB/s")
    print(f"convolutions: {flops / 1e9:.0f} GFLOP: {flops / args.tflops / 1e9:.2f} ms at {args.tflops} TFLOP/s")


if __name__ == "__main__":
    main()
