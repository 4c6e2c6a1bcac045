"""The inverse problem to solve: an observation, its degradation, and the ground truth if known."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from dip.config import instantiate_settings
from dip.errors import DipError
from dip.images import centre_crop, load_image, read_image, resize_alpha
from dip.physics import Degradation


@dataclass
class Problem:
    observation: torch.Tensor  # 1 x C x h x w
    physics: Degradation  # prepared for the solution's size
    solution_size: tuple[int, int]
    ground_truth: torch.Tensor | None = None  # 1 x C x H x W
    alpha: torch.Tensor | None = None  # 1 x H x W: the input's alpha channel, set aside for the outputs
    bits: int = 8  # bit depth of the input, kept by the outputs
    source_mode: str = "RGB"  # the input file's mode (PIL's name)

    @property
    def observation_image(self) -> torch.Tensor:
        """The observation as a picture: itself, or the ground truth when it is not an image (features)."""
        return self.observation if self.physics.observation_is_image else self.ground_truth

    @property
    def channels(self) -> int:
        """Channels of the image to restore."""
        return self.observation_image.shape[1]


def _crop_to(image: torch.Tensor, size: int | None) -> torch.Tensor:
    return image if not size else centre_crop(image, size, size)


def _check_fits(physics: Degradation, height: int, width: int, source) -> None:
    try:
        physics.check_fits(height, width)
    except ValueError as error:
        raise DipError(f"{source}: {error}") from None


def _prepare(physics: Degradation, height: int, width: int, generator: torch.Generator) -> None:
    try:
        physics.prepare(height, width, generator)
    except ValueError as error:
        raise DipError(str(error)) from None


def build_problem(
    physics: Degradation,
    path: str | None = None,
    observation: str | None = None,
    default_image: str = "skimage:astronaut",
    size: int | None = None,
    mode: str = "auto",
    seed: int = 0,
) -> Problem:
    """Load or synthesise the observation.

    With ``observation`` (a degraded file) the problem is blind and ``path``, if given, is the
    ground truth. Otherwise the clean image ``path`` (or ``default_image``) is centre-cropped to
    ``size`` x ``size``, trimmed from the top-left to a size the operator maps exactly (multiples of
    the super-resolution factor), and degraded with a generator seeded by ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    mode = "L" if mode in ("grey", "gray") else mode
    if observation is not None:
        if not physics.observation_is_image:
            raise DipError(f"this task observes features of a clean image: give data.path, not data.observation "
                           f"({observation})")
        loaded = read_image(observation, mode=mode, what="observation")
        y, alpha = loaded.pixels[None], loaded.alpha
        scale_h, scale_w = physics.solution_size(1, 1)
        if size:
            y = centre_crop(y, max(1, size // scale_h), max(1, size // scale_w))
            alpha = None if alpha is None else centre_crop(alpha, *y.shape[-2:])
        height, width = physics.solution_size(*y.shape[-2:])
        _check_fits(physics, height, width, observation)
        truth = None
        if path is not None:
            truth = load_image(path, mode="L" if y.shape[1] == 1 else "RGB", what="ground-truth image")[None]
            truth = _crop_to(truth, size)
            if tuple(truth.shape[-2:]) != (height, width):
                raise DipError(
                    f"ground truth {path} is {truth.shape[-1]}x{truth.shape[-2]} but the observation "
                    f"{observation} restores to {width}x{height}"
                )
        _prepare(physics, height, width, generator)
        alpha = None if alpha is None else resize_alpha(alpha, (height, width))
        return Problem(y, physics, (height, width), truth, alpha, loaded.bits, loaded.source_mode)

    source = path if path is not None else default_image
    loaded = read_image(source, mode=mode)
    clean = _crop_to(loaded.pixels[None], size)
    _check_fits(physics, *clean.shape[-2:], source)
    height, width = physics.solution_size(*physics.observation_size(*clean.shape[-2:]))
    clean = clean[..., :height, :width]
    _prepare(physics, height, width, generator)
    alpha = None if loaded.alpha is None else _crop_to(loaded.alpha, size)[..., :height, :width]
    return Problem(
        physics.observe(clean, generator), physics, (height, width), clean, alpha, loaded.bits, loaded.source_mode
    )


def with_dataset_hint(error: DipError, root: str) -> DipError:
    """A missing file under the datasets folder: say how that folder is found."""
    message = str(error)
    if "not found" in message and str(root) in message:
        message += f" (datasets are looked up under DIP_DATA, now '{root}': set it to the datasets folder)"
    return DipError(message)


def problem_from_config(cfg: DictConfig, clean=None, observation=None) -> Problem:
    """The task's degradation and the observation ``cfg`` describes (the same for the same
    ``observation_seed``); ``clean`` and ``observation`` (files or tensors) stand in for
    ``data.path`` and ``data.observation``. The result does not depend on torch's global random state."""
    physics = instantiate_settings(cfg.task.physics, "task")
    data = cfg.data
    try:
        return build_problem(
            physics,
            path=clean if clean is not None else data.path,
            observation=observation if observation is not None else data.observation,
            default_image=data.default_image,
            size=data.size,
            mode=data.mode,
            seed=cfg.observation_seed,
        )
    except DipError as error:
        raise with_dataset_hint(error, data.root) from None
