"""One restoration from a composed config: build, fit with Lightning, measure, write outputs."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import resource
import signal
import site
import sys
import sysconfig
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import WandbLogger
from torch.utils.data import Dataset

from dip.callbacks import CollapseGuard
from dip.callbacks.device_state import DeviceStateCallback
from dip.checkpoint import (
    CHECKPOINT_NAME,
    Resumable,
    RunCheckpoint,
    StepLoader,
    checked_resume,
)
from dip.config_checks import check_whole_number, instantiate_settings, settings_error
from dip.errors import CheckpointLacksError, DipError, FitStoppedError, Interrupted, OutputsNotWrittenError, one_line
from dip.inputs import padded_size
from dip.loggers import ImageLogger, flat_config
from dip.memory import check_codes_fit, check_memory_fits, checked_estimate, meta_copy, out_of_memory, run_device
from dip.metrics import per_image_psnr, psnr, psnr_from_mse, rounded, ssim
from dip.module import DeepImagePrior, check_data_terms
from dip.nets.packed import pack_state_dicts
from dip.outputs import Result, write_outputs
from dip.problem import Problem, problem_from_config, with_dataset_hint
from dip.run_settings import file_digests
from dip.signals import held_signals, signals_stop_the_fit, stopped_by
from dip.speed import Speed

# Lightning advertises its cloud logger at every Trainer's start: a line in each run's log, no information
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage())


class StepDataset(Dataset):
    """One item per optimisation step, so that a whole run is a single epoch (one checkpoint, one
    end-of-epoch hook) rather than ``max_steps`` epochs over one image."""

    def __init__(self, steps: int):
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> int:
        return index


class FitTimer(pl.Callback):
    """Wall time of the optimisation loop alone (start-up excluded), synchronised with the device:
    ``seconds`` of this run, and ``total_seconds`` with those of the runs a ``resumed`` fit continues.
    Each checkpoint holds the fit's time up to it, unknown (None) once a fit continued a checkpoint
    that did not hold it. ``warmup_seconds`` is the time of this run's first ``WARMUP_STEPS`` steps
    (all of them in a shorter run), which hold a fit's fixed costs: compiling, recording CUDA graphs,
    cuDNN's search for its algorithms."""

    WARMUP_STEPS = 3  # reduce-overhead records its CUDA graphs in the second and third calls

    def __init__(self, resumed: bool = False):
        self.earlier: float | None = None if resumed else 0.0  # a resumed checkpoint's state sets it
        self.warmup_seconds: float | None = None

    def on_train_start(self, trainer, pl_module):
        self._sync(pl_module)
        self.start = time.perf_counter()
        self.first_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step - self.first_step == self.WARMUP_STEPS:  # one host sync in the whole fit
            self._sync(pl_module)
            self.warmup_seconds = time.perf_counter() - self.start

    def on_train_end(self, trainer, pl_module):
        self._sync(pl_module)
        self.seconds = time.perf_counter() - self.start
        if self.warmup_seconds is None:
            self.warmup_seconds = self.seconds
        self.total_seconds = None if self.earlier is None else self.earlier + self.seconds

    def state_dict(self) -> dict:
        return {"seconds": None if self.earlier is None else self.earlier + time.perf_counter() - self.start}

    def load_state_dict(self, state_dict: dict) -> None:
        self.earlier = state_dict["seconds"]

    @staticmethod
    def _sync(pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)


class PeakMemory(pl.Callback):
    """Peak memory of the fit in MiB: the most CUDA memory tensors held (``max_memory_allocated``) on
    a GPU; on a CPU the process's peak resident set, which includes start-up and earlier jobs of the
    same process."""

    def on_train_start(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            self.source, self.mib = "cuda_max_allocated", torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        else:  # ru_maxrss is in KiB on Linux, in bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.source, self.mib = "process_max_rss", rss / (2**20 if sys.platform == "darwin" else 2**10)


class MetricsProgressBar(TQDMProgressBar):
    """The progress bar, showing the latest device-side metrics read only when it refreshes.

    (Logging with ``prog_bar=True`` instead makes Lightning copy each metric to the host after
    every step, a device synchronisation per step.)
    """

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.update({name: f"{float(value):.2f}" for name, value in trainer.callback_metrics.items()})
        return metrics


def prepare(
    cfg: DictConfig, problem: Problem | None = None, seeds: list[int] | None = None,
    generator: torch.nn.Module | None = None, speed: Speed | None = None,
    early_stopping: DeviceStateCallback | None = None,
) -> tuple[Problem, DeepImagePrior]:
    """Everything that can fail on the user's input, before any file is written: the problem (unless
    given, built by ``problem_from_config(cfg)``) and the module that solves it, with ``cfg.arch``'s
    generator, or a copy of ``generator`` (a network built in Python, its weights as they are). ``speed``
    and the fit's ``early_stopping`` callback, checked against the module, are those ``cfg`` names unless
    given (the fit's own, built once).

    A problem of several images (``dip.problem.stack_problems``) gets one generator copy per image,
    copy ``k`` initialised, with its code, as a fit of image ``k`` alone with seed ``seeds[k]``
    (default: ``cfg.seed`` for every image) would be."""
    problem = problem if problem is not None else problem_from_config(cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    code = instantiate_settings(cfg.input, "input")
    try:
        code.prepare(problem.channels, *problem.solution_size, problem.loaded_size, problem.offset)
    except DipError as error:
        raise with_dataset_hint(error, cfg.data.root) from None
    speed = speed if speed is not None else instantiate_settings(cfg.speed, "speed")
    if generator is not None and max(cfg.restarts, problem.images) > 1:
        raise DipError(f"a generator given in Python is one network: restarts={cfg.restarts} packs copies of one "
                       "built from a config (arch=...)")
    copies = check_copies(cfg, problem.images)
    if cfg.check_memory:
        check_codes_fit(code.channels, *problem.solution_size, max(copies, problem.images))
    z = None
    if generator is not None:
        # the caller's network stays as it was; its copy in float32, as the code z and an arch's are (a double
        # one passed the meta check, made in float32, and failed at the first step; precision=64 makes all double)
        generator = copy.deepcopy(generator).float()
    elif problem.images > 1:
        generator, z = _seeded_copies(cfg, code, problem, seeds or [cfg.seed] * problem.images)
    else:
        packing = {"copies": copies} if copies > 1 else {}
        generator = instantiate_settings(cfg.arch, "arch", in_channels=code.channels, out_channels=problem.channels,
                                         **packing)
    generator = speed.prepare_generator(generator)
    module = DeepImagePrior(
        generator=generator,
        physics=problem.physics,
        observation=problem.observation,
        code=code,
        optimizer=speed.optimizer(checked_optimizer(cfg.optim)),
        output_size=problem.solution_size,
        ground_truth=problem.ground_truth,
        ema_weight=cfg.ema_weight,
        backtrack_db=cfg.backtrack_db,
        backtrack_against=cfg.backtrack_against,
        metrics_every=cfg.metrics_every,
        channels=problem.channels,
        regularizer=instantiate_settings(cfg.regularizer, "regularizer") if cfg.get("regularizer") else None,
        max_rollbacks=cfg.max_rollbacks,
        diverged_gradient=cfg.diverged_gradient,
        restarts=copies,
        one_weight_tensor=speed.compiled if speed.one_weight_tensor else None,
        z=z,
    )
    check_shapes(module, OmegaConf.select(cfg, "arch._target_"), cfg.task.name)
    if (stopping := early_stopping or early_stopping_of(cfg)) is not None:  # now, before the logger writes files
        stopping.check_module(module)
    return problem, module


def early_stopping_of(cfg: DictConfig) -> DeviceStateCallback | None:
    """A fresh instance of the early-stopping callback that ``cfg.early_stop`` names, if any."""
    return instantiate_settings(cfg.early_stop, "early_stop") if cfg.get("early_stop") else None


def check_shapes(module: DeepImagePrior, arch: str, task: str) -> None:
    """One line now, rather than a traceback at the first step or, for the baseline, after the whole
    fit, when a generator's output or an operator's ``A(x)`` or ``baseline(y)`` does not have the shape
    the problem needs (the mistakes of a generator or degradation of one's own). Run on a meta-device
    copy: shapes only, nothing computed. A layer the meta device cannot run leaves the check to the fit."""
    meta = meta_copy(module, torch.float32)
    wanted = tuple(meta.ema.shape)
    try:
        with torch.no_grad():
            generated = meta.generator(meta.z)
            if not isinstance(generated, torch.Tensor):
                raise DipError(f"arch {arch}: the generator returns a {type(generated).__name__}, not one "
                               "N x C x H x W tensor")
            x = meta.images_of(generated)
            if tuple(x.shape) != wanted:
                raise DipError(f"arch {arch}: the generator gives {shape_text(generated)} for a {shape_text(meta.z)} "
                               f"code, but task {task} restores {shape_text(meta.ema)} (its output must have the "
                               "code's size, or larger, and the image's channels)")
            observed = meta.physics.A(x)
            if tuple(observed.shape[-3:]) != tuple(meta.observation.shape[-3:]):
                raise DipError(f"task {task}: A(x) maps the {shape_text(x)} restoration to {shape_text(observed)}, "
                               f"but the observation is {shape_text(meta.observation)} (an operator that changes the "
                               "size defines observation_size and solution_size)")
            # its shape: no gradient under no_grad (a fit of the pixels, prior=tv, has x a parameter that asks for one)
            check_data_terms(meta.physics, meta.physics.data_term(x, meta.observation), x.detach())
            baseline = meta.physics.baseline(meta.observation)
            if baseline is not None and tuple(baseline.shape[-3:]) != wanted[-3:]:
                raise DipError(f"task {task}: baseline(y) gives {shape_text(baseline)}, not the {shape_text(x)} "
                               "restoration's shape (baseline() maps y to the restoration's size, None for no "
                               "baseline; an operator that changes the size defines solution_size too, which makes "
                               "the image's size one it can map back)")
    except DipError:
        raise
    except NotImplementedError:
        return
    except Exception as error:  # noqa: BLE001 (only the shapes are this check's business)
        if "meta" in str(error).lower():  # a layer the meta device cannot run
            return
        raise DipError(f"arch {arch} / task {task}: the step fails on a {shape_text(meta.z)} code (its channels: "
                       f"input.channels): {one_line(error, 200)}{_raised_at(error)}") from None


def _raised_at(error: BaseException) -> str:
    """Where ``error`` was raised in code outside Python's and the installed libraries' (a generator or operator
    of one's own), as `` (at FILE:LINE in FUNCTION)``; ``""`` if nowhere."""
    installed = tuple(str(Path(path).resolve()) for path in [*site.getsitepackages(), sysconfig.get_paths()["stdlib"]])
    own = [frame for frame in traceback.extract_tb(error.__traceback__)
           if not str(Path(frame.filename).resolve()).startswith(installed)]
    return f" (at {own[-1].filename}:{own[-1].lineno} in {own[-1].name})" if own else ""


def shape_text(tensor: torch.Tensor) -> str:
    return " x ".join(map(str, tensor.shape))


def _seeded_copies(cfg: DictConfig, code, problem: Problem, seeds: list[int]) -> tuple[torch.nn.Module, torch.Tensor]:
    """A generator packing one copy per seed and the packed code: copy ``k``'s weights and code are
    drawn as a fit of its own with seed ``seeds[k]`` draws them (weights first, then the code)."""
    states, codes = [], []
    for seed in seeds:
        pl.seed_everything(seed, verbose=False)
        single = instantiate_settings(cfg.arch, "arch", in_channels=code.channels, out_channels=problem.channels)
        states.append(single.state_dict())
        codes.append(code.make(*padded_size(*problem.solution_size, getattr(single, "size_multiple", 1))))
    generator = instantiate_settings(cfg.arch, "arch", in_channels=code.channels, out_channels=problem.channels,
                                     copies=len(seeds))
    generator.load_state_dict(pack_state_dicts(states))
    return generator, torch.cat(codes, dim=1)


def checked_optimizer(node: DictConfig) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer factory ``node`` describes, its settings tried on one parameter now: an unknown
    or impossible one (a negative weight decay) is one line before the fit, not a traceback in it."""
    factory = instantiate_settings(node, "optim")
    try:
        factory([torch.zeros(1, requires_grad=True)])
    except Exception as error:
        raise settings_error(error, "optim", node._target_) from None
    return factory


def check_copies(cfg: DictConfig, images: int = 1) -> int:
    """How many copies of the generator the fit packs: ``cfg.restarts``, or one per image of a problem
    of several; refused (one line) where they cannot be packed into one fit."""
    restarts = cfg.restarts
    check_whole_number("restarts", restarts)
    if images > 1 and restarts > 1:
        raise DipError(f"restarts={restarts} does not combine with packing {images} images into one fit")
    copies = max(restarts, images)
    packed = f"restarts={restarts}" if restarts > 1 else f"packing {images} images"
    if copies > 1:
        if "copies" not in inspect.signature(get_class(cfg.arch._target_)).parameters:
            raise DipError(f"{packed} packs copies of the generator into one network, which arch "
                           f"'{cfg.arch_name}' ({cfg.arch._target_}) cannot do: use a skip architecture, or give "
                           f"the class a copies=N argument that packs N independent networks, as dip.nets.Skip does")
        stopping = get_class(cfg.early_stop._target_) if cfg.get("early_stop") else None
        if stopping is not None and not getattr(stopping, "handles_copies", False):
            raise DipError(f"{packed} does not combine with early stopping by {stopping.__name__} (early_stop=none, "
                           "or early_stop=discrepancy for denoising)")
    return copies


def final_metrics(
    module: DeepImagePrior, problem: Problem, outputs: torch.Tensor, baseline: torch.Tensor | None
) -> dict:
    """PSNR / SSIM of the final output and the EMA against the ground truth (null without one), and
    of the naive estimate from the observation (``psnr_observation``: the observation itself, bicubic
    upsampling for super-resolution, null when the observation is not an image). ``psnr_fit`` is
    ``-10 log10`` of the data term. ``outputs`` is ``module.restart_outputs()`` (the restoration is
    their average) and ``baseline`` the physics' baseline of the observation, computed once by the
    caller. With several images packed, each of these is a list: one value per image."""
    restored, ema, truth = module.combine(outputs), module.ema_output(), module.ground_truth
    with torch.no_grad():
        fit = psnr_from_mse(problem.physics.data_term(restored, module.observation))  # one per restoration
    metrics = {"psnr": None, "psnr_ema": None, "ssim": None, "ssim_ema": None, "psnr_observation": None}
    if truth is not None:
        metrics.update(
            psnr=_each_image(psnr, restored, truth), psnr_ema=_each_image(psnr, ema, truth),
            ssim=_each_image(ssim, restored, truth), ssim_ema=_each_image(ssim, ema, truth),
            psnr_observation=None if baseline is None else _each_image(psnr, baseline, truth),
        )
    metrics["psnr_fit"] = rounded(fit)
    if not module.separate_images:
        metrics = _first_image(metrics)
        if module.restarts > 1 and truth is not None:  # each restart's own figures, beside their average's
            for key, images in (("psnr_restarts", outputs), ("psnr_ema_restarts", module.ema)):
                metrics[key] = rounded(per_image_psnr(images, truth))
    return metrics


def before_collapse_metrics(module: DeepImagePrior, ema: torch.Tensor) -> dict:
    """PSNR and SSIM of the EMA kept from before a collapse (``CollapseGuard``), null without a ground
    truth; a list, one per image, for several images packed."""
    truth = module.ground_truth
    values = {name: None if truth is None else _each_image(metric, ema, truth)
              for name, metric in (("psnr_ema_before_collapse", psnr), ("ssim_ema_before_collapse", ssim))}
    return values if module.separate_images else _first_image(values)


def _each_image(metric, images: torch.Tensor, truth: torch.Tensor) -> list[float | None]:
    """``metric`` of each image against its own ground truth, rounded as ``metrics.json`` keeps it;
    null where it is infinite (an observation with nothing missing), which strict JSON cannot hold."""
    return rounded([float(metric(images[k:k + 1], truth[k:k + 1])) for k in range(len(images))])


def _first_image(metrics: dict) -> dict:
    """Per-image metrics of a fit of one image: its values, not lists of one."""
    return {key: None if values is None else values[0] for key, values in metrics.items()}


def make_logger(cfg: DictConfig, resumed: Resumable | None = None):
    """The logger ``cfg.logger`` describes (False for none). For a fit ``resumed`` from a checkpoint,
    a W&B logger continues the run the checkpoint names, and a CSV logger keeps the rows before it."""
    if not cfg.logger or not cfg.logger.get("_target_"):
        return False
    continued = {}
    if resumed is not None:
        continued = {"dip.loggers.wandb_logger": {"continue_run": resumed.wandb_run_id},
                     "dip.loggers.CSVLogger": {"resumed_from_step": resumed.step}}.get(cfg.logger._target_, {})
    return instantiate(cfg.logger, **continued)


def fit(cfg: DictConfig, module: DeepImagePrior, callbacks=(), ckpt_path: str | None = None,
        resumed: Resumable | None = None, speed: Speed | None = None) -> pl.Trainer:
    """Optimise ``module`` with the Trainer and logger ``cfg`` describes (and extra ``callbacks``),
    from the checkpoint ``ckpt_path`` if given (``resumed``: what it holds, for the logger), with the
    ``speed`` switches that prepared it (default: ``cfg.speed``'s)."""
    logger = make_logger(cfg, resumed)
    callbacks = [*callbacks, ImageLogger(cfg.image_log_every)]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(MetricsProgressBar(refresh_rate=cfg.metrics_every))
    try:
        trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    except Exception as error:  # an unknown or impossible Trainer argument: before the logger writes anything
        raise settings_error(error, "trainer", cfg.trainer._target_) from None
    if logger:
        logger.log_hyperparams(flat_config(cfg))
    loader = StepLoader(StepDataset(trainer.max_steps))
    if isinstance(logger, WandbLogger):
        _ = logger.experiment  # start the W&B run now, not inside the timed loop at its first log
    speed = speed if speed is not None else instantiate_settings(cfg.speed, "speed")
    with warnings.catch_warnings(), speed.backends():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # a frozen feature extractor (pre-images) stays in eval mode on purpose
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        # Lightning's own call of a pytree API that torch deprecates: nothing a user can act on
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        # the metrics are logged every metrics_every steps, not at Lightning's logging interval
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        try:
            with signals_stop_the_fit():
                trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
        except Exception as error:
            # a signal outside the steps, or one that broke the step (the compiler's processes, say)
            signum = error.signum if isinstance(error, FitStoppedError) else _signal_during(callbacks)
            if signum is not None:
                raise Interrupted(signum) from None
            if speed.compile and _raised_by_compiled_code(error):
                raise DipError(f"the compiled step failed, torch.compile's fault at this image size "
                               f"({type(error).__name__}: {one_line(error, 200)}): run with speed.compile=false") \
                    from None
            raise
    # Lightning's teardown moves the module to the CPU: back to where it ran, so that the final
    # outputs and metrics are computed (and reported) on the GPU, not in minutes on the CPU.
    module.to(trainer.strategy.root_device)
    return trainer


def _signal_during(callbacks) -> int | None:
    """The SIGINT, SIGTERM or SIGHUP that the fit's ``RunCheckpoint`` noted, if any."""
    return next((callback.signal_received for callback in callbacks if isinstance(callback, RunCheckpoint)), None)


def _raised_by_compiled_code(error: BaseException) -> bool:
    """Whether ``error`` comes from code that torch.compile made or runs (a generated kernel's check
    of its own buffers, say), not from the model's own code."""
    frames = traceback.extract_tb(error.__traceback__)
    return any("torchinductor" in frame.filename or "/torch/_inductor/" in frame.filename for frame in frames)


def open_wandb_run():
    """The W&B run this process has open (``wandb.run``), or None; W&B is not imported for it."""
    return wandb.run if (wandb := sys.modules.get("wandb")) is not None else None


def ends_its_wandb_run_on_error(fit_and_write: Callable) -> Callable:
    """``fit_and_write``, ending the W&B run it started (the one this process has open) when it fails, in the
    fit's steps or after them: the next fit of the process (a sweep's next job, the API's next call) would
    log into it, and into the failed run's folder. A run open before it (the user's own, in a notebook)
    is not its to end."""
    @functools.wraps(fit_and_write)
    def ending(*args, **kwargs):
        earlier = open_wandb_run()
        try:
            return fit_and_write(*args, **kwargs)
        except BaseException:
            if (ours := open_wandb_run()) is not None and ours is not earlier:
                ours.finish(exit_code=1)
            raise

    return ending


@ends_its_wandb_run_on_error
def run(cfg: DictConfig, output_dir: Path | None, problem: Problem | None = None, callbacks=(),
        checkpoint_dir: Path | None = None, seeds: list[int] | None = None,
        generator: torch.nn.Module | None = None, write: Callable[[Result], object] | None = None,
        extra_settings: dict | None = None) -> Result:
    """Restore one image as ``cfg`` says (or ``problem``, built from it; one of several images, each
    with its seed in ``seeds``; with a network of one's own, ``generator``: see ``prepare``); write the
    outputs into ``output_dir`` unless it is None (or by ``write(result)``: a benchmark's files).

    ``callbacks`` are extra Lightning callbacks (an experiment's recorders of curves or snapshots), and
    ``extra_settings`` what else a checkpoint must have been made with to be resumed (an experiment's sub-run:
    ``dip.run_settings.SUB_RUN_PREFIX``).
    In ``checkpoint_dir`` (default: ``output_dir``), a checkpoint is written every
    ``checkpoint.every_n_steps`` steps and on SIGINT / SIGTERM (then ``RunInterruptedError`` is
    raised); a checkpoint already there, or ``resume=PATH``, is resumed from. Without either folder
    (the Python API's default), SIGINT / SIGTERM end the fit at the end of its step and the result
    so far is returned, its ``stop_reason`` saying so. The checkpoint is deleted once the outputs are
    written (with ``checkpoint.keep``, replaced by the last step's); when they cannot be, the last one
    written every N steps stays, and ``OutputsNotWrittenError`` says where.
    """
    checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else output_dir
    earlier_wandb_run = open_wandb_run()  # the user's own: the W&B logger logs into it, and leaves it open
    speed: Speed = instantiate_settings(cfg.speed, "speed")
    early_stopping = early_stopping_of(cfg)
    problem, module = prepare(cfg, problem, seeds, generator, speed, early_stopping)
    # Early stopping already chooses the outputs; otherwise a fit that collapses at its end keeps an EMA from before
    guard = CollapseGuard(cfg.backtrack_db, cfg.metrics_every) if not early_stopping and cfg.backtrack_db else None
    chooser = early_stopping or guard
    kept = chooser.kept_copies if chooser else (0, 0)
    device = run_device(cfg.trainer.accelerator, cfg.trainer.devices)
    speed.check_device(device)
    need = check_memory_fits(module, device, cfg.trainer.precision, kept) if cfg.check_memory else None
    resume, resumable, settings = checked_resume(cfg, checkpoint_dir, extra_settings)
    timer, memory = FitTimer(resumed=resume is not None), PeakMemory()
    callbacks = [timer, memory, *callbacks] + ([chooser] if chooser else [])
    # after the others: it saves their state once their step is done; without a folder it only stops
    saver = RunCheckpoint(Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None,
                          cfg.checkpoint.every_n_steps, settings, keep_final=cfg.checkpoint.keep)
    callbacks.append(saver)
    if resume is not None and saver.path is not None and Path(resume) == saver.path:
        saver.saved_step = resumable.step  # a signal before its first step leaves it to be continued from
    try:
        trainer = fit(cfg, module, callbacks, ckpt_path=resume, resumed=resumable if resume else None, speed=speed)
    except torch.OutOfMemoryError:
        if need is None:  # the check was off: estimate now, for the options
            need = checked_estimate(module, cfg.trainer.precision, kept)
        raise out_of_memory(module, need, device, module.global_step, cfg.trainer.precision) from None
    except CheckpointLacksError as lacking:
        raise CheckpointLacksError(f"checkpoint {resume} {lacking}") from None
    except Interrupted as interruption:  # outside the steps, or a second SIGINT: the last checkpoint written stays
        started = module.global_step > resumable.step  # else stopped while the Trainer set the fit up
        raise saver.interruption(interruption.signum, max(module.global_step, resumable.step), cfg.trainer.max_steps,
                                 "stopped before its checkpoint was written" if started else "while the fit started") \
            from None
    # Lightning has put back the handlers it found: a signal now would lose the finished fit
    with held_signals() if not saver.interrupted else nullcontext():
        steps = trainer.global_step
        outputs = module.restart_outputs()  # with early stopping, the module is at the chosen step
        baseline = problem.physics.baseline(module.observation)
        metrics = final_metrics(module, problem, outputs, baseline)
        metrics.update(
            steps=steps,
            seconds=round(timer.seconds, 3),
            warmup_seconds=round(timer.warmup_seconds, 3),
            steps_per_second=round((steps - resumable.step) / max(timer.seconds, 1e-9), 3),
            peak_mem_mb=round(memory.mib, 1),
            peak_mem_source=memory.source,
            memory_estimate_mb=need.mib if need else None,  # beside the peak: the check's calibration
            device=str(module.device),
            width=problem.solution_size[1],  # of the restored image: super-resolution trims to the factor
            height=problem.solution_size[0],
            task=cfg.task.name,
            arch=cfg.arch_name,
            seed=cfg.seed,
            observation_seed=cfg.observation_seed,
            # a later run with these files named finds out whether they still hold what this one read
            input_sha256=file_digests(settings),
            rollbacks=module.rollbacks.tolist() if module.separate_images else int(module.rollbacks.sum()),
            stop_reason=module.stop_reason
            or ("early stopping" if early_stopping and early_stopping.stopped_at else None)
            or (f"interrupted by {signal.Signals(saver.interrupted).name}" if saver.interrupted else None),
        )
        if resume:
            metrics["resumed_from_step"] = resumable.step
            if timer.total_seconds is not None:  # beside this run's seconds, those of the whole fit
                metrics["seconds_total"] = round(timer.total_seconds, 3)
        if early_stopping:
            metrics.update(early_stopping.summary())
        ema_before_collapse = guard.ema_before_collapse(module) if guard else None
        if ema_before_collapse is not None:
            metrics.update(guard.summary(), **before_collapse_metrics(module, ema_before_collapse))
        if problem.alpha is not None:
            metrics["alpha"] = (f"the {problem.source_mode} input's alpha channel was set aside and copied to "
                                "the outputs")
        restarts = module.restarts > 1 and not module.separate_images
        result = Result(
            restored=module.combine(outputs).cpu(),
            restored_ema=module.ema_output().cpu(),
            restarts=outputs.cpu() if restarts else None,
            restarts_ema=module.ema.clamp(0, 1).cpu() if restarts else None,
            ema_before_collapse=None if ema_before_collapse is None else ema_before_collapse.cpu(),
            observation=problem.observation_image,
            ground_truth=problem.ground_truth,
            metrics=metrics,
            output_dir=output_dir,
            baseline=baseline.cpu() if problem.physics.baseline_name is not None else None,
            baseline_name=problem.physics.baseline_name,
            alpha=problem.alpha,
            bits=problem.bits,
        )
        if saver.interrupted and saver.path is not None:
            end_wandb_run(trainer.logger, metrics, earlier_wandb_run)
            raise saver.interruption(saver.interrupted, steps, trainer.max_steps)
        if saver.interrupted:
            stopped_by(saver.interrupted)
        if write is None and output_dir is not None:
            write = functools.partial(write_outputs, output_dir=Path(output_dir))
        try:
            if write is not None:
                write(result)
        except DipError as error:
            saver.discard_final()
            if saver.path is None or not saver.path.is_file():
                raise
            raise OutputsNotWrittenError(f"{error}; the checkpoint {saver.path} is kept: the same command, once "
                                         f"the outputs can be written, resumes from it") from None
        finally:  # after the writing, which may add to the metrics: a benchmark's protocol's PSNRs
            end_wandb_run(trainer.logger, metrics, earlier_wandb_run)
        saver.finish()
        return result


def end_wandb_run(logger, metrics: dict, earlier_wandb_run) -> None:
    """Put the fit's ``metrics`` in its W&B run's summary and finish the run, unless it is the user's own
    (``earlier_wandb_run``), which stays open; nothing for another ``logger``."""
    if isinstance(logger, WandbLogger):
        logger.experiment.summary.update({key: value for key, value in metrics.items() if value is not None})
        if logger.experiment is not earlier_wandb_run:
            logger.experiment.finish()
