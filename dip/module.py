"""The restoration as a LightningModule: fit ``x = f(z)`` to one observation ``y``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torch.func import functional_call

from dip.errors import DipError
from dip.images import centre_crop
from dip.inputs import InputCode, padded_size
from dip.metrics import per_image_psnr, psnr_from_mse, ssim
from dip.nets.packed import unpack_images
from dip.physics import Degradation


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A region where autocast (``trainer.precision=bf16-mixed``) is off on ``x``'s device; nothing to
    enter where it is off already (a float32 step stays free of the switch's host calls)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def share_one_buffer(parameters: list[nn.Parameter]) -> torch.Tensor:
    """Move ``parameters`` into one new flat buffer and return it.

    Each parameter stays the same object (optimizers and hooks keep working) with the same values,
    shape and strides (NCHW or channels_last), but its data becomes a view of the buffer, so that a
    change to the buffer is a change to the weights and the other way round.
    """
    first = parameters[0]
    flat = torch.empty(sum(p.numel() for p in parameters), dtype=first.dtype, device=first.device)
    offset = 0
    for parameter in parameters:
        if not (parameter.is_contiguous() or parameter.is_contiguous(memory_format=torch.channels_last)):
            raise ValueError(f"cannot pack a weight with strides {parameter.stride()} into a flat buffer")
        view = flat.as_strided(parameter.shape, parameter.stride(), offset)
        view.copy_(parameter.detach())
        parameter.data = view
        offset += parameter.numel()
    return flat


def generator_on_one_tensor(generator: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``call(weights, z)``: ``generator(z)`` with its trainable weights taken from views of the flat
    ``weights``, laid out as ``share_one_buffer`` lays them out (NCHW, or channels_last as N H W C)."""
    layout = [(name, p.shape, p.dim() == 4 and not p.is_contiguous())
              for name, p in generator.named_parameters() if p.requires_grad]
    sizes = [math.prod(shape) for _, shape, _ in layout]

    def call(weights: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        views = {}
        for (name, shape, channels_last), chunk in zip(layout, weights.split(sizes)):
            if channels_last:  # stored in memory as N H W C
                n, c, h, w = shape
                views[name] = chunk.view(n, h, w, c).permute(0, 3, 1, 2)
            else:
                views[name] = chunk.view(shape)
        return functional_call(generator, views, (z,))

    return call


DIVERGED_GRADIENT_RULES = ("keep", "drop", "damp")
SECOND_MOMENT_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam)


def check_data_terms(physics, data_terms: torch.Tensor, x: torch.Tensor) -> None:
    """``DipError`` unless ``physics.data_term(x, y)`` gave one value per image of ``x`` (a scalar would fit, then
    fail when the outputs are scored) that carries the gradient back to ``x`` (an ``A`` computed in numpy, or
    detached, leaves nothing to fit). Shapes and flags only: no sync with the device."""
    if tuple(data_terms.shape) != (x.shape[0],):
        got = "a scalar" if data_terms.dim() == 0 else " x ".join(map(str, data_terms.shape))
        raise DipError(f"physics {class_path(physics)}: data_term(x, y) gives {got}, not one value per image of x "
                       f"({x.shape[0]}): reduce over all but the first dimension (.flatten(1).mean(1))")
    if x.requires_grad and not data_terms.requires_grad:
        raise DipError(f"physics {class_path(physics)}: data_term(x, y) carries no gradient back to x: A(x) must be "
                       "computed with torch operations on x (not numpy, not detached)")


def class_path(instance: object) -> str:
    """The dotted path of ``instance``'s class, as a config's ``_target_`` names it."""
    return f"{type(instance).__module__}.{type(instance).__qualname__}"


class DeepImagePrior(pl.LightningModule):
    """Minimises ``E(f(z + reg_noise_std * n); y) [+ R(f(...))]`` over the generator's weights (and ``z``).

    ``regularizer`` ``R`` is an explicit prior added to the data term (the TV prior the paper compares
    against, with the generator replaced by the pixels themselves); None for Deep Image Prior.
    Only parameters that require gradients are optimised (a feature extractor in ``physics`` is frozen).

    The generator runs on ``z`` padded to a size its depth accepts and its output is centre-cropped
    back to the image. Keeps an exponential moving average of the outputs
    (``ema = w ema + (1 - w) x``). Backtracking (the authors' rule, ``backtrack_against="last"``):
    when the data-term PSNR drops by more than ``backtrack_db`` from the last good step, or the loss
    is not finite, the weights roll back to the last good ones, and that step's output is left out
    of the EMA. ``backtrack_against="best"`` measures the drop from the best fit so far and keeps the
    weights of that best step as the good ones: it also stops a fit that slides down a little at each
    step (which every step's comparison with the one before lets through), at the cost of the steps
    since the best one. After
    ``max_rollbacks`` rollbacks without two good steps in a row (an update that keeps the fit) the run
    stops with the last good weights (``stop_reason`` says so). ``diverged_gradient="keep"`` is the
    authors' rule: Adam takes the gradient of a diverged step (that of the weights about to be rolled
    back) before the rollback; ``"drop"`` keeps it out of the optimizer, whose moments stay those of the
    good steps (with packed restarts a step is dropped for all of them when one diverged); ``"damp"``
    drops it too, but first raises Adam's second moment to its square, ``v = max(v, g^2)`` elementwise,
    so that the next updates are shorter where it was large, without taking its direction. Every check
    happens on the device, so no step waits for the host; metrics are logged (and the rollback count read) every
    ``metrics_every`` steps. During a fit the trainable weights are views of one flat buffer
    (``flat_weights``), so that remembering or restoring all of them is one ``where`` each: one
    kernel and one pass over the weights, not a few per tensor.

    With ``one_weight_tensor`` (a function that wraps a callable, e.g. ``Speed.compiled``), autograd and
    the optimizer see the generator's weights as one leaf tensor over ``flat_weights`` during a fit:
    the generator runs through ``torch.func.functional_call`` on views of it (the wrapped call), so a
    step accumulates one gradient, not one per weight.

    ``restarts = N > 1`` fits N independent restorations of the one observation at once, in a
    generator that packs N copies (``Skip(copies=N)``, ``dip.nets.packed``): each restart has its
    own code, weights, EMA, data term and backtracking, the loss is the sum of their data terms (so
    each copy gets its own gradient), and the restoration is the average of their outputs (the
    paper's averaging of runs, every kernel launch shared). ``restored`` and ``ema_output`` give
    that average; ``restart_outputs`` the restarts' own outputs. With an ``observation`` of N > 1
    images (``dip.problem.stack_problems``), copy ``k`` restores image ``k`` instead (``physics``
    maps each image with its own mask): nothing is averaged, and ``restored`` and ``ema_output``
    give the N restorations. ``z`` gives the packed code (e.g. each copy's as a fit of its own would
    draw it); by default each copy draws its own from ``code``.
    """

    def __init__(
        self,
        generator: nn.Module,
        physics: Degradation,
        observation: torch.Tensor,
        code: InputCode,
        optimizer: Callable[..., torch.optim.Optimizer],
        output_size: tuple[int, int],
        ground_truth: torch.Tensor | None = None,
        ema_weight: float = 0.99,
        backtrack_db: float | None = 5.0,
        backtrack_against: str = "last",
        metrics_every: int = 50,
        channels: int | None = None,
        regularizer: nn.Module | None = None,
        max_rollbacks: int | None = 20,
        diverged_gradient: str = "keep",
        restarts: int = 1,
        one_weight_tensor: Callable[[Callable], Callable] | None = None,
        z: torch.Tensor | None = None,
    ):
        super().__init__()
        self.generator = generator
        self.physics = physics
        self.regularizer = regularizer
        self.code = code
        self.optimizer_factory = optimizer
        self.output_size = tuple(output_size)
        if not 0 <= ema_weight < 1:  # 1 would never update the average
            raise DipError(f"ema_weight must be in [0, 1), got {ema_weight}")
        self.ema_weight = ema_weight
        self.backtrack_db = backtrack_db
        if backtrack_against not in ("last", "best"):
            raise DipError(f"backtrack_against must be 'last' or 'best', got '{backtrack_against}'")
        self.backtrack_against = backtrack_against
        self.metrics_every = max(1, int(metrics_every))
        self.max_rollbacks = max_rollbacks
        if diverged_gradient not in DIVERGED_GRADIENT_RULES:
            raise DipError(f"diverged_gradient must be one of {', '.join(DIVERGED_GRADIENT_RULES)}, "
                           f"got '{diverged_gradient}'")
        if diverged_gradient == "damp":  # before a fit has written anything: the kind the factory builds
            kind = type(optimizer([torch.zeros(1, requires_grad=True)]))
            if not issubclass(kind, SECOND_MOMENT_OPTIMIZERS):
                raise DipError(f"diverged_gradient=damp raises Adam's second moment, which {kind.__name__} does "
                               f"not have: use {', '.join(o.__name__ for o in SECOND_MOMENT_OPTIMIZERS)}, or "
                               "diverged_gradient=drop")
        self.diverged_gradient = diverged_gradient
        self.restarts = restarts
        self.separate_images = observation.shape[0] > 1
        if self.separate_images and observation.shape[0] != restarts:
            raise DipError(f"{observation.shape[0]} observations need as many copies of the generator, "
                           f"not {restarts}")
        self.stop_reason: str | None = None

        height, width = padded_size(*self.output_size, getattr(generator, "size_multiple", 1))
        if z is None:
            z = torch.cat([code.make(height, width) for _ in range(restarts)], dim=1)  # packed: copies along channels
        if code.optimize:
            self.z = nn.Parameter(z)
        else:
            self.register_buffer("z", z)
        self.register_buffer("observation", observation)
        self.register_buffer("ground_truth", ground_truth)
        channels = observation.shape[1] if channels is None else channels  # features are not an image
        self.register_buffer("ema", torch.zeros(restarts, channels, *self.output_size))
        # one per restart; "last good" is the best so far with backtrack_against="best"
        self.register_buffer("last_good_psnr", torch.full((restarts,), -math.inf))
        self.register_buffer("last_good_step", torch.full((restarts,), -1))
        self.register_buffer("diverged", torch.zeros(restarts, dtype=torch.bool))
        self.register_buffer("failed_in_a_row", torch.zeros(restarts, dtype=torch.long))
        # not in the state dict (checkpoints from before it load as they are): the checkpoint hooks keep it
        self.register_buffer("rollbacks", torch.zeros(restarts, dtype=torch.long), persistent=False)
        self.good_weights: torch.Tensor | None = None  # flat; made at the start of the fit
        self.restored_good_weights: torch.Tensor | None = None
        # one_weight_tensor: the call of the generator on the one tensor, and that tensor during a fit
        # (a leaf over flat_weights, not registered: the state dict keeps the generator's own weights)
        self.weights_call = one_weight_tensor(generator_on_one_tensor(generator)) if one_weight_tensor else None
        self.one_weight: nn.Parameter | None = None
        generator_weights = sum(p.requires_grad for p in generator.parameters())
        if one_weight_tensor and len(self.trainable_parameters()) != generator_weights:
            raise DipError("speed.one_weight_tensor=true trains the generator's weights alone, but this fit trains "
                           "other tensors too (input.optimize=true trains z): turn one of them off")

    def forward(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """The restarts' outputs, ``restarts x C x H x W``."""
        z = self.z if z is None else z
        packed = self.generator(z) if self.one_weight is None else self.weights_call(self.one_weight, z)
        return self.images_of(packed)

    def images_of(self, packed: torch.Tensor) -> torch.Tensor:
        """The generator's (packed) output as the restarts' images, ``restarts x C x H x W``."""
        return centre_crop(unpack_images(packed, self.restarts), *self.output_size)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        if self.weights_call is None:
            return self.optimizer_factory(self.trainable_parameters())
        # the weights are on their device by now; the optimizer needs the one tensor they become
        self.flat_weights = share_one_buffer(self.trainable_parameters())
        # the same memory; set around nn.Module's __setattr__, which would register it
        object.__setattr__(self, "one_weight", nn.Parameter(self.flat_weights))
        return self.optimizer_factory([self.one_weight])

    def on_fit_start(self) -> None:
        """Once the weights are on their device: gather them into one flat buffer (unless
        ``configure_optimizers`` did) and remember them.

        (Before any callback's ``on_train_start``, so that callbacks may use ``flat_weights``.)
        """
        weights = self.trainable_parameters()
        if self.one_weight is None:
            self.flat_weights = share_one_buffer(weights)
        # Which restart each element of flat_weights belongs to: every weight of a packed generator
        # is copy-major (rows [k n, (k + 1) n) are copy k's), so it splits into equal runs per restart.
        runs = [w.numel() // self.restarts for w in weights for _ in range(self.restarts)]
        self.restart_runs = torch.tensor(runs, device=self.flat_weights.device)
        restored, self.restored_good_weights = self.restored_good_weights, None
        if restored is not None:
            self.good_weights = restored.to(self.flat_weights.device)
        else:
            self.good_weights = self.flat_weights.clone()

    def on_fit_end(self) -> None:
        self.one_weight = None  # the generator's own weights hold the final values: back to calling it

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["good_weights"] = self.good_weights
        checkpoint["rollbacks"] = self.rollbacks

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.restored_good_weights = checkpoint.get("good_weights")
        if "rollbacks" in checkpoint:
            self.rollbacks.copy_(checkpoint["rollbacks"])

    def perturbed_input(self) -> torch.Tensor:
        """``z``, plus this step's fresh noise of std ``reg_noise_std`` (the paper's regularising noise)."""
        if self.code.reg_noise_std > 0:
            return self.z + self.code.reg_noise_std * torch.randn_like(self.z)
        return self.z

    def objective(self, x: torch.Tensor, data_terms: torch.Tensor) -> torch.Tensor:
        """What the optimiser minimises: the restarts' data terms (they share no weight, so each gets
        the gradient of its own term), plus the explicit prior's term if there is one."""
        loss = data_terms.sum()
        return loss if self.regularizer is None else loss + self.regularizer(x)

    def training_step(self, batch, batch_idx):
        x = self(self.perturbed_input())
        # Mixed precision is for the generator: the degradation (its kernels and the data term) stays
        # the float32 operator it was defined as, or a bf16 step would fit another downsampler.
        with full_precision(x):
            data_terms = self.physics.data_term(x.float(), self.observation)  # one per restart
        check_data_terms(self.physics, data_terms, x)
        # Every operation here is a host dispatch per step, and a GPU step at 512 px is bound by the
        # host: one detach of each.
        output, terms = x.detach(), data_terms.detach()
        with torch.no_grad():
            if self.backtrack_db is not None:
                self._remember_or_flag_divergence(terms)
            self._update_ema(output)
        self.latest_output = output
        step = self.global_step + 1
        if step % self.metrics_every == 0 or step == self.trainer.max_steps:
            self._log_quality(self.quality(output))
        return self.objective(x, data_terms)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.backtrack_db is None or self.diverged_gradient == "keep":
            return
        diverged = self.diverged.any()
        if self.diverged_gradient == "damp":
            self._damp_second_moment_if_diverged(optimizer, diverged)
        self._drop_gradient_if_diverged(optimizer, diverged)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.backtrack_db is not None:  # right after the update: every later hook sees the final state
            self._roll_back_if_diverged()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.global_step
        if self.backtrack_db is None or self.max_rollbacks is None or step % self.metrics_every:
            return
        failed = int(self.failed_in_a_row.max())
        if failed >= self.max_rollbacks:
            with torch.no_grad():
                self.flat_weights.copy_(self.good_weights)
            good = "best" if self.backtrack_against == "best" else "last good"
            self.stop_reason = (
                f"diverged: {failed} rollbacks without recovering (max_rollbacks={self.max_rollbacks}) by "
                f"step {step}; the outputs are from the {good} weights (those of step "
                f"{int(self.last_good_step.min()) + 1})"
            )
            self.trainer.should_stop = True

    def quality(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Device-side metrics of the restarts' outputs ``x``: those of their average (the restoration,
        as ``metrics.json`` scores it), and with several restarts the mean of their own PSNRs. Several
        images packed: the mean of each image's metrics. In float32 under mixed precision too: SSIM's
        variances cancel to nonsense in bf16 (0.44 for 0.70)."""
        with full_precision(x):
            return self._quality(x.float())

    def _quality(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        restored, ema = self.combine(x.clamp(0, 1)), self.ema_output()
        # the restoration's own fit, not the restarts' data terms: their average fits the observation otherwise
        metrics = {"psnr_fit": psnr_from_mse(self.physics.data_term(restored, self.observation)).mean(),
                   "psnr_fit_ema": psnr_from_mse(self.physics.data_term(ema, self.observation)).mean()}
        if self.ground_truth is not None:
            metrics["psnr"] = per_image_psnr(restored, self.ground_truth).mean()
            metrics["psnr_ema"] = per_image_psnr(ema, self.ground_truth).mean()
            metrics["ssim"] = ssim(restored, self.ground_truth)
            metrics["ssim_ema"] = ssim(ema, self.ground_truth)
            if self.restarts > 1 and not self.separate_images:
                metrics["psnr_restart_mean"] = per_image_psnr(x, self.ground_truth).mean()
        return metrics

    def _log_quality(self, metrics: dict[str, torch.Tensor]) -> None:
        """For the progress bar (read when it refreshes) and, as numbers (the one host sync of every N
        steps), for the loggers.

        Going around ``self.log`` for the loggers puts the last step on the curves even when it is
        not a multiple of the trainer's ``log_every_n_steps``; ``prog_bar=True`` would copy the
        values to the host after every step.
        """
        self.log_dict({k: v for k, v in metrics.items() if k in ("psnr", "psnr_ema", "psnr_fit")}, logger=False)
        if self.loggers:
            values = {name: value.item() for name, value in metrics.items()}
            for logger in self.loggers:
                logger.log_metrics(values, step=self.global_step)

    @torch.no_grad()
    def restart_outputs(self) -> torch.Tensor:
        """``f(z)`` of every restart (``restarts x C x H x W``), final weights, unperturbed code."""
        return self().clamp(0, 1)

    def restored(self) -> torch.Tensor:
        """The restoration, ``1 x C x H x W``: ``f(z)`` (averaged over the restarts); ``N x ...`` for N images."""
        return self.combine(self.restart_outputs())

    def ema_output(self) -> torch.Tensor:
        """The EMA of the outputs (averaged over the restarts), ``1 x C x H x W``; ``N x ...`` for N images."""
        return self.combine(self.ema.clamp(0, 1))

    def combine(self, x: torch.Tensor) -> torch.Tensor:
        """The restorations that the copies' outputs ``x`` make: their average, or each image's own."""
        return x if self.separate_images else x.mean(0, keepdim=True)

    def _update_ema(self, x: torch.Tensor) -> None:
        if x.dtype != self.ema.dtype:  # under mixed precision the output is bf16/fp16, the average float32
            x = x.to(self.ema.dtype)
        if self.global_step == 0:
            self.ema.copy_(x)
        else:
            blended = torch.lerp(x, self.ema, self.ema_weight)
            kept = torch.isfinite(blended) & ~self.diverged.view(-1, 1, 1, 1)
            torch.where(kept, blended, self.ema, out=self.ema)

    def _remember_or_flag_divergence(self, loss: torch.Tensor) -> None:
        fit = psnr_from_mse(loss)
        diverged = ~torch.isfinite(fit) | (self.last_good_psnr - fit > self.backtrack_db)
        # A good step right after a rollback (self.diverged still set) only re-evaluates the old
        # weights: not yet a recovery, so the count of failures in a row is kept, not reset.
        failed = self.failed_in_a_row
        torch.where(diverged, failed + 1, failed * self.diverged, out=failed)
        self.rollbacks += diverged
        self.diverged.copy_(diverged)
        # spread over the weights once a step: the rollback after the update uses the same flags
        self.diverged_weights = self.per_weight(diverged)
        if self.backtrack_against == "best":
            remembered = fit >= self.last_good_psnr  # a new best (NaN compares False)
            torch.where(self.per_weight(remembered), self.flat_weights, self.good_weights, out=self.good_weights)
        else:
            remembered = ~diverged
            torch.where(self.diverged_weights, self.good_weights, self.flat_weights, out=self.good_weights)
        self.last_good_psnr = torch.where(remembered, fit, self.last_good_psnr)
        self.last_good_step.copy_(torch.where(remembered, self.global_step, self.last_good_step))

    def _drop_gradient_if_diverged(self, optimizer: torch.optim.Optimizer, diverged: torch.Tensor) -> None:
        """Keep a diverged step's gradient out of the optimizer, without asking the host: a fused
        optimizer skips the step on the device (``found_inf``, the flag AMP's grad scaler sets, which
        leaves the weights, moments and step count as they were); any other gets a zero gradient (its
        moments decay one step). Kept in, a kick's gradient made the updates from the restored weights
        diverge again and again; left out, the moments retake the same update, which at a late collapse
        diverged again until the run stopped (results/cpu-20261204-rollback-kick, -rollbacks-full-64px)."""
        if optimizer.defaults.get("fused") and getattr(self.trainer.precision_plugin, "scaler", None) is None:
            optimizer.found_inf = diverged.float()
            return
        for weight in self.trainable_parameters() if self.one_weight is None else [self.one_weight]:
            if weight.grad is not None:
                weight.grad.masked_fill_(diverged, 0)

    def _damp_second_moment_if_diverged(self, optimizer: torch.optim.Optimizer, diverged: torch.Tensor) -> None:
        """``v = max(v, g^2)`` for Adam's second moment ``v`` when the step diverged with a finite
        gradient, on the device. Late in a fit ``v`` is tiny, and once the fit slides a normal gradient
        makes a huge normalised step. Dropped, or added to ``v`` as Adam adds it (``(1 - beta2) g^2``),
        the diverged gradient left the next update as it was, which diverged again until the run stopped
        (results/cpu-20261204-rollbacks-full-64px, cpu-20261204-damp)."""
        weights = [w for group in optimizer.param_groups for w in group["params"]
                   if w.grad is not None and "exp_avg_sq" in optimizer.state.get(w, {})]
        if not weights:  # the first step: the optimizer has no moments yet
            return
        moments = [optimizer.state[w]["exp_avg_sq"] for w in weights]
        gradients = [w.grad for w in weights]
        squares = torch._foreach_mul(gradients, gradients)
        # a NaN loss's gradient carries no size to learn from, and would make v NaN for good
        finite = torch.stack(torch._foreach_max(squares)).isfinite().all()
        raised = torch._foreach_maximum(moments, squares)
        damp = diverged & finite
        for moment, higher in zip(moments, raised):
            torch.where(damp, higher, moment, out=moment)

    def _roll_back_if_diverged(self) -> None:
        with torch.no_grad():
            torch.where(self.diverged_weights, self.good_weights, self.flat_weights, out=self.flat_weights)

    def per_weight(self, per_restart: torch.Tensor) -> torch.Tensor:
        """A per-restart flag spread over ``flat_weights`` (one restart: it broadcasts as it is)."""
        if self.restarts == 1:
            return per_restart
        flags = per_restart.repeat(len(self.restart_runs) // self.restarts)
        return flags.repeat_interleave(self.restart_runs, output_size=self.flat_weights.numel())
