"""A fit that collapses at its end keeps its EMA from before: the guard's choice, the run's files."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from dip.callbacks import CollapseGuard
from dip.config import compose_config
from dip.outputs import BEFORE_COLLAPSE_OUTPUT, describe
from dip.physics import GaussianNoise
from dip.pipeline import run
from tests.conftest import exit_status, fit_scripted, make_png, run_cli

STEPS = 40


class ScriptedFit(pl.LightningModule):
    """Two packed copies whose EMA after step ``t`` is ``y + d_k(t)``: the residual ``d_k(t)^2`` is
    ``residual(k, t)``, and each step's EMA is recorded."""

    def __init__(self, residual):
        super().__init__()
        self.residual = residual
        self.physics = GaussianNoise(sigma=5, clip=False)
        self.weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("observation", torch.full((1, 3, 8, 8), 0.5))
        self.register_buffer("ema", torch.zeros(2, 3, 8, 8))
        self.emas: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        step = self.global_step + 1
        offsets = torch.tensor([self.residual(k, step) ** 0.5 for k in range(2)]).view(2, 1, 1, 1)
        self.ema.copy_(self.observation + offsets)
        self.emas[step] = self.ema.clone()
        return (self.weight - 1).square().sum()

    def combine(self, x):
        return x

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def guarded(residual, drop_db: float = 5.0, check_every: int = 5) -> tuple[CollapseGuard, ScriptedFit]:
    guard, module = CollapseGuard(drop_db, check_every), ScriptedFit(residual)
    fit_scripted(module, guard, STEPS)
    return guard, module


def test_a_copy_whose_fit_collapses_keeps_its_ema_from_the_best_check():
    # copy 0 fits until step 23, then slides to 100x its best residual (20 dB); copy 1 keeps fitting
    guard, module = guarded(lambda k, t: 1e-4 / t if k or t <= 23 else 1e-4 / 23 * (1 + 99 * (t - 23) / 17))
    assert guard.collapsed == [True, False]
    summary = guard.summary()
    assert summary["ema_before_collapse_step"] == [20, None]  # the best of the checks at 5, 10, ..., 40
    best, last = 1e-4 / 20, 1e-4 / 23 * 100
    assert summary["collapse_drop_db"][0] == pytest.approx(10 * math.log10(last / best), abs=0.01)
    assert summary["collapse_drop_db"][1] == 0
    kept = guard.ema_before_collapse(module)
    assert torch.equal(kept[0], module.emas[20][0]) and torch.equal(kept[1], module.emas[STEPS][1])
    assert torch.equal(module.ema, module.emas[STEPS])  # the final outputs are left as they are


def test_a_fit_that_keeps_improving_or_rises_less_than_the_threshold_did_not_collapse():
    for residual in (lambda k, t: 1e-4 / t,  # still fitting (or overfitting noise)
                     lambda k, t: 1e-4 * (1 + 2 * max(t - 30, 0) / 10)):  # up 4.8 dB from its best, under 5
        guard, module = guarded(residual)
        assert guard.collapsed == [False, False]
        assert guard.ema_before_collapse(module) is None and guard.summary() == {}


def test_a_lower_threshold_and_a_non_finite_end_count_as_collapses():
    guard, _ = guarded(lambda k, t: 1e-4 * (1 + 2 * max(t - 30, 0) / 10), drop_db=4.0)
    # equal residuals: the later check's EMA is kept
    assert guard.collapsed == [True, True] and guard.summary()["ema_before_collapse_step"] == [30, 30]
    guard, _ = guarded(lambda k, t: float("nan") if k and t == STEPS else 1e-4 / t)
    assert guard.collapsed == [False, True] and guard.summary()["collapse_drop_db"] == [0, None]


def test_the_state_survives_a_checkpoint():
    guard, module = guarded(lambda k, t: 1e-4 / t if t <= 23 else 1.0)
    restored = CollapseGuard()
    restored.load_state_dict(guard.state_dict())
    restored.on_train_start(None, module)
    for key, value in guard.state.items():
        assert torch.equal(restored.state[key], value), key


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="drop_db > 0 and check_every >= 1"):
        CollapseGuard(drop_db=0)


class CollapseAtTheEnd(pl.Callback):
    """Spoils the EMA at the last step, as a fit sliding away from the image would."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == trainer.max_steps:
            pl_module.ema.copy_(1 - pl_module.observation)


def restore(tmp_path, name: str, *extra: str, callbacks=()):
    image = make_png(tmp_path / "in.png", 24, 24)
    out = tmp_path / name
    cfg = compose_config([f"data.path={image}", "trainer.max_steps=12", "metrics_every=4", "logger=none",
                          "arch=skip_depth2", "optim.lr=0.05", "ema_weight=0.5", *extra], output_dir=out)
    return run(cfg, out, callbacks=callbacks), out


def test_a_run_that_collapses_writes_its_ema_from_before_beside_the_final_outputs(tmp_path):
    plain, plain_out = restore(tmp_path, "plain")
    assert not (plain_out / BEFORE_COLLAPSE_OUTPUT).exists() and "ema_before_collapse_step" not in plain.metrics
    result, out = restore(tmp_path, "collapsed", callbacks=[CollapseAtTheEnd()])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ema_before_collapse_step"] in (4, 8)  # the best check before the end
    assert metrics["collapse_drop_db"] > 5
    # the file is the EMA of that step: the plain run's EMA there, the same seed
    shorter, _ = restore(tmp_path, "shorter", f"trainer.max_steps={metrics['ema_before_collapse_step']}")
    assert torch.allclose(result.ema_before_collapse, shorter.restored_ema, atol=1e-6)
    assert metrics["psnr_ema_before_collapse"] == pytest.approx(shorter.metrics["psnr_ema"], abs=1e-3)
    assert metrics["psnr_ema_before_collapse"] > metrics["psnr_ema"] + 3
    assert (out / BEFORE_COLLAPSE_OUTPUT).is_file()
    assert f"{BEFORE_COLLAPSE_OUTPUT} is its EMA from step {metrics['ema_before_collapse_step']}" in describe(result)


def test_without_backtracking_or_under_early_stopping_there_is_no_guard(tmp_path):
    for extra in ("backtrack_db=null", "early_stop=discrepancy"):
        result, out = restore(tmp_path, extra.split("=")[0], extra, callbacks=[CollapseAtTheEnd()])
        assert "ema_before_collapse_step" not in result.metrics and not (out / BEFORE_COLLAPSE_OUTPUT).exists()


def test_the_report_applies_the_rule_to_logged_curves(tmp_path, capsys):
    from experiments.collapse_report import main

    header = "psnr,psnr_ema,psnr_fit,psnr_fit_ema,step\n"
    (tmp_path / "slid.csv").write_text(header + "20,25,40,45,49\n20,27,48,52,99\n20,27,47,52,149\n10,24,30,40,199\n")
    (tmp_path / "fine.csv").write_text(header + "20,25,40,45,49\n20,27,48,46,99\n")
    assert main([str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2] == f"| {tmp_path / 'fine.csv'} | 100 | 27.00 | 0.00 | - | - | - |"
    # the later of the two best checks (52 dB at steps 100 and 150) is kept
    assert rows[3] == f"| {tmp_path / 'slid.csv'} | 200 | 24.00 | 12.00 | 150 | 27.00 | 3.00 |"
    assert rows[-1] == "1 of 2 curves collapsed (EMA's fit more than 5.0 dB under its best)"
    assert main([str(tmp_path / "slid.csv"), "--drop-db", "12"]) == 0
    assert "0 of 1 curves collapsed" in capsys.readouterr().out
    assert exit_status(main, [str(tmp_path / "missing")]) == 2
    assert "error: no such file or folder" in capsys.readouterr().err


HEADER = "psnr,psnr_ema,psnr_fit,psnr_fit_ema,step\n"
DAMAGED = {  # a file's bytes, and the fault the report names it with
    "bytes.csv": (b"\xff\xfe\x00garbage", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    "word.csv": (f"{HEADER}20,abc,40,45,49\n".encode(), "could not convert string to float: 'abc'"),
    "long.csv": (f"{HEADER}20,25,40,45,49,7\n".encode(), "a row has more cells than the header"),
    "infinite.csv": (f"{HEADER}20,25,40,45,inf\n".encode(), "cannot convert float infinity to integer"),
    "gap.csv": (f"{HEADER}20,25,40,45,49\n20,,48,46,99\n".encode(),
                "no psnr_ema at step 100, where psnr_fit_ema has one"),
}


def test_the_report_lists_a_damaged_curve_with_its_fault_and_reports_the_others(tmp_path, capsys):
    from experiments.collapse_report import main

    (tmp_path / "fine.csv").write_text(HEADER + "20,25,40,45,49\n20,27,48,46,99\n")
    for name, (data, _) in DAMAGED.items():
        (tmp_path / name).write_bytes(data)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"| {tmp_path / 'fine.csv'} | 100 | 27.00 | 0.00 | - | - | - |" in out
    assert "0 of 1 curves collapsed" in out and f"{len(DAMAGED)} file(s) left out, unreadable:" in out
    for name, (_, fault) in DAMAGED.items():
        assert f"- {tmp_path / name}: {fault}" in out


def test_the_report_of_nothing_readable_is_one_line_naming_the_file(tmp_path, capsys):
    from experiments.collapse_report import main

    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "no_csv").mkdir()
    for name, (data, fault) in DAMAGED.items():
        (tmp_path / name).write_bytes(data)
        assert exit_status(main, [str(tmp_path / name)]) == 2
        printed = capsys.readouterr()
        assert printed.out == "" and printed.err == f"error: {tmp_path / name}: {fault}\n"
    for path in (tmp_path / "empty.csv", tmp_path / "no_csv"):
        assert exit_status(main, [str(path)]) == 2
        assert capsys.readouterr().err == f"error: no curve with psnr_ema and psnr_fit_ema columns under {path}\n"
    # as the user runs it: the exit status, one line, no traceback; the first fault and how many more
    done = run_cli(str(tmp_path / "bytes.csv"), str(tmp_path / "word.csv"), script="experiments/collapse_report.py")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    first = f"{tmp_path / 'bytes.csv'}: {DAMAGED['bytes.csv'][1]}"
    assert done.stderr.splitlines() == [f"error: {first} (and 1 more unreadable)"]
