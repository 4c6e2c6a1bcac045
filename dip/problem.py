"""The inverse problem to solve: an observation, its degradation, and the ground truth if known."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from dip.config_checks import check_settings, instantiate_settings
from dip.errors import DipError
from dip.images import data_crop_offsets, load_image, read_image, resize_alpha
from dip.physics import Degradation

log = logging.getLogger("dip")


@dataclass
class Problem:
    observation: torch.Tensor  # 1 x C x h x w (N x C x h x w: N images restored by one packed fit)
    physics: Degradation  # prepared for the solution's size
    solution_size: tuple[int, int]
    ground_truth: torch.Tensor | None = None  # 1 x C x H x W (N x ...)
    alpha: torch.Tensor | None = None  # 1 x H x W: the input's alpha channel, set aside for the outputs
    bits: int = 8  # bit depth of the input, kept by the outputs
    source_mode: str = "RGB"  # the input file's mode (PIL's name)
    loaded_size: tuple[int, int] | None = None  # the solution's (height, width) before data.size cropped it
    offset: tuple[int, int] = (0, 0)  # (top, left) of the solution in that loaded size: where an aligned guide is cut

    @property
    def observation_image(self) -> torch.Tensor:
        """The observation as a picture: itself, or the ground truth when it is not an image (features)."""
        return self.observation if self.physics.observation_is_image else self.ground_truth

    @property
    def images(self) -> int:
        """How many images this problem restores: more than one for a packed fit."""
        return self.observation.shape[0]

    @property
    def channels(self) -> int:
        """Channels of the image to restore: the observation's, as the degradation maps them."""
        if not self.physics.observation_is_image:
            return self.ground_truth.shape[1]
        return self.physics.solution_channels(self.observation.shape[1])


def stack_problems(problems: list[Problem], names: list[str]) -> Problem:
    """One problem of ``N`` images of one size (``names`` name them in errors), to be restored by one
    packed fit: observations and ground truths stacked along the batch, and the first problem's
    degradation with each per-image buffer (an inpainting mask) stacked the same way.

    ``A`` of a stacked degradation maps image ``k`` of a batch with image ``k``'s buffers, so the
    data term of copy ``k`` is that of its own observation."""
    first = problems[0]
    for problem, name in zip(problems, names):
        if problem.alpha is not None:
            raise DipError(f"cannot pack {name}: its alpha channel is kept by a fit of its own")
    for problem, name in zip(problems[1:], names[1:]):
        if (problem.solution_size, problem.channels, type(problem.physics)) != (
                first.solution_size, first.channels, type(first.physics)):
            raise DipError(f"cannot pack {name} with {names[0]}: a packed fit restores images of one size, "
                           f"channel count and degradation")
    physics = copy.deepcopy(first.physics)  # the problems stay as they were
    for name, buffer in list(physics.named_buffers()):
        others = [problem.physics.get_buffer(name) for problem in problems[1:]]
        if all(torch.equal(buffer, other) for other in others):
            continue
        owner, _, attribute = name.rpartition(".")
        setattr(physics.get_submodule(owner), attribute, torch.cat([buffer, *others]))
    truths = [problem.ground_truth for problem in problems]
    return Problem(
        torch.cat([problem.observation for problem in problems]), physics, first.solution_size,
        None if any(truth is None for truth in truths) else torch.cat(truths),
        bits=first.bits, source_mode=first.source_mode, loaded_size=first.loaded_size, offset=first.offset,
    )


def _named(source, what: str, file_prefix: str = "") -> str:
    """How a message names an image given as a file (its path, after ``file_prefix``) or as a tensor (whose
    values would fill the line)."""
    return f"the {what} tensor" if isinstance(source, torch.Tensor) else f"{file_prefix}{source}"


def _check_given(source, argument: str) -> None:
    """Refuse an image given in Python that is neither a file nor a tensor (its text would be taken for a path)."""
    if source is None or isinstance(source, (str, os.PathLike, torch.Tensor)):
        return
    kind = type(source)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    hint = " (torch.from_numpy(a).permute(2, 0, 1) makes one of an H x W x C array)" if name == "numpy.ndarray" else ""
    raise DipError(f"{argument} must be a file path or a torch.Tensor (C x H x W in [0, 1]), not of type {name}{hint}")


def _check(source, check, *args):
    """``check(*args)``, one of the operator's checks or answers; the ``ValueError`` it raises names ``source``."""
    try:
        return check(*args)
    except ValueError as error:
        raise DipError(f"{source}: {error}") from None


def _check_channels(source, physics: Degradation, clean: torch.Tensor, observation: torch.Tensor) -> None:
    """A clean image the degradation's observation does not restore to (a grey one for demosaicing)."""
    channels = clean.shape[1]
    restored = _check(source, physics.solution_channels, observation.shape[1]) if physics.observation_is_image \
        else channels
    if restored != channels:
        raise DipError(f"{source} has {channels} channel(s), but {type(physics).__name__} restores {restored} from "
                       f"its observation (data.mode=RGB reads a grey image as colour)")


def _prepare(physics: Degradation, height: int, width: int, generator: torch.Generator,
             loaded_size: tuple[int, int]) -> None:
    try:
        physics.prepare(height, width, generator, loaded_size)
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
    if observation is not None:
        observed_name = _named(observation, "observation")
        if not physics.observation_is_image:
            raise DipError(f"this task observes features of a clean image: give data.path, not data.observation "
                           f"({observed_name})")
        _check(observed_name, physics.check_observed)
        loaded = read_image(observation, mode=mode, what="observation")
        channels = _check(observed_name, physics.solution_channels, loaded.pixels.shape[0])
        scale_h, scale_w = physics.solution_size(1, 1)
        observed = tuple(loaded.pixels.shape[-2:])
        crop = (max(1, size // scale_h), max(1, size // scale_w)) if size else observed
        top, left = data_crop_offsets(observed, *crop)  # the window data.size keeps
        window = (..., slice(top, top + crop[0]), slice(left, left + crop[1]))
        y, alpha = loaded.pixels[None][window], None if loaded.alpha is None else loaded.alpha[window]
        if (kept := tuple(y.shape[-2:])) != observed:
            log.info(_cropped(observed_name, observed, kept, size))
        height, width = physics.solution_size(*kept)
        restored = observed_name if (height, width) == kept else \
            f"{observed_name}: its {kept[1]}x{kept[0]} observation restores to {width}x{height}"
        _check(restored, physics.check_fits, height, width)
        full_height, full_width = physics.solution_size(*observed)
        truth = None
        if path is not None:
            truth = load_image(path, mode="L" if channels == 1 else "RGB", what="ground-truth image")[None]
            if tuple(truth.shape[-2:]) != (full_height, full_width):
                raise DipError(
                    f"{_named(path, 'ground-truth', 'ground truth ')} is {truth.shape[-1]}x{truth.shape[-2]}, but "
                    f"{_named(observation, 'observation', 'the observation ')} restores to {full_width}x{full_height}"
                )
            # the window the observation's crop covers (a centre crop of its own could be a pixel off)
            truth = truth[..., top * scale_h : top * scale_h + height, left * scale_w : left * scale_w + width]
        _prepare(physics, height, width, generator, (full_height, full_width))
        alpha = None if alpha is None else resize_alpha(alpha, (height, width))
        return Problem(y, physics, (height, width), truth, alpha, loaded.bits, loaded.source_mode,
                       (full_height, full_width), (top * scale_h, left * scale_w))

    source = path if path is not None else default_image
    loaded = read_image(source, mode=mode)
    source = _named(source, "image")
    loaded_size = tuple(loaded.pixels.shape[-2:])
    cropped = (min(size, loaded_size[0]), min(size, loaded_size[1])) if size else loaded_size
    _check(source, physics.check_fits, *cropped)
    if cropped != loaded_size:
        log.info(_cropped(source, loaded_size, cropped, size))
    height, width = physics.solution_size(*physics.observation_size(*cropped))
    if height > cropped[0] or width > cropped[1]:  # a degradation of one's own that rounds up: no image to fit
        raise DipError(f"{type(physics).__name__}: solution_size(observation_size({cropped[0]}, {cropped[1]})) is "
                       f"{height}x{width}, larger than the {cropped[0]}x{cropped[1]} image ({source}): "
                       f"observation_size must round down, to the observation of a whole solution")
    if (height, width) != cropped:
        log.info(f"{source}: {cropped[1]}x{cropped[0]} cropped from the top-left to {width}x{height}, "
                 f"the size the task's operator maps exactly")
    top, left = data_crop_offsets(loaded_size, *cropped)  # the window data.size keeps; the top-left trim keeps it
    window = (..., slice(top, top + height), slice(left, left + width))
    clean = loaded.pixels[None][window]
    _prepare(physics, height, width, generator, loaded_size)
    alpha = None if loaded.alpha is None else loaded.alpha[window]
    observation = physics.observe(clean, generator)
    _check_channels(source, physics, clean, observation)
    return Problem(observation, physics, (height, width), clean, alpha, loaded.bits, loaded.source_mode,
                   loaded_size, (top, left))


def _cropped(name: str, loaded: tuple[int, int], kept: tuple[int, int], size: int) -> str:
    """The line that says a file is restored in part (the quick profile crops on a CPU unasked)."""
    return (f"{name}: restoring the centre {kept[1]}x{kept[0]} of its {loaded[1]}x{loaded[0]} pixels "
            f"(data.size={size} crops the restored image; data.size=null restores all of it)")


def with_dataset_hint(error: DipError, root: str) -> DipError:
    """A missing file under the datasets folder: say how that folder is found."""
    message = str(error)
    if "not found" in message and str(root) in message:
        message += f" (datasets are looked up under DIP_DATA, now '{root}': set it to the datasets folder)"
    return DipError(message)


def checked_physics(physics, what: str) -> Degradation:
    """``physics``, or ``DipError`` naming ``what`` gave it when it is no ``Degradation`` with an ``A(x)`` of its
    own."""
    kind = type(physics).__name__
    if not isinstance(physics, Degradation):
        raise DipError(f"{what} must be a dip.physics.Degradation (a subclass defining A(x)), not {kind}")
    if type(physics).A is Degradation.A:
        raise DipError(f"{what} {kind} defines no A(x), the degradation it stands for")
    return physics


def built_physics(cfg: DictConfig) -> Degradation:
    """The degradation that ``cfg.task.physics`` describes, checked (``checked_physics``)."""
    return checked_physics(instantiate_settings(cfg.task.physics, "task.physics"), "task.physics")


def problem_from_config(cfg: DictConfig, clean=None, observation=None, physics: Degradation | None = None) -> Problem:
    """The task's degradation and the observation ``cfg`` describes (the same for the same
    ``observation_seed``); ``clean`` and ``observation`` (files or tensors) stand in for
    ``data.path`` and ``data.observation``, and ``physics`` (a copy of it: the problem prepares it for
    the image's size) for ``task.physics``. The result does not depend on torch's global random state.
    The run's settings are checked first (``check_settings``)."""
    check_settings(cfg)
    # here, not in read_image: the config's data.path may be a number (data.path=5), which is a file's name
    _check_given(clean, "image")
    _check_given(observation, "observation")
    physics = built_physics(cfg) if physics is None else copy.deepcopy(checked_physics(physics, "physics"))
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
