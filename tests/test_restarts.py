"""restarts=N: N independent restorations of one observation packed into one fit, outputs averaged."""

from __future__ import annotations

import math

import pytest
import torch

from dip.config import compose_config
from dip.errors import DipError
from dip.images import load_image
from dip.metrics import per_image_psnr, psnr
from dip.pipeline import final_metrics, prepare, run

SMALL = ["task=denoising", "logger=none", "data.size=32", "arch.channels_down=[8,8,8,8,8]",
         "arch.channels_up=[8,8,8,8,8]", "checkpoint.every_n_steps=0"]


def small(*overrides):
    return compose_config([*SMALL, *overrides])


def test_each_restart_has_its_own_code_and_output():
    _, module = prepare(small("restarts=3"))
    assert module.z.shape[1] == 3 * module.code.channels
    outputs = module.restart_outputs()
    assert outputs.shape == (3, 3, 32, 32)
    assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[1], outputs[2])
    torch.testing.assert_close(module.restored(), outputs.mean(0, keepdim=True))
    assert module.physics.data_term(outputs, module.observation).shape == (3,)


def test_the_curves_fit_is_the_average_s_as_metrics_json_scores_it():
    """The curve's psnr_fit pooled the restarts' own data terms, so its last point was not the figure of the
    restoration that metrics.json reports; the EMA's was the average's already."""
    problem, module = prepare(small("restarts=3"))
    outputs = module.restart_outputs()
    curve, final = module.quality(outputs), final_metrics(module, problem, outputs, None)
    assert float(curve["psnr_fit"]) == pytest.approx(final["psnr_fit"], abs=1e-3)
    pooled = float(-10 * torch.log10(problem.physics.data_term(outputs, module.observation).mean()))
    assert abs(pooled - final["psnr_fit"]) > 0.1  # the figure it was


@pytest.mark.parametrize("against", ["last", "best"])
def test_backtracking_rolls_back_only_the_restart_that_diverged(against):
    _, module = prepare(small("restarts=2", f"backtrack_against={against}"))
    module.on_fit_start()
    weights = module.trainable_parameters()

    def per_restart(restart):  # every weight of the packed generator is copy-major
        return [w.detach().view(2, -1)[restart].clone() for w in weights]

    def step(losses, change):
        module._remember_or_flag_divergence(torch.tensor(losses))
        with torch.no_grad():
            for w in weights:
                w.copy_(change(w))
        module._roll_back_if_diverged()

    # the losses passed at a step are those of the weights before the step's change
    start = [per_restart(0), per_restart(1)]
    step([0.01, 0.01], lambda w: w + 1)  # both good: both keep the change
    before = per_restart(0)
    step([0.01, math.nan], lambda w: w * 2)  # restart 1's weights (start + 1) diverged: back to start
    assert all(torch.equal(after, 2 * kept) for after, kept in zip(per_restart(0), before))
    assert all(torch.equal(after, kept) for after, kept in zip(per_restart(1), start[1]))
    assert module.diverged.tolist() == [False, True] and module.failed_in_a_row.tolist() == [0, 1]


def test_against_the_best_fit_a_sliding_restart_rolls_back_to_its_own_best_weights():
    _, module = prepare(small("restarts=2", "backtrack_against=best"))
    module.on_fit_start()
    weights = module.trainable_parameters()

    def per_restart(restart):
        return [w.detach().view(2, -1)[restart].clone() for w in weights]

    best_of_0 = None
    for step, fit_of_0 in enumerate((20, 22, 20, 18, 16.5)):  # restart 1 holds 20 dB throughout
        if step == 1:
            best_of_0 = per_restart(0)
        module._remember_or_flag_divergence(torch.tensor([10 ** (-fit_of_0 / 10), 0.01]))
        with torch.no_grad():
            for w in weights:
                w.add_(1)
        module._roll_back_if_diverged()
    assert all(torch.equal(after, best) for after, best in zip(per_restart(0), best_of_0))
    assert module.diverged.tolist() == [True, False]
    assert float(module.last_good_psnr[1]) == pytest.approx(20, abs=1e-4)


def test_a_packed_fit_reports_the_average_and_each_restart(tmp_path):
    result = run(small("restarts=2", "trainer.max_steps=4", "metrics_every=2"), tmp_path)
    metrics = result.metrics
    assert len(metrics["psnr_restarts"]) == 2 and len(metrics["psnr_ema_restarts"]) == 2
    assert metrics["psnr_restarts"][0] != metrics["psnr_restarts"][1]
    assert result.restored.shape == (1, 3, 32, 32)
    assert metrics["psnr"] == pytest.approx(float(psnr(result.restored, result.ground_truth)), abs=1e-3)
    assert float(per_image_psnr(result.restored_ema, result.ground_truth)[0]) == pytest.approx(
        metrics["psnr_ema"], abs=1e-3)
    written = [load_image(tmp_path / f"restored_restart{k}.png") for k in (0, 1)]
    assert torch.allclose(load_image(tmp_path / "restored.png"), (written[0] + written[1]) / 2, atol=1.5 / 255)


@pytest.mark.parametrize("overrides, message", [
    (["restarts=2", "arch=unet"], "cannot do: use a skip architecture"),
    (["restarts=2", "early_stop=wmv"], "does not combine with early stopping"),
    # a callback of one's own that says nothing of copies is taken not to handle them
    (["restarts=2", "early_stop=wmv", "early_stop._target_=dip.callbacks.CollapseGuard", "~early_stop.window",
      "~early_stop.patience", "~early_stop.check_every"], "does not combine with early stopping by CollapseGuard"),
    (["restarts=0"], "restarts must be a whole number >= 1, got 0"),
])
def test_impossible_restarts_are_one_clear_line(overrides, message):
    with pytest.raises(DipError, match=message):
        prepare(compose_config(["task=denoising", "logger=none", "data.size=32", *overrides]))
