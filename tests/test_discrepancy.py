"""Early stopping by the discrepancy principle: the noise's energy, each copy's step, the kept outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn

from dip.callbacks import DiscrepancyStopping
from dip.config import compose_config
from dip.errors import DipError
from dip.images import to_pil
from dip.outputs import describe
from dip.physics import GaussianNoise, LanczosDownsample
from dip.pipeline import run
from tests.conftest import exit_status, fit_scripted, make_png, run_cli


def test_the_clipped_noise_energy_is_the_monte_carlo_one():
    # dark, mid-grey and bright pixels: clipping cuts half the noise at 0 and 1, none at 0.5
    x = torch.linspace(0, 1, 32 * 32).view(1, 1, 32, 32).expand(1, 3, 32, 32).contiguous()
    noise = GaussianNoise(sigma=25)
    draws = torch.Generator().manual_seed(0)
    sampled = torch.stack([(noise.observe(x, draws) - x).square().mean() for _ in range(200)]).mean()
    expected = float(noise.expected_residual(x)[0])
    assert expected == pytest.approx(float(sampled), rel=0.01)
    assert expected < (25 / 255) ** 2  # less than the unclipped noise's
    # a mid-grey image loses almost nothing to clipping (the bounds are 5 sigma away)
    assert float(noise.expected_residual(torch.full((1, 3, 4, 4), 0.5))[0]) == pytest.approx((25 / 255) ** 2, rel=1e-5)


def test_unclipped_noise_leaves_sigma_squared_and_other_degradations_have_no_noise_model():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(GaussianNoise(sigma=25, clip=False).expected_residual(x), torch.full((2,), (25 / 255) ** 2))
    assert torch.equal(GaussianNoise(sigma=0).expected_residual(x), torch.zeros(2))
    assert LanczosDownsample(factor=2).expected_residual(x) is None


SIGMA = 5.0  # the scripted fits below: s = 5/255, unclipped, so the noise's energy is s^2 exactly
S = SIGMA / 255
REACHED = (20, 40)  # copy k's residual falls to s^2 at these steps


class ScriptedDenoiser(pl.LightningModule):
    """Two packed copies whose EMA after step ``t`` is ``y + d_k(t)``, ``d_k(t) = 0.999 s (2 - t / T_k)``:
    the residual ``d_k(t)^2`` falls to the noise's ``s^2`` at ``t = T_k`` (``REACHED``; just below it,
    not at a rounding's mercy). One weight per copy."""

    def __init__(self):
        super().__init__()
        self.physics = GaussianNoise(sigma=SIGMA, clip=False)
        self.weight = nn.Parameter(torch.zeros(2))
        self.register_buffer("observation", torch.full((1, 3, 8, 8), 0.5))
        self.register_buffer("ground_truth", torch.full((1, 3, 8, 8), 0.5))
        self.register_buffer("ema", torch.zeros(2, 3, 8, 8))
        self.restarts, self.separate_images = 2, True
        self.emas: dict[int, torch.Tensor] = {}
        self.weights: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        step = self.global_step + 1
        reached = torch.tensor(REACHED, dtype=torch.float32).view(2, 1, 1, 1)
        self.ema.copy_(self.observation + 0.999 * S * (2 - step / reached))
        self.emas[step], self.weights[step] = self.ema.clone(), self.weight.detach().clone()
        return (self.weight - 1).square().sum()

    def per_weight(self, per_copy: torch.Tensor) -> torch.Tensor:
        return per_copy

    def restart_outputs(self):
        return self.ema.clamp(0, 1)

    def combine(self, x):
        return x

    def on_fit_start(self):
        self.flat_weights = self.weight.data

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(callback: DiscrepancyStopping, steps: int = 60) -> tuple[pl.Trainer, ScriptedDenoiser]:
    module = ScriptedDenoiser()
    return fit_scripted(module, callback, steps), module


def assert_kept(module: ScriptedDenoiser, steps: tuple[int, int]) -> None:
    """Each copy ends in its state of its own step: the EMA of that step, and the weights that made it."""
    for copy, step in enumerate(steps):
        assert torch.equal(module.ema[copy], module.emas[step][copy])
        weights = (module.weight.detach(), module.weights[step], module.weights[step - 1])
        kept, made, before = (float(weight[copy]) for weight in weights)
        assert kept == made != before


def test_each_copy_keeps_its_first_step_at_the_noise_level_and_the_run_stops_when_all_have_one():
    callback = DiscrepancyStopping(delay=0, check_every=4)
    trainer, module = fit(callback, steps=100)
    assert callback.summary()["early_stop_step"] == list(REACHED)
    assert callback.stopped_at == trainer.global_step == REACHED[1]
    assert_kept(module, REACHED)


def test_a_stricter_factor_waits_for_a_smaller_residual_checked_every_few_steps():
    callback = DiscrepancyStopping(factor=0.25, delay=0, check_every=4)  # residual <= s^2 / 4: t >= 1.4995 T_k
    fit(callback, steps=100)
    assert callback.summary()["early_stop_step"] == [32, 60]  # 30 and 60, read at multiples of 4


def test_without_stopping_the_run_goes_on_and_reports_the_last_step_too():
    callback = DiscrepancyStopping(delay=0, check_every=4, stop=False)
    trainer, module = fit(callback, steps=48)
    last_ema = module.emas[48].clone()
    summary = callback.summary()
    assert trainer.global_step == 48 and summary["early_stopped_at"] is None
    assert summary["early_stop_step"] == list(REACHED)
    assert summary["psnr_ema_final"] == pytest.approx([20 * np.log10(1 / abs(float(d))) for d in
                                                       (last_ema - 0.5)[:, 0, 0, 0]], abs=1e-3)
    assert_kept(module, REACHED)


def test_a_copy_that_never_reaches_the_noise_level_keeps_its_last_step():
    callback = DiscrepancyStopping(delay=0, check_every=4)
    trainer, module = fit(callback, steps=30)
    assert trainer.global_step == 30 and callback.summary()["early_stop_step"] == [REACHED[0], None]
    assert torch.equal(module.ema[1], module.emas[30][1])
    assert torch.equal(module.ema[0], module.emas[REACHED[0]][0])


def test_the_ema_kept_is_that_of_delay_steps_after_the_noise_level():
    callback = DiscrepancyStopping(delay=10, check_every=4)
    trainer, module = fit(callback, steps=100)
    summary = callback.summary()
    assert summary["noise_level_step"] == list(REACHED)
    assert summary["early_stop_step"] == [32, 52]  # the first checks at or after 30 and 50
    assert trainer.global_step == 52
    assert_kept(module, (32, 52))


def test_a_copy_whose_delay_runs_past_the_end_keeps_the_last_step():
    callback = DiscrepancyStopping(delay=10, check_every=4)
    trainer, module = fit(callback, steps=44)
    assert callback.summary()["noise_level_step"] == list(REACHED)
    assert callback.summary()["early_stop_step"] == [32, None] and trainer.global_step == 44
    assert torch.equal(module.ema[1], module.emas[44][1])


def test_bad_settings_are_one_clear_line():
    with pytest.raises(ValueError, match="factor > 0"):
        DiscrepancyStopping(factor=0)
    with pytest.raises(ValueError, match="delay >= 0"):
        DiscrepancyStopping(delay=-1)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_png(tmp_path_factory.mktemp("image") / "in.png", 24, 24)


def restore(image, out, steps: int, *extra: str):
    cfg = compose_config([f"data.path={image}", f"trainer.max_steps={steps}", "logger=none", "arch=skip_depth2",
                          "optim.lr=0.05", "early_stop=discrepancy", *extra], output_dir=out)
    return run(cfg, out)


@pytest.mark.slow
def test_packed_restarts_stop_each_at_the_noise_level(image, tmp_path):
    out = tmp_path / "out"
    result = restore(image, out, 400, "restarts=2", "early_stop.check_every=10")
    metrics = json.loads((out / "metrics.json").read_text())
    steps = metrics["early_stop_step"]
    # by default each restart's EMA is kept the EMA's mean age (99 steps at 0.99) after its noise level
    assert steps == [-(-(reached + 99) // 10) * 10 for reached in metrics["noise_level_step"]]
    assert metrics["steps"] == metrics["early_stopped_at"] == max(steps) < 400
    assert metrics["stop_reason"] == "early stopping"
    assert f"early stopping chose steps {steps[0]}, {steps[1]} (one per restart)" in describe(result)
    with Image.open(out / "restored.png") as written:
        assert np.array_equal(np.asarray(written), np.asarray(to_pil(result.restored[0])))
    # a restart's kept EMA is its EMA at its own step: the same seed stopped there gives it
    first = steps.index(min(steps))
    shorter = restore(image, tmp_path / "shorter", min(steps), "restarts=2", "early_stop=none")
    assert metrics["psnr_ema_restarts"][first] == pytest.approx(shorter.metrics["psnr_ema_restarts"][first], abs=1e-4)
    # the last step's figures are those of the same fit without the principle
    plain = restore(image, tmp_path / "plain", max(steps), "restarts=2", "early_stop=none").metrics
    finals = {"psnr_final": "psnr", "psnr_ema_final": "psnr_ema", "psnr_final_restarts": "psnr_restarts",
              "psnr_ema_final_restarts": "psnr_ema_restarts"}
    for final, key in finals.items():
        assert metrics[final] == pytest.approx(plain[key], abs=1e-4), final


def test_restarts_that_never_reach_the_noise_level_report_no_chosen_step(image, tmp_path):
    result = restore(image, tmp_path / "out", 4, "restarts=2")
    assert result.metrics["early_stop_step"] == [None, None]
    assert "early stopping chose" not in describe(result)


def test_a_resumed_run_keeps_the_noise_level_reached_before_the_interruption(image, tmp_path):
    # a huge factor: both restarts reach the noise level at the first check, step 2, before the
    # interruption, and keep their EMA of step 6 after it
    settings = ["restarts=2", "early_stop.check_every=2", "early_stop.factor=1e6", "early_stop.delay=4",
                "early_stop.stop=false"]
    reference = restore(image, tmp_path / "reference", 8, *settings)
    out = tmp_path / "run"
    restore(image, out, 4, *settings, "checkpoint.keep=true", "checkpoint.every_n_steps=2")
    resumed = restore(image, out, 8, *settings)
    assert resumed.metrics["resumed_from_step"] == 4 and resumed.metrics["early_stop_step"] == [6, 6]
    assert torch.allclose(resumed.restored_ema, reference.restored_ema, atol=1e-6)
    assert torch.allclose(resumed.restored, reference.restored, atol=1e-6)


def test_a_task_without_a_noise_model_is_refused_in_one_line_before_anything_is_written(image, tmp_path):
    out = tmp_path / "sr"
    cfg = compose_config([f"data.path={image}", "trainer.max_steps=2", "logger=csv", "arch=skip_depth2",
                          "early_stop=discrepancy", "task=sr_x4", "data.size=32"], output_dir=out)
    with pytest.raises(DipError, match="needs a known noise level, which LanczosDownsample does not have"):
        run(cfg, out)
    assert not out.exists()  # the logger did not start


def test_one_weight_tensor_keeps_the_same_outputs(image, tmp_path):
    """speed=fast holds the weights as one tensor: the kept weights and EMA are those of the default."""
    settings = ["restarts=2", "early_stop.check_every=2", "early_stop.factor=1e6", "early_stop.delay=0",
                "early_stop.stop=false", "speed.fused_optimizer=false"]
    default = restore(image, tmp_path / "default", 6, *settings)
    one_tensor = restore(image, tmp_path / "one", 6, *settings, "speed.one_weight_tensor=true")
    assert one_tensor.metrics["early_stop_step"] == [2, 2]
    assert torch.equal(one_tensor.restored, default.restored)
    assert torch.equal(one_tensor.restored_ema, default.restored_ema)
    last = restore(image, tmp_path / "last", 6, *settings[:1], "speed.fused_optimizer=false", "early_stop=none")
    assert not torch.allclose(default.restored, last.restored)  # the kept outputs are not the last step's


def test_the_report_sets_the_kept_ema_against_the_last_and_the_best(tmp_path):
    image = tmp_path / "run" / "images" / "one"
    (image / "csv").mkdir(parents=True)
    metrics = {"image": "one.png", "early_stop_step": [100, 150], "psnr_ema": 30.0, "psnr_ema_final": 28.5}
    (image / "metrics.json").write_text(json.dumps(metrics))
    (image / "csv" / "metrics.csv").write_text("psnr_ema,step\n29.0,49\n30.5,99\n30.0,149\n")  # steps 50, 100, 150
    done = run_cli(str(tmp_path / "run"), script="experiments/early_stop_report.py")
    assert done.returncode == 0, done.stderr
    assert "| one.png | 100/150 | 30.00 | 28.50 | 1.50 | 30.50 | 100 | 0.50 |" in done.stdout
    missing = run_cli(str(tmp_path / "nowhere"), script="experiments/early_stop_report.py")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr == f"error: {tmp_path / 'nowhere'}: no such folder\n"


def test_the_report_has_a_row_for_each_run_of_a_benchmark_with_several(tmp_path, capsys):
    """``benchmark.runs=2``: each run's folder ``images/<stem>/seed<S>``, its curve there or in
    ``--curves``' ``<stem>/seed<S>.csv``."""
    from experiments.early_stop_report import main

    image = tmp_path / "run" / "images" / "two"
    curves = tmp_path / "curves" / "two"
    curves.mkdir(parents=True)
    for seed, kept in ((0, 30.0), (1, 31.0)):
        (image / f"seed{seed}").mkdir(parents=True)
        metrics = {"image": "two.png", "early_stop_step": 100, "psnr_ema": kept, "psnr_ema_final": 29.0}
        (image / f"seed{seed}" / "metrics.json").write_text(json.dumps(metrics))
        (curves / f"seed{seed}.csv").write_text(f"psnr_ema,step\n{kept + 1},99\n")
    assert main([str(tmp_path / "run"), "--curves", str(tmp_path / "curves")]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "| two.png seed0 | 100 | 30.00 | 29.00 | 1.00 | 31.00 | 100 | 1.00 |",
        "| two.png seed1 | 100 | 31.00 | 29.00 | 2.00 | 32.00 | 100 | 1.00 |",
        "| **mean** | - | 30.50 | 29.00 | 1.50 | 31.50 | - | 1.00 |"]


def test_the_report_lists_a_damaged_image_with_its_fault_and_reports_the_others(tmp_path, capsys):
    from experiments.early_stop_report import main

    images = tmp_path / "run" / "images"
    for stem in ("good", "bytes", "broken", "list", "word", "curve"):
        (images / stem / "csv").mkdir(parents=True)
        (images / stem / "metrics.json").write_text('{"psnr_ema": 30, "psnr_ema_final": 28.5}')
    (images / "good" / "csv" / "metrics.csv").write_text("psnr_ema,step\n29.0,49\n31.0,99\n")
    (images / "bytes" / "metrics.json").write_bytes(b"\xff\xfe{")
    (images / "broken" / "metrics.json").write_text('{"psnr_ema": ')
    (images / "list" / "metrics.json").write_text("[30.0]")
    (images / "word" / "metrics.json").write_text('{"psnr_ema": 30, "psnr_ema_final": "28.5"}')
    (images / "curve" / "csv" / "metrics.csv").write_bytes(b"psnr_ema,step\n\xff,49\n")
    assert main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2:4] == ["| good | - | 30.00 | 28.50 | 1.50 | 31.00 | 100 | 1.00 |",
                        "| **mean** | - | 30.00 | 28.50 | 1.50 | 31.00 | - | 1.00 |"]  # of the good one only
    assert out[5:] == ["5 image(s) left out of the table and the mean, unreadable:",
                       f"- {images / 'broken' / 'metrics.json'}: Expecting value: line 1 column 14 (char 13)",
                       f"- {images / 'bytes' / 'metrics.json'}: 'utf-8' codec can't decode byte 0xff in position 0: "
                       "invalid start byte",
                       f"- {images / 'curve' / 'csv' / 'metrics.csv'}: 'utf-8' codec can't decode byte 0xff in "
                       "position 14: invalid start byte",
                       f"- {images / 'list' / 'metrics.json'}: no psnr_ema figure in it",
                       f"- {images / 'word' / 'metrics.json'}: psnr_ema_final is not a number"]
    # nothing readable left: one line, the first fault and how many more, and no table
    (images / "good" / "metrics.json").write_text("")
    assert exit_status(main, [str(tmp_path / "run")]) == 2
    printed = capsys.readouterr()
    first = f"{images / 'broken' / 'metrics.json'}: Expecting value: line 1 column 14 (char 13)"
    assert printed.out == "" and printed.err == f"error: {first} (and 5 more unreadable)\n"


def test_the_report_refuses_a_missing_or_wrong_path_in_one_line(tmp_path, capsys):
    from experiments.early_stop_report import main

    run_dir = tmp_path / "run"
    (run_dir / "images").mkdir(parents=True)
    assert exit_status(main, [str(run_dir)]) == 2
    assert capsys.readouterr().err == f"error: no finished images (images/*/metrics.json) in {run_dir}\n"
    (run_dir / "images" / "one").mkdir()
    (run_dir / "images" / "one" / "metrics.json").write_text('{"psnr_ema": 30.0}')
    (tmp_path / "curves.csv").write_text("psnr_ema,step\n29.0,49\n")
    for args, error in (([str(tmp_path / "metrics.json")], f"{tmp_path / 'metrics.json'}: no such folder"),
                        ([str(tmp_path / "curves.csv")], f"{tmp_path / 'curves.csv'}: not a folder"),
                        ([str(run_dir), "--curves", str(tmp_path / "curves.csv")],
                         f"{tmp_path / 'curves.csv'}: not a folder")):
        assert exit_status(main, args) == 2
        printed = capsys.readouterr()
        assert printed.out == "" and printed.err == f"error: {error}\n"
    # as the user runs it: a --curves folder that is not there is an error, not a table without curves
    done = run_cli(str(run_dir), "--curves", str(tmp_path / "nonexistent"), script="experiments/early_stop_report.py")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'nonexistent'}: no such folder"]
