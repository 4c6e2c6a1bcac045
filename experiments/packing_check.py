"""Does packing several images into one fit (``images_per_fit``) change what each image scores?

Restores N crops of scikit-image's astronaut with one fit each, then packed into one fit twice (in
order and reversed, which changes only which regularising-noise draws each image gets), and prints
each image's PSNR differences (last output and EMA) with the fit seconds of each way. A packed fit
starts each image exactly as its own fit does, so the differences should look like those between the
two packed orders: noise draws and rounding, not a shift.

    python experiments/packing_check.py --images 6 --size 48 --steps 300    # 38 min on 2 CPU cores
    python experiments/packing_check.py arch.channels_down=[16,16,16,16] arch.channels_up=[16,16,16,16] \
        arch.channels_skip=[4,4,4,4]                                         # a small network: minutes
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

from PIL import Image
from skimage import data as skdata

from dip.config import compose_config
from dip.pipeline import run
from dip.problem import problem_from_config, stack_problems


def crops(count: int, size: int, directory: Path) -> list[Path]:
    image = skdata.astronaut()
    paths = []
    for k in range(count):
        top, left = (37 * k) % (image.shape[0] - size), (53 * k + 100) % (image.shape[1] - size)
        path = directory / f"crop{k}.png"
        Image.fromarray(image[top:top + size, left:left + size]).save(path)
        paths.append(path)
    return paths


def scores(result) -> tuple[float, float]:
    return result.metrics["psnr"], result.metrics["psnr_ema"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. task=inpainting mask=bernoulli")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # Lightning's start-up lines, once per fit
    settings = ["task=denoising", "logger=none", "checkpoint.every_n_steps=0", "trainer.enable_progress_bar=false",
                f"data.size={args.size}", f"trainer.max_steps={args.steps}", *args.overrides]
    with tempfile.TemporaryDirectory() as directory:
        configs = [compose_config([*settings, f"data.path={path}"])
                   for path in crops(args.images, args.size, Path(directory))]
        alone = [run(config, None) for config in configs]

        def packed(order: list[int]) -> tuple[dict[int, tuple[float, float]], float]:
            problem = stack_problems([problem_from_config(configs[k]) for k in order], [str(k) for k in order])
            result = run(configs[order[0]], None, problem, seeds=[configs[k].seed for k in order])
            return {k: scores(result.image(i)) for i, k in enumerate(order)}, result.metrics["seconds"]

        forward, forward_seconds = packed(list(range(args.images)))
        backward, _ = packed(list(reversed(range(args.images))))
    print(f"{args.images} images of {args.size} px, {args.steps} steps: fits of their own "
          f"{sum(result.metrics['seconds'] for result in alone):.1f} s in all, one packed fit {forward_seconds:.1f} s")
    pairs = {"packed - alone": (forward, {k: scores(result) for k, result in enumerate(alone)}),
             "packed - packed reversed": (forward, backward)}
    for name, (first, second) in pairs.items():
        for which, label in ((0, "last"), (1, "EMA")):
            differences = [first[k][which] - second[k][which] for k in range(args.images)]
            print(f"{name}, {label}: mean {statistics.fmean(differences):+.3f} dB, "
                  f"each {' '.join(f'{value:+.2f}' for value in differences)}")


if __name__ == "__main__":
    main()
