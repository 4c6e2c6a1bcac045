"""What inductor makes of the generator's step: its generated kernels, and the ATen kernels it calls.

Compiles one forward and backward pass of the generator that the given overrides configure (the
framework's own ``prepare``) and counts, in the code inductor wrote, the kernels it generated, those of
them that scatter-add (``index_put``: atomic adds on a GPU), and each library call it left in (on a
GPU, the convolutions go to cuDNN as here). On the CPU, inductor fuses largely as it does on a GPU,
with C++ kernels instead of Triton ones; compiling takes a few minutes (docs/speed.md).

    python experiments/compiled_kernels.py --size 128 'arch.channels_down=[8,8,8,8,8]' 'arch.channels_up=[8,8,8,8,8]'
    python experiments/compiled_kernels.py --size 128 ... speed.gather_upsampling=true
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

import torch
from torch._inductor.utils import run_and_get_code

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dip.config import compose_config  # noqa: E402
from dip.pipeline import prepare  # noqa: E402

GENERATED = re.compile(r"^\s+(?:cpp|triton)_\w+(?:\.run)?\(", re.M)  # a call of a generated kernel
SCATTERS = re.compile(r"^\s+(?:cpp|triton)_\w*index_put\w*(?:\.run)?\(", re.M)
LIBRARY_CALLS = re.compile(r"(extern_kernels\.\w+|torch\.ops\.aten\.\w+(?:\.\w+)?)\(")


def kernel_counts(overrides: list[str], size: int) -> collections.Counter:
    _, module = prepare(compose_config(["task=denoising", "logger=none", f"data.size={size}", *overrides]))
    generator, z = module.generator, module.z
    step = torch.compile(lambda z: generator(z).square().mean())
    _, code = run_and_get_code(lambda: step(z).backward())
    counts: collections.Counter = collections.Counter()
    for source in code:
        counts["generated kernels"] += len(GENERATED.findall(source))
        counts["of which scatter-adds (index_put)"] += len(SCATTERS.findall(source))
        counts.update(LIBRARY_CALLS.findall(source))
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side in px (the default network "
                        "needs >= 64 on a CPU, where inductor mis-strides the replicate padding of smaller ones)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for run.py")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name, count in sorted(kernel_counts(args.overrides, args.size).items()):
        print(f"{count:5d}  {name}")


if __name__ == "__main__":
    main()
