"""An interrupted run resumes to exactly the result of an uninterrupted one; same seed, same result."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dip.checkpoint import CHECKPOINT_NAME, StepLoader
from dip.config import compose_config
from dip.errors import DipError, Interrupted, RunInterruptedError
from dip.module import DeepImagePrior
from dip.pipeline import StepDataset, run
from dip.signals import CaughtSignals, signal_finished_first, until_the_fit_listens
from tests.conftest import ROOT

# Small and quick, with everything that carries state: reg-noise draws, EMA, early stopping, and
# backtracking (this step size and threshold roll back steps 2 to 4).
SETTINGS = ["logger=none", "arch=skip_depth2", "input.reg_noise_std=0.05", "optim.lr=0.1", "backtrack_db=0.05",
            "early_stop=wmv", "early_stop.window=3", "early_stop.patience=1000", "early_stop.check_every=1",
            "checkpoint.every_n_steps=2"]
COMPARED = ("psnr", "psnr_ema", "psnr_fit", "ssim", "early_stop_step", "psnr_max", "psnr_final")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def restore(image: Path, out: Path, steps: int, *extra: str, settings: list[str] = SETTINGS):
    cfg = compose_config([f"data.path={image}", f"trainer.max_steps={steps}", *settings, *extra], output_dir=out)
    return run(cfg, out)


def assert_same_result(result, reference) -> None:
    for key in COMPARED:
        assert result.metrics[key] == pytest.approx(reference.metrics[key], abs=1e-5), key
    assert torch.allclose(result.restored, reference.restored, atol=1e-5)
    assert torch.allclose(result.restored_ema, reference.restored_ema, atol=1e-5)


@pytest.fixture(scope="module")
def reference(image, tmp_path_factory):
    """An uninterrupted run of 8 steps."""
    return restore(image, tmp_path_factory.mktemp("reference"), 8)


def test_same_seed_same_result_and_the_seed_is_recorded(image, reference, tmp_path):
    again = restore(image, tmp_path / "again", 8)
    assert_same_result(again, reference)
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["seed"] == 0
    other = restore(image, tmp_path / "other", 8, "seed=1")
    assert abs(other.metrics["psnr"] - reference.metrics["psnr"]) > 1e-3


def press_ctrl_c_during_step(step: int, monkeypatch, times: int = 1) -> None:
    """Every fit from now on gets a Ctrl-C (``times`` over) during its step ``step`` (counted from 1)."""
    step_of_training = DeepImagePrior.training_step

    def press_ctrl_c(self, batch, batch_idx):
        if self.global_step == step - 1:
            time.sleep(0.5)  # a step long enough to see in the resumed fit's total time
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return step_of_training(self, batch, batch_idx)

    monkeypatch.setattr(DeepImagePrior, "training_step", press_ctrl_c)


def interrupted_at_step_1(image: Path, out: Path, monkeypatch, settings: list[str] = SETTINGS, *extra: str,
                          step: int = 1) -> RunInterruptedError:
    """An 8-step run into ``out`` stopped by Ctrl-C during its first step (or ``step``); the interruption."""
    press_ctrl_c_during_step(step, monkeypatch)
    with pytest.raises(RunInterruptedError) as interruption:
        restore(image, out, 8, *extra, settings=settings)
    monkeypatch.undo()
    return interruption.value


def test_ctrl_c_during_the_last_step_or_while_writing_the_outputs_finishes_the_run(image, reference, tmp_path,
                                                                                    monkeypatch, capfd):
    """The fit is over: what it found is written, and the same command does not refuse it later."""
    press_ctrl_c_during_step(8, monkeypatch)
    finished = restore(image, tmp_path / "last", 8)
    assert_same_result(finished, reference)
    assert (tmp_path / "last" / "metrics.json").is_file() and not (tmp_path / "last" / CHECKPOINT_NAME).exists()
    assert "SIGINT at the last step: the run was finished first" in capfd.readouterr().err
    assert signal_finished_first() == signal.SIGINT  # for a caller with more fits to start
    monkeypatch.undo()
    restore(image, tmp_path / "quiet", 1)
    assert signal_finished_first() is None  # the next fit's own

    import dip.pipeline

    write_outputs = dip.pipeline.write_outputs

    def press_ctrl_c_first(result, output_dir):
        os.kill(os.getpid(), signal.SIGINT)
        write_outputs(result, output_dir)

    monkeypatch.setattr(dip.pipeline, "write_outputs", press_ctrl_c_first)
    assert_same_result(restore(image, tmp_path / "writing", 8), reference)
    assert (tmp_path / "writing" / "metrics.json").is_file()
    assert "SIGINT after the last step: the run was finished first" in capfd.readouterr().err
    assert signal_finished_first() == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_step_broken_by_a_signal_is_an_interruption_not_its_error(image, tmp_path, monkeypatch):
    """A SIGTERM to the process group kills torch.compile's compiler processes too: the step fails with
    a compile error, which is the signal's doing, not a fault to report."""
    def killed_compiler(self, batch, batch_idx):
        os.kill(os.getpid(), signal.SIGTERM)
        raise RuntimeError("C++ compile error: g++ killed")

    monkeypatch.setattr(DeepImagePrior, "training_step", killed_compiler)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as interruption:
        restore(image, tmp_path / "run", 8)
    assert interruption.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == handler  # put back


def test_ctrl_c_twice_stops_at_once_and_names_the_checkpoint_left(image, reference, tmp_path, monkeypatch):
    """The second Ctrl-C raised a KeyboardInterrupt, which Lightning answered with its own message and exit
    status 1: nothing said which checkpoint was left, or how to go on from it."""
    press_ctrl_c_during_step(4, monkeypatch, times=2)
    out = tmp_path / "run"
    with pytest.raises(RunInterruptedError) as interruption:
        restore(image, out, 8)
    assert (interruption.value.step, interruption.value.saved_step) == (3, 2)  # every_n_steps=2
    assert (f"interrupted by SIGINT at step 3 of 8 (stopped before its checkpoint was written); the checkpoint of "
            f"step 2 is left in {out / CHECKPOINT_NAME}: run the same command again") in str(interruption.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not Lightning's SIG_IGN
    monkeypatch.undo()
    assert_same_result(restore(image, out, 8), reference)


def test_ctrl_c_while_the_trainer_sets_up_is_an_interruption_not_lightnings_exit(image, tmp_path, monkeypatch):
    """Before the first step Lightning caught the KeyboardInterrupt, said so in its own words and exited with
    status 1 (leaving Ctrl-C ignored)."""
    configure = DeepImagePrior.configure_optimizers

    def ctrl_c_first(self):
        os.kill(os.getpid(), signal.SIGINT)
        return configure(self)

    monkeypatch.setattr(DeepImagePrior, "configure_optimizers", ctrl_c_first)
    with pytest.raises(Interrupted) as interruption:
        restore(image, tmp_path / "run", 8)
    assert interruption.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    # a resumed run's checkpoint is there before its Trainer starts: the line names it
    interrupted_at_step_1(image, tmp_path / "resumed", monkeypatch)
    monkeypatch.setattr(DeepImagePrior, "configure_optimizers", ctrl_c_first)
    with pytest.raises(RunInterruptedError, match=r"interrupted by SIGINT at step 1 of 8 \(while the fit started\); "
                                                  f"the checkpoint of step 1 is left in "
                                                  f"{re.escape(str(tmp_path / 'resumed' / CHECKPOINT_NAME))}"):
        restore(image, tmp_path / "resumed", 8)


def test_a_signal_while_the_trainer_ends_a_finished_fit_keeps_it(image, reference, tmp_path, monkeypatch, capfd):
    """Between the last step's end and the Trainer's return, a signal threw the finished fit away."""
    def ctrl_c_at_the_end(self):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(DeepImagePrior, "on_fit_end", ctrl_c_at_the_end, raising=False)
    assert_same_result(restore(image, tmp_path / "run", 8), reference)
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert "SIGINT after the last step: the run was finished first" in capfd.readouterr().err
    assert signal_finished_first() == signal.SIGINT


def test_a_checkpoint_the_disk_refuses_costs_the_checkpoint_not_the_fit(image, reference, tmp_path, monkeypatch,
                                                                        capfd):
    """A full disk failed the periodic checkpoint with a traceback, and with it a fit whose outputs fitted."""
    import dip.checkpoint

    atomic_path, calls = dip.checkpoint.atomic_path, []

    def full_after(writes: int):
        def full_disk(path):
            calls.append(path)
            if len(calls) > writes:
                raise OSError(errno.ENOSPC, "No space left on device")
            return atomic_path(path)
        return full_disk

    monkeypatch.setattr(dip.checkpoint, "atomic_path", full_after(0))
    assert_same_result(restore(image, tmp_path / "full", 8), reference)
    err = capfd.readouterr().err
    assert err.count("cannot write checkpoint") == 1  # said once, not at every step it is tried
    assert f"cannot write checkpoint {tmp_path / 'full' / CHECKPOINT_NAME} at step 2 (No space left on device)" in err

    press_ctrl_c_during_step(3, monkeypatch)  # none written before: nothing to continue from
    with pytest.raises(Interrupted):
        restore(image, tmp_path / "none", 8)
    calls.clear()
    monkeypatch.setattr(dip.checkpoint, "atomic_path", full_after(1))  # step 2's written, step 3's not
    with pytest.raises(RunInterruptedError, match=r"at step 3 of 8 \(its checkpoint could not be written: No space "
                                                  r"left on device\); the checkpoint of step 2 is left in"):
        restore(image, tmp_path / "earlier", 8)
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(dip.checkpoint, "atomic_path", full_after(3))  # steps 2, 4 and 6: the last one's is refused
    restore(image, tmp_path / "kept", 8, "checkpoint.keep=true")
    assert f"the checkpoint of step 6 stays in {tmp_path / 'kept' / CHECKPOINT_NAME}" in capfd.readouterr().err
    monkeypatch.undo()  # it was deleted, and trainer.max_steps larger refused as another run
    assert restore(image, tmp_path / "kept", 10, "checkpoint.keep=true").metrics["resumed_from_step"] == 6


def test_sighup_stops_a_run_as_sigterm_does_unless_started_under_nohup():
    """A closed terminal or SSH session (SIGHUP) ended the fit at once, its steps since the last checkpoint
    lost; under nohup it must not stop the run at all."""
    code = "from dip.signals import stop_signals; print(sorted(stop_signals()))"
    plain = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))  # pytest's may be ignored
    assert plain.stdout.strip() == str(sorted([signal.SIGHUP, signal.SIGINT, signal.SIGTERM]))
    nohup = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert nohup.stdout.strip() == str(sorted([signal.SIGINT, signal.SIGTERM]))


def test_an_ignored_signal_stays_ignored_during_the_steps_and_a_benchmark_workers_is_noted(monkeypatch):
    """A job that a script started in the background has SIGINT ignored: it ignored Ctrl-C before and between
    fits, and obeyed it during them; a script's own ignored SIGTERM stopped the fit (through Lightning's handler).
    A benchmark worker's SIGTERM, ignored until a fit listens, is the fit's to note."""
    handlers = {signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: until_the_fit_listens, signal.SIGHUP: signal.SIG_DFL}
    monkeypatch.setattr(signal, "getsignal", lambda signum: handlers[signum])
    installed = {}
    monkeypatch.setattr(signal, "signal", lambda signum, handler: installed.setdefault(signum, handler))
    caught = CaughtSignals()
    caught.install()
    assert installed == {signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: caught._note, signal.SIGHUP: caught._note}


def test_ctrl_c_in_a_run_without_a_folder_returns_the_result_so_far(image, monkeypatch, capfd):
    """As in a notebook: the fit ends at the end of the step, nothing is written, the handler is put back
    (Lightning's own would exit the process and leave Ctrl-C ignored)."""
    press_ctrl_c_during_step(3, monkeypatch)
    result = run(compose_config([f"data.path={image}", "trainer.max_steps=8", *SETTINGS]), None)
    assert result.metrics["steps"] == 3 and result.metrics["stop_reason"] == "interrupted by SIGINT"
    assert "SIGINT: stopping at step 3" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_run_folders_own_checkpoint_goes_on_from_where_resume_started_it(image, reference, tmp_path,
                                                                            monkeypatch):
    """resume=A starts a run in B; B interrupted later: the same command continues B's checkpoint."""
    start = tmp_path / "start"
    interrupted_at_step_1(image, start, monkeypatch)
    out = tmp_path / "run"
    assert interrupted_at_step_1(image, out, monkeypatch, SETTINGS, f"resume={start}", step=4).step == 4
    resumed = restore(image, out, 8, f"resume={start}")
    assert resumed.metrics["resumed_from_step"] == 4
    assert_same_result(resumed, reference)


def test_a_checkpoint_has_the_curve_up_to_its_step_on_disk_and_a_stale_temporary_goes(image, tmp_path, monkeypatch):
    """Lightning's CSV writer flushes every 100 steps: a process killed after a checkpoint would lose the
    rows before it, which the resumed run no longer logs. A temporary left by a kill mid-write is removed."""
    from dip.checkpoint import RunCheckpoint

    out = tmp_path / "run"
    out.mkdir()
    (out / f".{CHECKPOINT_NAME}.killed.tmp").write_bytes(b"half a checkpoint")
    rows_on_disk = []
    save = RunCheckpoint.save

    def save_and_count_rows(self, trainer):
        save(self, trainer)
        log = out / "csv" / "metrics.csv"
        rows_on_disk.append((trainer.global_step, log.read_text().count("\n") - 1 if log.is_file() else 0))

    monkeypatch.setattr(RunCheckpoint, "save", save_and_count_rows)
    restore(image, out, 5, "logger=csv", "metrics_every=1")
    assert rows_on_disk == [(2, 2), (4, 4)]
    assert not list(out.glob(".*.tmp"))


def test_ctrl_c_writes_a_checkpoint_and_rerunning_resumes_to_the_same_result(image, reference, tmp_path,
                                                                              monkeypatch):
    # Step 1 is good and step 2 rolls back: the resumed run needs step 1's weights, not the current ones.
    out = tmp_path / "run"
    interruption = interrupted_at_step_1(image, out, monkeypatch)
    assert interruption.step == 1 and interruption.signum == signal.SIGINT
    assert (out / CHECKPOINT_NAME).is_file() and not (out / "metrics.json").exists()
    assert not list(out.glob(".*.tmp"))  # written atomically: no temporary left behind

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = restore(image, out, 8)  # re-running into the same run directory
    assert not [w for w in caught if "not resumable" in str(w.message)]  # Lightning knows the loader resumes
    assert resumed.metrics["resumed_from_step"] == 1 and resumed.metrics["steps"] == 8
    assert resumed.metrics["seconds_total"] >= resumed.metrics["seconds"] + 0.5  # the interrupted run's step too
    assert "seconds_total" not in reference.metrics
    assert 0 < resumed.metrics["warmup_seconds"] < resumed.metrics["seconds"]  # this run's first 3 steps of 7
    assert_same_result(resumed, reference)
    assert not (out / CHECKPOINT_NAME).exists()  # a finished run drops it (checkpoint.keep=false)


def test_a_checkpoint_without_the_fit_time_resumes_without_a_total(image, tmp_path, monkeypatch):
    """A checkpoint from before the fit timer kept its state (simulated: the state taken out) resumes,
    but the whole fit's time is unknown: no seconds_total, rather than this run's seconds passed off as it."""
    out = tmp_path / "run"
    interrupted_at_step_1(image, out, monkeypatch)
    checkpoint = torch.load(out / CHECKPOINT_NAME, weights_only=False)
    assert checkpoint["callbacks"].pop("FitTimer")["seconds"] >= 0.5
    torch.save(checkpoint, out / CHECKPOINT_NAME)
    resumed = restore(image, out, 8)
    assert resumed.metrics["resumed_from_step"] == 1 and "seconds_total" not in resumed.metrics


def test_packed_restarts_resume_to_the_same_result(image, tmp_path, monkeypatch):
    # each restart rolls back on its own; early stopping does not combine with restarts
    packed = [setting for setting in SETTINGS if not setting.startswith("early_stop")] + ["restarts=2"]
    reference = restore(image, tmp_path / "reference", 8, settings=packed)
    out = tmp_path / "run"
    interrupted_at_step_1(image, out, monkeypatch, packed)
    resumed = restore(image, out, 8, settings=packed)
    assert resumed.metrics["resumed_from_step"] == 1
    for key in ("psnr", "psnr_ema", "psnr_fit", "ssim"):
        assert resumed.metrics[key] == pytest.approx(reference.metrics[key], abs=1e-5), key
    assert resumed.metrics["psnr_restarts"] == pytest.approx(reference.metrics["psnr_restarts"], abs=1e-5)
    assert torch.allclose(resumed.restored, reference.restored, atol=1e-5)


def test_one_weight_tensor_resumes_to_the_same_result_as_the_default(image, reference, tmp_path, monkeypatch):
    """With speed.one_weight_tensor=true the optimizer holds one tensor: its state resumes, and the fit
    (rollbacks and early stopping included) is the default one; a checkpoint of the other setting is
    refused."""
    one_tensor = [*SETTINGS, "speed.one_weight_tensor=true"]
    out = tmp_path / "run"
    interrupted_at_step_1(image, out, monkeypatch, one_tensor)
    with pytest.raises(DipError, match="speed.one_weight_tensor: True -> False"):
        restore(image, tmp_path / "elsewhere", 8, f"resume={out}")
    resumed = restore(image, out, 8, settings=one_tensor)
    assert resumed.metrics["resumed_from_step"] == 1
    assert_same_result(resumed, reference)


def test_a_checkpoint_without_backtrack_against_resumes_under_the_rule_it_ran(image, reference, tmp_path,
                                                                               monkeypatch):
    """Checkpoints older than the backtrack_against and metrics_every settings do not name them, nor do
    those of their defaults (the rules they ran): they resume with the defaults, and are refused with others."""
    out = tmp_path / "run"
    interrupted_at_step_1(image, out, monkeypatch)
    saved = torch.load(out / CHECKPOINT_NAME, weights_only=True)["dip"]["settings"]
    assert "backtrack_against" not in saved and "metrics_every" not in saved
    with pytest.raises(DipError, match="backtrack_against: 'last' -> 'best'"):
        restore(image, out, 8, "backtrack_against=best")
    with pytest.raises(DipError, match="metrics_every: 50 -> 2"):  # when rollbacks are judged
        restore(image, out, 8, "metrics_every=2")
    assert_same_result(restore(image, out, 8), reference)


def test_sigterm_on_the_command_line_then_resume(image, tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "run.py", f"data.path={image}", "trainer.max_steps=100000", f"hydra.run.dir={out}",
               *SETTINGS, "checkpoint.every_n_steps=3"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (out / CHECKPOINT_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "SIGTERM" in stderr and f"hydra.run.dir={out}" in stderr
    assert not (out / "metrics.json").exists()
    step = int(torch.load(out / CHECKPOINT_NAME, weights_only=True)["global_step"])

    # Continue two steps past the checkpoint (max_steps may change on resume) and compare.
    with pytest.raises(DipError, match=r"other settings.*seed: 0 -> 1\): use the same settings, or name another "
                                       r"with resume=, or leave resume= out"):
        restore(image, tmp_path / "elsewhere", step + 2, "seed=1", f"resume={out}")
    with pytest.raises(DipError, match="other settings.*speed.batchnorm_running_stats: False -> True"):
        restore(image, tmp_path / "elsewhere", step + 2, "speed=exact", f"resume={out}")  # other weights and buffers
    resumed = restore(image, out, step + 2, "checkpoint.keep=true")
    assert resumed.metrics["resumed_from_step"] == step
    assert_same_result(resumed, restore(image, tmp_path / "uninterrupted", step + 2))

    # checkpoint.keep=true leaves the final state: a larger max_steps continues the finished run.
    with pytest.raises(DipError, match=f"already holds {step + 2} steps.*: raise trainer.max_steps to continue it, "
                                       "or delete it, or run into another folder"):
        restore(image, out, step + 2)
    extended = restore(image, out, step + 4)
    assert extended.metrics["resumed_from_step"] == step + 2
    assert_same_result(extended, restore(image, tmp_path / "longer", step + 4))


def test_damaged_or_missing_checkpoint_is_one_clear_line(image, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(DipError, match="cannot read checkpoint") as error:
        restore(image, tmp_path / "run", 4)
    # not torch's advice to load it without weights_only, which could run code from the file
    assert "(not a PyTorch file of tensors)" in str(error.value) and "weights_only" not in str(error.value)
    assert str(error.value).endswith("delete it, or run into another folder")
    with pytest.raises(DipError, match="damaged, or not a checkpoint: name another with resume=, or leave resume= out"):
        restore(image, tmp_path / "new", 4, f"resume={tmp_path / 'run'}")  # another folder would read it again
    with pytest.raises(DipError, match="checkpoint not found"):
        restore(image, tmp_path / "new", 4, f"resume={tmp_path / 'nowhere.ckpt'}")


def test_step_loader_continues_at_the_saved_step():
    loader = StepLoader(StepDataset(6))
    iterator = iter(loader)
    assert [next(iterator), next(iterator), next(iterator)] == [0, 1, 2]
    state = loader.state_dict()
    resumed = StepLoader(StepDataset(6))
    resumed.load_state_dict(state)
    assert len(resumed) == 6 and list(resumed) == [3, 4, 5]
    assert list(resumed) == list(range(6))  # a later epoch starts from the beginning


def test_an_interruption_crosses_from_a_worker_process_whole():
    """A benchmark's worker raises it; the main process gets it through pickling."""
    interruption = RunInterruptedError(signal.SIGTERM, 7, 10, Path("run/checkpoint.ckpt")).advised("call again")
    received = pickle.loads(pickle.dumps(interruption))
    assert (received.signum, received.step, received.max_steps, received.checkpoint) == (
        signal.SIGTERM, 7, 10, Path("run/checkpoint.ckpt"))
    assert str(received) == str(interruption) and "call again to continue" in str(received)
