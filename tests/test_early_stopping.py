"""ES-WMV early stopping: the chosen step, the stop, and what metrics.json reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn

from dip.callbacks import VarianceEarlyStopping
from dip.config import compose_config
from dip.images import to_pil
from dip.metrics import psnr
from dip.module import share_one_buffer
from dip.pipeline import run
from tests.conftest import fit_scripted, make_png

LOWEST_NOISE = 30  # the scripted outputs are least noisy at this step (1-based)


class ScriptedOutputs(pl.LightningModule):
    """Outputs ``truth + a_t n_t`` with a V-shaped noise level ``a_t``, least at ``LOWEST_NOISE``:
    what Deep Image Prior does (fits the image, then the noise), with a known best step."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.noise = torch.Generator().manual_seed(0)
        self.register_buffer("ground_truth", torch.rand(1, 3, 8, 8, generator=self.noise))
        self.register_buffer("ema", torch.zeros(1, 3, 8, 8))
        self.outputs: dict[int, torch.Tensor] = {}
        self.weights: dict[int, float] = {}

    def training_step(self, batch, batch_idx):
        step = self.global_step + 1
        level = 0.01 + 0.01 * abs(step - LOWEST_NOISE)
        self.latest_output = self.ground_truth + level * torch.randn(1, 3, 8, 8, generator=self.noise)
        self.ema.copy_(self.latest_output / 2)
        self.outputs[step], self.weights[step] = self.latest_output.clone(), float(self.weight.detach())
        return (self.weight - 1) ** 2

    def restored(self):
        return self.latest_output

    def on_fit_start(self):
        self.flat_weights = share_one_buffer([self.weight])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(callback: VarianceEarlyStopping, steps: int = 200) -> tuple[pl.Trainer, ScriptedOutputs]:
    module = ScriptedOutputs()
    return fit_scripted(module, callback, steps), module


def test_chooses_the_least_varying_window_and_stops_after_patience():
    callback = VarianceEarlyStopping(window=5, patience=20, check_every=4)
    trainer, module = fit(callback)
    chosen = callback.summary()["early_stop_step"]
    # The window of 5 least noisy outputs ends 2 steps after the least noisy one.
    assert chosen == LOWEST_NOISE + 2
    assert callback.stopped_at == trainer.global_step
    assert 20 <= callback.stopped_at - chosen < 20 + 4  # read on the host every 4 steps only
    # The module ends in its state of the chosen step: the weights that made that output, and its EMA.
    assert float(module.weight.detach()) == module.weights[chosen] != module.weights[chosen + 1]
    assert torch.equal(module.ema, module.outputs[chosen] / 2)
    window = torch.stack([module.outputs[step][0] for step in range(chosen - 4, chosen + 1)])
    expected = window.var(dim=0, unbiased=False).mean()  # per-pixel variance across the window, averaged
    assert float(callback.state["best_variance"]) == pytest.approx(float(expected), rel=1e-5)


def test_reports_psnr_at_the_chosen_step_the_best_psnr_and_the_gap():
    callback = VarianceEarlyStopping(window=5, patience=20, check_every=4)
    _, module = fit(callback)
    summary = callback.summary()
    truth = module.ground_truth
    at_chosen = float(psnr(module.outputs[summary["early_stop_step"]], truth))
    best_step = max(module.outputs, key=lambda step: float(psnr(module.outputs[step], truth)))
    assert summary["psnr_at_early_stop"] == pytest.approx(at_chosen, abs=1e-3)
    assert summary["psnr_max_step"] == best_step
    assert summary["psnr_max"] == pytest.approx(float(psnr(module.outputs[best_step], truth)), abs=1e-3)
    assert summary["early_stop_gap_db"] == pytest.approx(summary["psnr_max"] - summary["psnr_at_early_stop"], abs=2e-4)
    assert summary["early_stop_gap_db"] >= 0


def test_no_choice_before_the_window_fills():
    callback = VarianceEarlyStopping(window=50, patience=5)
    fit(callback, steps=20)
    assert callback.chosen_step is None and callback.summary()["early_stop_step"] is None


def test_bad_settings_are_one_clear_line():
    with pytest.raises(ValueError, match="window >= 2"):
        VarianceEarlyStopping(window=1)


def test_a_restoration_writes_f_of_z_at_the_chosen_step(tmp_path):
    image = make_png(tmp_path / "in.png", 16, 16)

    def restore(steps: int, *extra: str, out=None):
        cfg = compose_config([f"data.path={image}", f"trainer.max_steps={steps}", "logger=none", "arch=skip_depth2",
                              "optim.lr=0.05", *extra], output_dir=out)
        return run(cfg, out)

    out = tmp_path / "out"
    result = restore(60, "early_stop=wmv", "early_stop.window=4", "early_stop.patience=3", "early_stop.check_every=1",
                     out=out)
    metrics = json.loads((out / "metrics.json").read_text())
    chosen = metrics["early_stop_step"]
    assert chosen is not None and metrics["steps"] == (metrics["early_stopped_at"] or 60)
    assert metrics["stop_reason"] == ("early stopping" if metrics["early_stopped_at"] else None)
    assert metrics["psnr_max"] >= metrics["psnr_at_early_stop"] and metrics["psnr_final"] is not None
    with Image.open(out / "restored.png") as written:
        assert np.array_equal(np.asarray(written), np.asarray(to_pil(result.restored[0])))
    # Step t's output comes from the weights after t - 1 updates; its EMA includes that output.
    assert torch.allclose(result.restored, restore(chosen - 1).restored, atol=1e-6)
    assert torch.allclose(result.restored_ema, restore(chosen).restored_ema, atol=1e-6)
