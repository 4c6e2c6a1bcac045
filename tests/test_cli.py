"""``run.py`` as a user runs it: files written, exit codes, one-line errors."""

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from dip.cli import (
    check_overrides,
    expanded_globs,
    held_run_folder,
    pinned_folder,
)
from dip.config import compose_config
from dip.config_checks import checked_config
from dip.earlier_runs import EarlierRuns
from dip.errors import DipError, RunInterruptedError
from dip.files import hold_folder
from dip.outputs import Result, write_outputs
from dip.overrides import home_expanded, hydra_quoted, pasted_override, run_folders
from dip.pipeline import prepare, run
from tests.conftest import (
    ROOT,
    assert_one_line_error,
    cli_environment,
    held_elsewhere,
    make_png,
    offline_run_file,
    offline_run_info,
    offline_summary,
    run_cli,
    run_cli_probing_lightning,
    run_cli_signalled,
)

TINY = ["trainer.max_steps=3", "data.size=64", "logger=csv"]


def test_inpainting_with_skip_depth6_writes_every_output(tmp_path):
    out = tmp_path / "out"
    done = run_cli("task=inpainting", "arch=skip_depth6", *TINY, f"hydra.run.dir={out}",
                   env={"PYTHONWARNINGS": "default"})
    assert done.returncode == 0, done.stderr
    for noise in ("LeafSpec", "litlogger", "logging interval"):  # Lightning's, that a user cannot act on
        assert noise not in done.stdout + done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "psnr_ema", "ssim", "psnr_observation", "steps", "seconds", "steps_per_second", "device"):
        assert key in metrics
    assert metrics["steps"] == 3 and metrics["device"] == "cpu"
    assert 0 < metrics["warmup_seconds"] <= metrics["seconds"]  # the first 3 steps: all of them here
    for name in ("observation.png", "restored.png", "restored_ema.png"):
        assert Image.open(out / name).size == (64, 64)
    assert "PSNR observation" in done.stdout
    # the default image is 512x512: the crop is said, not silent (the quick profile makes one unasked)
    assert "restoring the centre 64x64 of its 512x512 pixels (data.size=64 crops the restored image; " in done.stdout
    assert (out / "csv" / "metrics.csv").is_file()


def test_real_observation_without_ground_truth(tmp_path):
    noisy = make_png(tmp_path / "noisy.png", 40, 36, seed=3)
    out = tmp_path / "out"
    done = run_cli(f"data.observation={noisy}", "trainer.max_steps=2", "logger=none", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["psnr"] is None and metrics["psnr_fit"] is not None
    assert Image.open(out / "restored.png").size == (40, 36)
    assert "restoring the centre" not in done.stdout  # the quick profile's 128 px keep all of it


def test_a_job_run_in_its_own_folder_reads_files_named_from_where_the_command_ran(tmp_path):
    """hydra.job.chdir=true: "image file not found: photo.png" for a file beside the command, before; and the
    same command again finds the run finished (its record names the file as given)."""
    photo = os.path.relpath(make_png(tmp_path / "photo.png", 24, 20), ROOT)
    command = ["hydra.job.chdir=true", f"data.path={photo}", "trainer.max_steps=1", "logger=none",
               f"hydra.run.dir={tmp_path / 'out'}"]
    done = run_cli(*command)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(tmp_path / "out" / "restored.png").size == (24, 20)
    again = run_cli(*command)
    assert again.returncode == 0 and f"already finished in {tmp_path / 'out'}" in again.stdout, again.stderr[-2000:]


@pytest.mark.parametrize("script, record, kind", [
    ("run.py", "benchmark:\n  name: set5_x4\n", "a benchmark's run (experiments/benchmark.py)"),
    ("experiments/benchmark.py", "seed: 0\n", "a single restoration (run.py)"),
])
def test_a_folder_holding_a_run_of_another_kind_is_refused_and_kept(tmp_path, script, record, kind):
    """run.py into a benchmark's folder rewrote its record and put a metrics.json beside its table, and
    the benchmark into a restoration's folder did the same to it."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(record)
    (tmp_path / "metrics.json").write_text("{}")
    done = run_cli("trainer.max_steps=1", "data.size=32", "logger=none", f"hydra.run.dir={tmp_path}", script=script)
    assert_one_line_error(done, f"{tmp_path} holds {kind}, not ")
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == record
    assert sorted(path.name for path in tmp_path.iterdir()) == [".hydra", "metrics.json"]


@pytest.mark.parametrize("script", ["run.py", "experiments/benchmark.py"])
def test_sigterm_while_the_libraries_load_is_one_line(tmp_path, script):
    """A scheduler's stop in a script's first seconds (torch and Hydra loading) ended it with no word and
    Python's status for a killed process; it ends as one a moment later does."""
    started = subprocess.Popen([sys.executable, str(ROOT / script), f"hydra.run.dir={tmp_path / 'out'}"], cwd=ROOT,
                               env=cli_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # not before the script's first lines: a signal while Python itself starts (seconds on a busy machine) kills it
    _wait_until_caught(started.pid, signal.SIGTERM)
    started.send_signal(signal.SIGTERM)
    _, stderr = started.communicate(timeout=120)
    assert started.returncode == 128 + signal.SIGTERM and stderr.endswith("interrupted by SIGTERM\n"), stderr[-2000:]
    assert not (tmp_path / "out").exists()


def _wait_until_caught(pid: int, signum: int, timeout: float = 60) -> None:
    """Wait until process ``pid`` handles ``signum`` (Linux's /proc: its caught signals' mask)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
        if caught >> (signum - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not handle signal {signum} within {timeout} s")


def test_sr_on_a_grey_file_restores_the_full_size(tmp_path):
    clean = make_png(tmp_path / "clean.png", 61, 47, mode="L")
    out = tmp_path / "out"
    done = run_cli("task=sr_x4", f"data.path={clean}", "data.size=null", "trainer.max_steps=2", "logger=none",
                   f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    restored = Image.open(out / "restored.png")
    assert restored.mode == "L" and restored.size == (60, 44)  # trimmed to a multiple of the factor
    assert Image.open(out / "observation.png").size == (15, 11)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["width"], metrics["height"]) == (60, 44)
    assert f"{clean}: 61x47 cropped from the top-left to 60x44" in done.stdout + done.stderr


@pytest.mark.parametrize(
    "args, needles",
    [
        (["data.path=missing.png"], ["missing.png", "not found"]),
        (["arch=skip,unet"], ["Ambiguous value for argument 'arch=skip,unet' (To use it as a list",
                              "To sweep over it, add --multirun"]),  # Hydra's ways out were cut off
        (["-m", "--cfg", "job", "arch=skip,unet"], ["--multirun (-m) and --cfg (-c) cannot go together",
                                                    "give each swept setting one value, without -m"]),
        (["data.path=photo(1).png"], ["cannot parse overrides", "quote a value holding spaces, brackets"]),
        (["hydra.job.name=jöb"], ["cannot parse overrides: LexerNoViableAltException: hydra.job.name=jöb (quote"]),
        (["+arch.depht=4"], ["Skip takes no setting 'depht' (drop it with ~arch.depht"]),
        (["ema_weight=1"], ["ema_weight must be in [0, 1), got 1"]),
        (["+lrr=0.01"], ["+lrr: nothing reads a setting named 'lrr' (a typo?)"]),
        (["trainer.max_step=2"], ["trainer.max_step: no such setting (did you mean trainer.max_steps?)"]),
        (["+benchmark=set5_x4"], ["+benchmark=set5_x4: the benchmarks are experiments/benchmark.py's"]),
        # OmegaConf's traceback came where the setting was first read, in the job's folder
        (["data.path=${oc.env:DIP_TEST_UNSET}/a.png"], ["data.path: ", "Environment variable 'DIP_TEST_UNSET'"]),
        (["task=inpainting", "data.mask=${nosuch}"], ["data.mask: Interpolation key 'nosuch' not found"]),
        (["optim.lr=${seed.x}"], ["optim.lr: ConfigTypeError raised while resolving interpolation"]),
        # left to the job, whose environment may set it, which refuses it and removes its folder
        (["optim.lr=${oc.env:DIP_TEST_UNSET}"], ["optim.lr: ", "Environment variable 'DIP_TEST_UNSET'"]),
        (["+experiment=two_run_average", "data.path=${oc.env:DIP_TEST_UNSET}"], ["data.path: ", "'DIP_TEST_UNSET'"]),
        # scikit-image's names that are no picture: a stack of faces, a stereo pair
        (["data.path=skimage:lfw_subset"], ["built-in image 'skimage:lfw_subset' cannot be read as an image: it gives "
                                            "an array of shape (200, 25, 25)"]),
        (["data.path=skimage:stereo_motorcycle"], ["'skimage:stereo_motorcycle' cannot be read", "gives a tuple"]),
        # refused by Hydra once started (check_overrides leaves hydra.* to it)
        (["hydra.foo=1"], ["Could not override 'hydra.foo'. To append to your config use +hydra.foo=1"]),
        (["hydra/launcher=nope"], ["Could not find 'hydra/launcher/nope' (choose from: basic, gpus, joblib"]),
    ],
)
def test_bad_input_gets_one_line_and_no_outputs(tmp_path, args, needles):
    """One of each place a command is refused: its overrides, the config, the input, the module."""
    out = tmp_path / "out"
    done = run_cli(*args, "trainer.max_steps=1", "logger=none", f"hydra.run.dir={out}")
    assert_one_line_error(done, *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["task=deblurring"], ["unknown task 'deblurring'", "denoising"]),
        (["arch=vgg"], ["unknown arch 'vgg'"]),
        (["task=flash_no_flash", "prior=tv"], ["(prior=tv, input=pixels) fits the pixels themselves, so task "
                                                "flash_no_flash's input image (input.path) would be ignored"]),
        (["task=sr_x8", "task.physics.factor=64", "data.size=64"], ["too small for x64"]),
        (["arch.upsample_mode=cubic"], ["upsample mode 'cubic'"]),
        (["input.distribution=poisson"], ["noise distribution 'poisson'"]),
        (["input.reg_noise_std=-1"], ["invalid input settings: reg_noise_std must be >= 0, got -1"]),
        (["backtrack_against=worst"], ["backtrack_against must be 'last' or 'best'", "'worst'"]),
        (["data.size=0"], ["data.size must be a whole number >= 1, or null for the whole image, got 0"]),
        (["diverged_gradient=skip"], ["diverged_gradient must be one of keep, drop, damp", "'skip'"]),
        (["diverged_gradient=damp", "optim._target_=torch.optim.SGD"], ["diverged_gradient=damp", "SGD does not have"]),
        # refused by torch's optimizer once the fit is under way: tried before it
        (["+optim.weight_decay=-1"], ["invalid optim settings: Invalid weight_decay value: -1"]),
        (["input=image"], ["input.path must be given: dip.inputs.ImageCode needs it (input.path=...)"]),
        (["~task"], ["~task: a run needs a config of the task group (choose from: demosaicing, denoising"]),
        (["+data.maks=m.png"], ["+data.maks: nothing reads a setting named 'data.maks' (did you mean data.mask?)"]),
        # a node built inside another (the operator's mask) is named as the user sets it
        (["task=inpainting", "mask.font_size=0"], ["invalid mask settings: font_size is a fraction"]),
        (["task=inpainting_bernoulli", "+mask.seed=1"], ["invalid mask settings: dip.physics.masks.BernoulliMask "
                                                          "takes no setting 'seed' (drop it with ~mask.seed"]),
    ],
)
def test_bad_settings_are_one_line_before_the_module_exists(args, needles):
    """In process, the refusals of the config, the input and the module that run.py prints as its one line
    (a representative of each above): the run's own start is seconds per case."""
    with pytest.raises(DipError) as refused:
        prepare(checked_config([*args, "trainer.max_steps=1", "logger=none"]))
    assert "\n" not in str(refused.value) and all(needle in str(refused.value) for needle in needles)


@pytest.mark.parametrize("keep", [False, True])
def test_outputs_that_cannot_be_written_are_one_line_and_the_checkpoint_resumes(tmp_path, keep):
    """A folder where restored.png goes (as a full disk would): the images written before it are removed,
    the last checkpoint is kept, and once the way is clear a run into the folder finishes from it. With
    checkpoint.keep, the last step's checkpoint replaces it only once the outputs are written."""
    out = tmp_path / "out"
    (out / "restored.png").mkdir(parents=True)
    cfg = compose_config(["data.size=32", "trainer.max_steps=3", "checkpoint.every_n_steps=2", "logger=none",
                          "arch=skip_depth2", f"checkpoint.keep={keep}"], output_dir=out)
    with pytest.raises(DipError) as refused:
        run(cfg, out)
    assert str(refused.value) == (f"cannot write {out / 'restored.png'}: Is a directory; the checkpoint "
                                  f"{out / 'checkpoint.ckpt'} is kept: the same command, once the outputs can be "
                                  f"written, resumes from it")
    assert sorted(path.name for path in out.iterdir()) == ["checkpoint.ckpt", "restored.png"]
    (out / "restored.png").rmdir()
    assert run(cfg, out).metrics["resumed_from_step"] == 2
    assert sorted(path.name for path in out.glob("checkpoint*")) == (["checkpoint.ckpt"] if keep else [])
    if keep:
        assert torch.load(out / "checkpoint.ckpt", weights_only=False)["global_step"] == 3


def test_outputs_that_fail_over_a_finished_run_s_leave_it_unfinished(tmp_path):
    """Continuing a finished run (checkpoint.keep) rewrites its images: when one cannot be written, those
    rewritten are removed, and the metrics.json that described the run before goes with them."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / "restored_ema.png").mkdir()
    image = torch.full((1, 1, 4, 4), 0.5)
    with pytest.raises(DipError, match=f"cannot write {out / 'restored_ema.png'}"):
        write_outputs(Result(image, image, image, image, metrics={"psnr": 1.0}), out)
    assert sorted(path.name for path in out.iterdir()) == ["restored_ema.png"]


@pytest.mark.parametrize("folder, needle", [("''", "hydra.run.dir is empty"),
                                            ("x" * 300, "cannot write there (File name too long)"),
                                            ("${nonexistent}", "/${nonexistent}: Interpolation key 'nonexistent' "
                                                               "not found"),
                                            # escaped, it is the folder's name, which Hydra's job then resolves
                                            ("a\\${b}c", "/a${b}c: a folder whose name holds '${' cannot be Hydra's")])
def test_a_run_folder_that_names_no_folder_is_one_line(tmp_path, folder, needle):
    """An empty name would write the run into the working directory; one too long for the file system
    failed with a traceback."""
    done = run_cli("data.size=32", "trainer.max_steps=1", "logger=none", f"hydra.run.dir={tmp_path}/{folder}"
                   if folder != "''" else f"hydra.run.dir={folder}")
    assert_one_line_error(done, needle)
    assert not (ROOT / "metrics.json").exists()


def test_a_quoted_run_folder_is_checked_as_hydra_reads_it(tmp_path):
    (tmp_path / "file").write_text("x")
    done = run_cli("data.size=32", "trainer.max_steps=1", "logger=none", f"hydra.run.dir='{tmp_path / 'file' / 'x'}'")
    assert_one_line_error(done, f"{tmp_path / 'file'} is a file, not a folder")


def test_a_finished_run_whose_record_is_damaged_is_one_line_and_its_record_stays(tmp_path):
    out = tmp_path / "out"
    command = ["data.size=32", "trainer.max_steps=1", "logger=none", "arch=skip_depth2", f"hydra.run.dir={out}"]
    assert run_cli(*command).returncode == 0
    record = (out / ".hydra" / "config.yaml").read_text()
    (out / ".hydra" / "config.yaml").write_text("a: [\n")
    assert_one_line_error(run_cli(*command), f"{out / '.hydra' / 'config.yaml'}, the record of the finished run")
    assert (out / ".hydra" / "config.yaml").read_text() == "a: [\n"  # Hydra's rewrite of it is undone
    (out / ".hydra" / "config.yaml").write_text(record)
    (out / "metrics.json").write_text("[1]")  # JSON, but no figures: it was an AttributeError's traceback
    assert_one_line_error(run_cli(*command), f"cannot read {out / 'metrics.json'}: delete it to run again")
    assert (out / "metrics.json").read_text() == "[1]"


def test_sigterm_before_the_fit_is_one_line_and_leaves_nothing(tmp_path):
    """As from a scheduler: Python's default would end the process silently, leaving the run's folder."""
    out = tmp_path / "out"
    done = run_cli_signalled(tmp_path, "dip.pipeline.prepare", "SIGTERM", "data.size=32", "trainer.max_steps=2",
                             "logger=none", f"hydra.run.dir={out}")
    assert done.returncode == 128 + signal.SIGTERM and done.stderr.rstrip().endswith("interrupted by SIGTERM")
    assert "Traceback" not in done.stderr and not out.exists()


def test_advice_to_run_again_reads_back_in_hydra_as_its_folder():
    """Letters beyond ASCII and ~ were left unquoted, which Hydra's parser refuses; an experiment's or a sweep's
    advice (continue_in) was not quoted at all: 'hydra.run.dir=/tmp/e sp' split in two in the shell."""
    parser = OverridesParser.create()
    for folder in ["runs/a", "résultats", "r~x", "null", "true", "12", "e sp", "a%b@c:d+e", "it's"]:
        (word,) = shlex.split(pasted_override("hydra.run.dir", folder))
        assert parser.parse_overrides([word])[0].value() == folder, folder
    interrupted = RunInterruptedError(signal.SIGTERM, 2, 9, Path("/tmp/e sp/sub/checkpoint.ckpt"))
    advice = interrupted.continue_in(Path("/tmp/e sp")).partition(" with ")[2].removesuffix(" to continue")
    (word,) = shlex.split(advice)
    assert parser.parse_overrides([word])[0].value() == "/tmp/e sp"


def test_a_sweep_job_whose_folder_another_run_is_writing_into_fails_and_leaves_it_alone(tmp_path):
    """Only the sweep's folder was held: a run going on in its job folder 0 had its outputs and record replaced
    by the job's, and both said they had finished."""
    sweep, job = tmp_path / "sweep", tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 1\n")  # the record of the run going on there
    (job / "restored.png").write_bytes(b"its output")
    with held_elsewhere(job):
        done = run_cli("-m", "seed=5,6", "data.size=32", "trainer.max_steps=1", "logger=none",
                       f"hydra.sweep.dir={sweep}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "sweep: 1 of 2 job(s) finished" in done.stdout and f"{job} is in use by another run" in done.stdout
    assert (job / ".hydra" / "config.yaml").read_text() == "seed: 1\n"
    assert (job / "restored.png").read_bytes() == b"its output" and not (job / "metrics.json").exists()
    assert (sweep / "1" / "metrics.json").is_file()


def test_a_folder_another_run_is_writing_into_is_refused_before_hydra_writes(tmp_path):
    """Two runs into one folder at once ended with one run's outputs beside the other's record, and "already
    finished" then described the wrong run."""
    out = tmp_path / "out"
    run = ["data.size=32", "trainer.max_steps=1", "logger=none", f"hydra.run.dir={out}"]
    with held_elsewhere(out):
        assert_one_line_error(run_cli(*run), f"{out} is in use by another run that is still going")
        assert list(out.iterdir()) == []  # Hydra wrote no record there
    assert run_cli(*run).returncode == 0 and (out / "metrics.json").is_file()  # its end let go of the folder


def test_the_run_folder_is_the_one_hydra_resolves_and_a_default_one_in_use_gives_way(tmp_path):
    """hydra.run.dir=DIR/seed${seed}: held, checked and cleaned up as written, it refused seed=2 while seed=1
    ran there, let DIR/seed1 (the same folder) in, and a finished run there was fitted again or replaced.
    The default folder (outputs/TASK/<time>) of a run started in the same second as another goes to <time>_2."""
    folder = f"{tmp_path}/${{task.name}}/seed${{seed}}"
    assert pinned_folder(["seed=3", f"hydra.run.dir={folder}"], "hydra.run.dir") == \
        ([f"hydra.run.dir='{tmp_path}/denoising/seed3'", "seed=3"], folder)
    swept = pinned_folder(["-m", "seed=1,2", "hydra.sweep.dir=sweeps/${now:%Y}"], "hydra.sweep.dir")
    assert swept[0] == ["-m", f"hydra.sweep.dir='sweeps/{time.strftime('%Y')}'", "seed=1,2"]
    job_named = ["hydra.run.dir=runs/${hydra.job.name}"]  # only Hydra's job knows it
    assert pinned_folder(job_named, "hydra.run.dir")[0] == job_named
    # Hydra's and OmegaConf's escapes: a folder ending in a backslash was refused by Hydra's parser once quoted
    for name in ["x\\", "it's", "a\\'b", "${not_interpolated}", "a\\${x}"]:
        pinned = pinned_folder([f"hydra.run.dir={hydra_quoted(f'{tmp_path}/{name}')}"], "hydra.run.dir")[0]
        assert run_folders(pinned) == [("hydra.run.dir", tmp_path / name)], name
        # the advice to run again, pasted into a shell: one word, the same folder (a space split it in two)
        assert run_folders(shlex.split(pasted_override("hydra.run.dir", tmp_path / f"my {name}"))) == \
            [("hydra.run.dir", tmp_path / f"my {name}")], name
        assert OmegaConf.select(compose_config(pinned), "hydra.run.dir") == f"{tmp_path}/{name}", name
    chosen = pinned_folder(["arch=skip_depth2", "hydra.run.dir=runs/${hydra:runtime.choices.arch}"], "hydra.run.dir")
    assert run_folders(chosen[0]) == [("hydra.run.dir", Path("runs/skip_depth2"))]
    arguments = [f"hydra.run.dir='{tmp_path / 'held'}'"]
    with held_elsewhere(tmp_path / "held"):
        assert held_run_folder(arguments, gives_way=True) == [f"hydra.run.dir='{tmp_path / 'held_2'}'"]
        with pytest.raises(SystemExit):  # a folder of one's own, named on the command line or in a config
            held_run_folder(arguments, gives_way=False)
    assert held_run_folder(arguments, gives_way=False) == arguments  # let go of: this process holds it now
    assert held_run_folder(arguments, gives_way=False) == arguments  # and holding it again is no conflict
    out = tmp_path / "runs"
    run = ["data.size=32", "trainer.max_steps=1", "logger=none", f"hydra.run.dir={out}/${{task.name}}"]
    assert run_cli(*run).returncode == 0 and (out / "denoising" / "metrics.json").is_file()
    again = run_cli(*run)
    assert again.returncode == 0 and f"already finished in {out / 'denoising'}" in again.stdout
    # a folder named by the job (not known before it starts) is Hydra's to make: no folder of the text itself
    job_named = [*run[:3], f"hydra.run.dir={tmp_path}/job/${{hydra.job.name}}"]
    assert run_cli(*job_named).returncode == 0
    assert [path.name for path in (tmp_path / "job").iterdir()] == ["cli"]
    # run into again, it fitted anew over the finished run, whose record Hydra had already replaced
    finished = (tmp_path / "job" / "cli" / "metrics.json").read_bytes()
    assert_one_line_error(run_cli(*job_named, "seed=5"), f"{tmp_path / 'job' / 'cli'} holds a finished run that was "
                                                         "not there when this command started")
    assert (tmp_path / "job" / "cli" / "metrics.json").read_bytes() == finished


@pytest.mark.parametrize("override", ["+hydra.run.dri", "hydra.run.dri"])
def test_a_typo_in_one_of_hydras_settings_is_one_line_with_the_name_meant(tmp_path, override):
    """+hydra.run.dri=DIR, as Hydra's own line advised for hydra.run.dri=DIR, ran into the default folder."""
    done = run_cli("data.size=32", "trainer.max_steps=1", "logger=none", f"{override}={tmp_path / 'x'}")
    assert_one_line_error(done, f"{override}={tmp_path / 'x'}: Hydra has no setting hydra.run.dri (did you mean "
                                "hydra.run.dir?)")
    assert not (tmp_path / "x").exists()
    # a name of one's own in an open mapping (beside sweep_summary, a callback named summary), a right one
    check_overrides(["+hydra.job.env_set.MY_SETTING=1", "hydra.job.chdir=true",
                     "+hydra.callbacks.summary={_target_:dip.sweeps.SweepSummary}"])


def test_a_sweep_folder_another_sweep_is_writing_into_is_refused(tmp_path):
    """Two sweeps into one folder both wrote job 0 there: one's result replaced the other's, their curves mixed,
    and the second's start deleted the first's list of failed jobs."""
    hold_folder(tmp_path / "sweep")  # as a sweep still going holds it
    done = run_cli("-m", "seed=1,2", "data.size=32", "trainer.max_steps=1", "logger=none",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert_one_line_error(done, f"{tmp_path / 'sweep'} is in use by another run that is still going")
    assert list((tmp_path / "sweep").iterdir()) == []


FULL_DISK_DRIVER = """import errno, runpy, sys
sys.path.insert(0, {root!r})
import hydra.core.utils

def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

hydra.core.utils._save_config = full_disk
sys.argv[0] = {script!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("folder", ["out", "${task.name}/seed${seed}"])
def test_a_full_disk_before_the_job_is_one_line_and_leaves_nothing(tmp_path, folder):
    """Hydra writes its record of the run before the job starts: on a full disk, its traceback, and a folder.
    The line names the folder Hydra resolved, not the command line's text for it."""
    driver = tmp_path / "full_disk.py"
    driver.write_text(FULL_DISK_DRIVER.format(root=str(ROOT), script=str(ROOT / "run.py")))
    done = run_cli("data.size=32", "trainer.max_steps=1", "logger=none", "seed=3",
                   f"hydra.run.dir={tmp_path / 'runs' / folder}", script=str(driver))
    resolved = tmp_path / "runs" / folder.replace("${task.name}", "denoising").replace("${seed}", "3")
    assert_one_line_error(done, f"cannot write into {resolved}: No space left on device")
    assert list(tmp_path.iterdir()) == [driver]


def test_an_os_error_of_a_generator_of_one_s_own_is_its_traceback_not_a_full_disk(tmp_path):
    """Any OSError out of the job was said to be Hydra's write failing ("cannot write into DIR"), and the
    folder, with the job's log, was removed."""
    (tmp_path / "mynets.py").write_text(
        "import torch\n\n\nclass Broken(torch.nn.Module):\n"
        "    def __init__(self, in_channels, out_channels, **kwargs):\n"
        "        super().__init__()\n        self.conv = torch.nn.Conv2d(in_channels, out_channels, 1)\n\n"
        "    def forward(self, z):\n        if z.device.type != 'meta':\n"
        "            open('/nonexistent/weights.bin')\n        return self.conv(z)\n")
    (tmp_path / "conf" / "arch").mkdir(parents=True)
    (tmp_path / "conf" / "arch" / "broken.yaml").write_text("_target_: mynets.Broken\n_partial_: true\n")
    out = tmp_path / "out"
    done = run_cli("--config-dir", str(tmp_path / "conf"), "arch=broken", "data.size=32", "trainer.max_steps=1",
                   "logger=none", f"hydra.run.dir={out}", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1 and "cannot write" not in done.stderr
    assert "Traceback" in done.stderr and "FileNotFoundError: [Errno 2] No such file or directory: " \
        "'/nonexistent/weights.bin'" in done.stderr
    assert (out / "cli.log").is_file()


def test_sigterm_once_the_wandb_run_started_leaves_nothing_and_keeps_an_earlier_runs_logs(tmp_path):
    """The offline W&B run (wandb/) that the job had started stayed behind, and with it the folder."""
    out = tmp_path / "out"
    run = ["data.size=32", "trainer.max_steps=1", "logger=wandb", f"hydra.run.dir={out}"]
    done = run_cli_signalled(tmp_path, "dip.pipeline.instantiate_settings", "SIGTERM", *run)
    assert done.returncode == 128 + signal.SIGTERM and done.stderr.rstrip().endswith("interrupted by SIGTERM")
    assert not out.exists()
    assert run_cli(*run, "checkpoint.keep=true").returncode == 0
    earlier = sorted(path.name for path in (out / "wandb").iterdir())
    done = run_cli_signalled(tmp_path, "dip.pipeline.instantiate_settings", "SIGTERM", *run[:-3], "trainer.max_steps=2",
                             "logger=wandb", "checkpoint.keep=true", f"hydra.run.dir={out}")
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    assert sorted(path.name for path in (out / "wandb").iterdir()) == earlier  # the continuation's own run gone


def test_a_refused_command_removes_only_the_run_folder_it_made_to_hold(tmp_path):
    """Refused because another run held the folder, a command removed that run's folder, still empty between
    its making and Hydra's first write, when it had noted the folder absent just before."""
    refused, run = EarlierRuns(), tmp_path / "run"
    refused.note_folders(run)
    run.mkdir()  # the other run's hold_folder
    refused.remove_unused_run_folder()
    assert run.is_dir()
    refused.held = True  # its own, made to hold it
    refused.remove_unused_run_folder()
    assert not run.exists()


def test_a_run_folder_that_is_a_link_is_left_to_its_owner_when_the_job_fails(tmp_path):
    """The failed job's clean-up called rmdir on the link: a traceback instead of the input's one line."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    assert_one_line_error(run_cli(f"data.path={tmp_path / 'missing.png'}", "logger=none",
                                  f"hydra.run.dir={tmp_path / 'link'}"), "missing.png", "not found")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real").is_dir()


def test_hydras_information_is_printed_with_no_folder_taken(tmp_path):
    """-i took the run folder written after it as its value: "invalid choice" instead of the information."""
    done = run_cli("-i", "searchpath")
    assert done.returncode == 0 and "Config search path" in done.stdout, done.stderr
    done = run_cli("-i")
    assert done.returncode == 0 and "Config search path" in done.stdout, done.stderr


def test_a_failed_job_points_w_and_b_s_links_back_at_the_earlier_run(tmp_path):
    """W&B points latest-run and its debug logs at each new run: those of a job that failed were left pointing
    at the run removed with it."""
    out = tmp_path / "out"
    logs = out / "wandb"
    (logs / "offline-run-1" / "logs").mkdir(parents=True)
    (logs / "latest-run").symlink_to("offline-run-1")
    (logs / "debug.log").symlink_to("offline-run-1/logs/debug.log")
    earlier = EarlierRuns()
    earlier.record([f"hydra.run.dir={out}"])
    (logs / "offline-run-2" / "logs").mkdir(parents=True)
    for link, target in (("latest-run", "offline-run-2"), ("debug.log", "offline-run-2/logs/debug.log")):
        (logs / link).unlink()
        (logs / link).symlink_to(target)
    earlier.discard(out)
    assert sorted(path.name for path in logs.iterdir()) == ["debug.log", "latest-run", "offline-run-1"]
    assert (os.readlink(logs / "latest-run"), os.readlink(logs / "debug.log")) == \
        ("offline-run-1", "offline-run-1/logs/debug.log")


def test_a_failed_run_removes_the_empty_folders_made_for_it_and_only_those(tmp_path):
    (tmp_path / "kept").mkdir()  # empty before the run: not the run's to remove
    out = tmp_path / "kept" / "new" / "deeper" / "out"
    done = run_cli(f"data.path={tmp_path / 'missing.png'}", "logger=none", f"hydra.run.dir={out}")
    assert_one_line_error(done, "missing.png")
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_a_failed_job_keeps_the_empty_folder_it_was_given(tmp_path):
    """A job that fails (a mask of another size) removed the folder it ran in when empty, even one there
    before: the working directory itself with hydra.run.dir=., which then ended in a traceback."""
    photo, mask = make_png(tmp_path / "photo.png", 24, 24), make_png(tmp_path / "mask.png", 16, 16, mode="L")
    (tmp_path / "mine").mkdir()
    done = run_cli("task=inpainting", f"data.path={photo}", f"data.mask={mask}", "logger=none",
                   f"hydra.run.dir={tmp_path / 'mine'}")
    assert_one_line_error(done, f"mask {mask} is 16x16 but the image is 24x24")
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


@pytest.mark.parametrize("overrides, message", [
    (["+optim.foo=1"], "invalid optim settings: torch.optim.Adam takes no setting 'foo'"),
    (["+trainer.foo=1"], "invalid trainer settings: pytorch_lightning.Trainer takes no setting 'foo'"),
    (["trainer.precision=bogus"], "invalid trainer settings: Precision 'bogus' is invalid"),
    (["seed=-1"], "seed must be a whole number from 0 to 4294967295, got -1"),
    (["restarts=abc"], "restarts must be a whole number >= 1, got 'abc'"),
    (["checkpoint.every_n_steps=-1"], "checkpoint.every_n_steps must be a whole number >= 0"),
    (["trainer.devices=2"], "trainer.devices=2: a restoration runs on one device"),
    # of a kind the constructor's annotation excludes, in a node built after the problem is read
    (["early_stop=discrepancy", "early_stop.delay=1.5"], "early_stop.delay must be a whole number (or null), got 1.5"),
    (["input.optimize=maybe"], "input.optimize must be true or false, got 'maybe'"),  # NoiseCode passes it on
    (["task=inpainting", "mask.text=2024"], "mask.text must be text, got the number 2024: quote it"),
    (["trainer.devices=[0,1]"], "trainer.devices=[0, 1]: a restoration runs on one device"),
    *([] if torch.cuda.is_available() else
      [(["trainer.accelerator=gpu"], "trainer.accelerator=gpu, but torch finds no CUDA GPU here"),
       (["speed.compile=true", "speed.compile_backend=cudagraphs"],  # was 28 lines of torch's warnings
        "speed.compile_backend=cudagraphs replays CUDA graphs, and this run is on the CPU")]),
])
def test_settings_torch_or_lightning_refuse_in_the_fit_are_refused_before_it(tmp_path, overrides, message):
    """In process (run.py turns the DipError into its one line); logger=csv: a Trainer that refuses
    its settings leaves no log behind either."""
    out = tmp_path / "out"
    cfg = compose_config([*overrides, "data.size=32", "trainer.max_steps=1", "logger=csv"], output_dir=out)
    with pytest.raises(DipError) as refused:
        run(cfg, out)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.parametrize("key, where", [("hydra.run.dir", "file"), ("hydra.run.dir", "file/run"),
                                        ("hydra.sweep.dir", "file/sweep"), ("hydra.run.dir", "link"),
                                        ("hydra.sweep.dir", "link/sweep")])
def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path, key, where):
    """A symbolic link to nothing said "File exists" of a folder that does not."""
    (tmp_path / "file").write_text("the user's")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    done = run_cli("-m" if key == "hydra.sweep.dir" else "seed=0", "trainer.max_steps=1", "logger=none",
                   f"{key}={tmp_path / where}")
    problem = (f"{tmp_path / 'file'} is a file, not a folder" if where.startswith("file") else
               f"{tmp_path / 'link'} is a symbolic link to {tmp_path / 'nowhere'}, which does not exist")
    assert_one_line_error(done, f"{key}={tmp_path / where}: {problem}")
    assert done.returncode == 2 and (tmp_path / "file").read_text() == "the user's"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "link"]


@pytest.mark.slow
def test_a_finished_runs_folder_is_kept_whatever_runs_into_it_again(tmp_path):
    """Into a folder a finished run filled: the same run again is reported, not rerun (before Lightning
    is imported); a run with other settings and a run with an impossible option are refused. Each time
    the earlier run's files and Hydra's record of it stay as they were; its log keeps its lines."""
    out = tmp_path / "out"
    run = ["trainer.max_steps=2", "data.size=32", "logger=none", f"hydra.run.dir={out}"]
    assert run_cli(*run).returncode == 0
    (out / "notes.txt").write_text("the user's")

    def files() -> dict:
        return {str(path.relative_to(out)): path.read_bytes() for path in out.rglob("*") if path.is_file()}

    before = files()
    assert {"metrics.json", "restored.png", ".hydra/config.yaml", "cli.log"} <= before.keys()
    psnr = json.loads(before["metrics.json"])["psnr"]
    again = run_cli_probing_lightning(tmp_path, *reversed(run))  # the same settings, in another order
    assert again.returncode == 0, again.stderr
    assert f"already finished in {out}: 2 steps, PSNR {psnr:.2f} dB" in again.stdout
    assert "lightning imported: False" in again.stdout
    refusals = [(["seed=1"], [f"{out} holds a finished run with other settings", "seed: 0 -> 1", "metrics.json"]),
                (["trainer.max_steps=3"], ["trainer.max_steps: 2 -> 3"]),
                (["metrics_every=0"], ["metrics_every"])]
    for extra, needles in refusals:
        assert_one_line_error(run_cli(*run, *extra), *needles)
    after = files()
    assert after.keys() == before.keys()
    assert {name: data for name, data in after.items() if name != "cli.log"} == \
        {name: data for name, data in before.items() if name != "cli.log"}
    assert after["cli.log"].startswith(before["cli.log"])


def test_an_image_replaced_at_the_same_path_is_not_taken_for_the_finished_or_kept_run(tmp_path):
    """The settings name the file; its contents, recorded in metrics.json and the checkpoint, tell a photo
    edited (or another one saved under its name) from the one restored."""
    photo = make_png(tmp_path / "photo.png", 24, 20, seed=1)
    finished, kept = tmp_path / "finished", tmp_path / "kept"
    run = [f"data.path={photo}", "logger=none"]
    assert run_cli(*run, "trainer.max_steps=2", f"hydra.run.dir={finished}").returncode == 0
    assert run_cli(*run, "trainer.max_steps=2", f"hydra.run.dir={kept}", "checkpoint.keep=true").returncode == 0
    recorded = json.loads((finished / "metrics.json").read_text())["input_sha256"]
    assert recorded == {"data.path": hashlib.sha256(photo.read_bytes()).hexdigest()}
    make_png(photo, 24, 20, seed=2)
    assert_one_line_error(run_cli(*run, "trainer.max_steps=2", f"hydra.run.dir={finished}"),
                          f"{finished} holds a finished run with other settings (data.path: its file's contents "
                          "changed, sha256")
    assert_one_line_error(run_cli(*run, "trainer.max_steps=3", f"hydra.run.dir={kept}", "checkpoint.keep=true"),
                          f"checkpoint {kept / 'checkpoint.ckpt'} was made with other settings (data.path: its file's")


@pytest.mark.slow
def test_a_finished_run_without_hydras_record_is_kept(tmp_path):
    """hydra.output_subdir=null writes no .hydra/: nothing says what the run there was, so nothing
    replaces it."""
    out = tmp_path / "out"
    run = ["trainer.max_steps=2", "data.size=32", "logger=none", "hydra.output_subdir=null", f"hydra.run.dir={out}"]
    assert run_cli(*run).returncode == 0
    finished = (out / "metrics.json").read_bytes()
    assert_one_line_error(run_cli(*run, "seed=1"), f"{out} holds a finished run without Hydra's record of its settings")
    assert (out / "metrics.json").read_bytes() == finished


@pytest.mark.slow  # the behaviour is also checked in process (test_resume) or by the other launchers
def test_a_run_that_kept_its_checkpoint_is_reported_finished_and_continued_with_more_steps(tmp_path):
    """``checkpoint.keep=true``: the same run again is reported finished (exit 0, as a sweep run again
    needs), a larger ``trainer.max_steps`` continues it from the kept checkpoint."""
    out = tmp_path / "out"
    run = ["data.size=32", "logger=none", "checkpoint.keep=true", f"hydra.run.dir={out}"]
    assert run_cli(*run, "trainer.max_steps=2").returncode == 0
    again = run_cli(*run, "trainer.max_steps=2")
    assert again.returncode == 0, again.stderr
    assert f"already finished in {out}: 2 steps" in again.stdout
    longer = run_cli(*run, "trainer.max_steps=3")
    assert longer.returncode == 0, longer.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["steps"], metrics["resumed_from_step"]) == (3, 2)


def test_a_missing_image_is_reported_before_lightning_is_imported(tmp_path):
    """The input is read first, so a mistyped path costs seconds, not the training stack's import."""
    out = tmp_path / "out"
    done = run_cli_probing_lightning(tmp_path, f"data.path={tmp_path / 'missing.png'}", "logger=none",
                                     f"hydra.run.dir={out}")
    assert_one_line_error(done, "missing.png", "not found")
    assert "lightning imported: False" in done.stdout
    assert not out.exists()


def test_mask_of_the_wrong_size_and_corrupt_files(tmp_path):
    image = make_png(tmp_path / "image.png", 32, 32)
    mask = make_png(tmp_path / "mask.png", 16, 32, mode="L")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    done = run_cli("task=inpainting", f"data.path={image}", f"data.mask={mask}", "logger=none",
                   f"hydra.run.dir={out}")
    assert_one_line_error(done, "mask.png is 16x32 but the image is 32x32")
    done = run_cli("task=inpainting", f"data.path={image}", f"data.mask={mask}", "data.size=8", "logger=none",
                   f"hydra.run.dir={out}")  # larger than the crop, but not the image it masks
    assert_one_line_error(done, "mask.png is 16x32 but the image is 8x8 (32x32 before data.size cropped it)")
    done = run_cli(f"data.path={corrupt}", "logger=none", f"hydra.run.dir={out}")
    assert_one_line_error(done, "cannot read image file", "corrupt.png")
    assert not out.exists()


def test_wandb_offline_run_holds_the_psnr(tmp_path):
    """An image's name is a tag of the run: W&B refused one over 64 characters, once the run's folder was made."""
    out, photo = tmp_path / "out", make_png(tmp_path / f"{'photo' * 16}.png", 32, 32)
    done = run_cli("trainer.max_steps=2", f"data.path={photo}", "logger=wandb", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    assert "wandb: WARNING" not in done.stderr  # offline without complaints
    # how to upload it, as a sweep's summary says
    assert done.stdout.rstrip().endswith(f"W&B: 1 offline run(s); upload with wandb sync {out}/wandb/offline-run-*")
    metrics = json.loads((out / "metrics.json").read_text())
    logged = offline_summary(offline_run_file(out))
    assert logged["psnr"] == pytest.approx(metrics["psnr"]) and logged["steps"] == 2
    info = offline_run_info(offline_run_file(out))
    assert info.run_group == "denoising" and list(info.tags) == ["skip", ("photo" * 16)[:64]]


def test_a_home_folder_is_put_in_quoted_and_the_rest_kept_as_written(monkeypatch):
    """Unquoted, a home folder holding a comma made the run folder a sweep's values; '~' alone kept its quote in
    the user's name, and was not expanded."""
    monkeypatch.setenv("HOME", "/tmp/a,b")
    assert home_expanded(["-m", "hydra.run.dir=~/r", "hydra.run.dir='~'", 'hydra.sweep.dir="~/s/${hydra:job.name}"',
                          "hydra.run.dir=~nosuchuser/r", "data.path='~/x.png'"]) == [
        "-m", "hydra.run.dir='/tmp/a,b/r'", "hydra.run.dir='/tmp/a,b'",
        'hydra.sweep.dir="/tmp/a,b/s/${hydra:job.name}"', "hydra.run.dir=~nosuchuser/r", "data.path='~/x.png'"]


def test_a_setting_the_jobs_environment_lacks_fails_each_job_in_one_line(tmp_path):
    """Left to the jobs, as their environment may set it: the shared-input check before them read it raw, a
    traceback."""
    done = run_cli("-m", "logger=none", "trainer.max_steps=${oc.env:DIP_TEST_UNSET}", "seed=0,1",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("trainer.max_steps: KeyError raised while resolving interpolation") == 2


@pytest.mark.parametrize("folder, made", [("~/runs/one", "runs/one"), ("~/runs/${hydra:job.name}", "runs/cli"),
                                          ("~", "."), (None, "runs/mine")])
def test_a_run_folder_under_the_home_folder_is_there_not_in_a_folder_named_tilde(tmp_path, folder, made):
    """An input file's ~ was the home folder; a run folder's made a folder named ~ in the working directory.
    None: a config file of one's own names it."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "home.yaml").write_text("# @package _global_\nhydra:\n  run:\n"
                                                                "    dir: ~/runs/mine\n")
    where = [f"hydra.run.dir='{folder}'"] if folder else ["+experiment=home"]
    done = run_cli("trainer.max_steps=1", "data.size=16", "logger=none", *where,
                   env={"HOME": str(tmp_path), "DIP_CONFIG_DIRS": str(tmp_path / "conf")})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / made / "metrics.json").is_file() and not (ROOT / "~").exists()


def test_an_input_that_only_the_jobs_environment_names_is_read_there(tmp_path):
    """Resolving every interpolation before the jobs refused what only they resolve: a variable that
    hydra.job.env_set (or a launcher) sets, and Hydra's own job values."""
    photo, sweep = make_png(tmp_path / "photo.png", 16, 16), tmp_path / "sweep"
    done = run_cli("-m", "trainer.max_steps=1", "logger=csv", f"+hydra.job.env_set.PHOTO={photo}",
                   "data.path=${oc.env:PHOTO}", "logger.name=log${hydra:job.num}", "seed=0,1",
                   f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    assert [path.relative_to(sweep).parts for path in sorted(sweep.glob("*/log*"))] == [("0", "log0"), ("1", "log1")]
    assert all(json.loads((sweep / job / "metrics.json").read_text())["input_sha256"]["data.path"] ==
               hashlib.sha256(photo.read_bytes()).hexdigest() for job in ("0", "1"))


def test_print_config():
    done = run_cli("--cfg", "job", "task=sr_x4")
    assert done.returncode == 0 and "LanczosDownsample" in done.stdout


@pytest.mark.parametrize("script, says", [
    ("run.py", "The benchmark group below is\nexperiments/benchmark.py's"),
    ("experiments/benchmark.py", "experiments/benchmark.py restores every image of a dataset"),
])
def test_help_names_the_script_and_what_it_does(script, says):
    done = run_cli("--help", script=script)
    assert done.returncode == 0 and done.stdout.startswith(script) and says in done.stdout
    assert "task: demosaicing, denoising, flash_no_flash" in done.stdout  # the groups, listed by Hydra


@pytest.mark.parametrize("where", ["--config-dir", "hydra.searchpath", "DIP_CONFIG_DIRS"])
def test_a_config_of_ones_own_outside_the_checkout(tmp_path, where):
    """Hydra's two ways to add a config folder, and the environment's: its options join the groups that
    the checks know."""
    mine = tmp_path / "my_conf"
    (mine / "arch").mkdir(parents=True)
    (mine / "arch" / "narrow.yaml").write_text("defaults: [skip_depth2]\nchannels_down: [8, 8]\nchannels_up: [8, 8]\n")
    added = {"--config-dir": ["--config-dir", str(mine)], "hydra.searchpath": [f"hydra.searchpath=[file://{mine}]"],
             "DIP_CONFIG_DIRS": []}[where]
    env = {"DIP_CONFIG_DIRS": str(mine)} if where == "DIP_CONFIG_DIRS" else None
    out = tmp_path / "out"
    done = run_cli(*added, "arch=narrow", "data.size=32", "trainer.max_steps=1", "logger=none", f"hydra.run.dir={out}",
                   env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["arch"] == "narrow"
    done = run_cli(*added, "arch=wide", "logger=none", f"hydra.run.dir={tmp_path / 'typo'}", env=env)
    assert_one_line_error(done, "unknown arch 'wide'", "narrow, pixels")
    # a flag at the end: the environment's folder went after it, where Hydra's parser refused it
    done = run_cli(*added, "arch=narrow", "--cfg", "job", env=env)
    assert done.returncode == 0 and "channels_down:\n  - 8\n  - 8" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("added", [["--config-dir", "no_such_conf"], ["hydra.searchpath=[file://no_such_conf]"], []])
def test_a_config_folder_that_is_not_there_is_one_line(tmp_path, added):
    """Hydra only warns about it, or says a group lacks the option the folder was to give ([]: DIP_CONFIG_DIRS)."""
    done = run_cli(*added, "arch=narrow", "logger=none", f"hydra.run.dir={tmp_path / 'out'}",
                   env=None if added else {"DIP_CONFIG_DIRS": "no_such_conf"})
    assert_one_line_error(done, "config folder no_such_conf not found")
    assert not (tmp_path / "out").exists()


def test_help_into_a_reader_that_has_left_says_nothing(tmp_path):
    """run.py --help | head: the pipe closes before the help is written (`true` leaves at once)."""
    done = subprocess.run(f"'{sys.executable}' run.py --help | true", shell=True, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.stderr == ""


@pytest.mark.parametrize("path, text, override, message", [
    ("task/broken.yaml", "task:\n  name: [oops\n", "task=broken", "(line 3) is not valid YAML: expected ',' or ']'"),
    ("task/half.yaml", "# @package _global_\ntask:\n  nme: half\n", "task=half",
     "the composed config has no task.name"),
    ("arch/whole.yaml", "_target_: dip.nets.ResNet\n", "arch=whole",
     "arch dip.nets.ResNet: its config needs _partial_: true"),
    ("arch/other.yaml", "_target_: torch.nn.Tanh\n_partial_: true\n", "arch=other",
     "arch torch.nn.Tanh takes no argument 'in_channels', which the framework passes"),
    # without its header, an experiment's settings went under experiment: and the default run ran, with no word
    ("experiment/short.yaml", "trainer:\n  max_steps: 2\noptim:\n  lr: 0.123\n", "+experiment=short",
     "experiment/short.yaml sets experiment.trainer, experiment.optim, which nothing reads: a file in "
     "conf/experiment/ that sets the run's settings starts with '# @package _global_'"),
])
def test_mistakes_in_a_config_of_ones_own_are_one_line(tmp_path, path, text, override, message):
    mine = tmp_path / "my_conf"
    (mine / path).parent.mkdir(parents=True)
    (mine / path).write_text(text)
    done = run_cli("--config-dir", str(mine), override, "logger=none", f"hydra.run.dir={tmp_path / 'out'}")
    assert_one_line_error(done, message)
    assert not (tmp_path / "out").exists()


def test_sweeps_of_every_kind_are_checked_before_hydra_starts(capsys):
    """A glob over a group is written out as a choice of its options here (Hydra's expansion needs a running
    app, and Optuna's sweeper has none), and a range or interval sweep of an added key is checked for
    whether anything reads the key."""
    globbed = expanded_globs(["-m", "arch=glob(skip_depth*,exclude=skip_depth6)", "hydra.run.dir=glob(x)"])
    assert globbed == ["-m", "arch=choice(skip_depth2,skip_depth4)", "hydra.run.dir=glob(x)"]
    assert check_overrides([*globbed, "logger=none"]).arch is not None
    assert check_overrides(["-m", "+optim.weight_decay=interval(0,0.1)", "logger=none"]) is not None
    for check, arguments, message in [
        (expanded_globs, ["arch=glob(nomatch*)"], "error: arch=glob(nomatch*): matches no arch (choose from: pixels, "),
        (check_overrides, ["+lrr=range(1,3)"], "error: +lrr: nothing reads a setting named 'lrr' (a typo?)"),
        (check_overrides, ["seed=range(0,3)", "optim.lrr=range(1,3)"], "error: optim.lrr: no such setting"),
    ]:
        with pytest.raises(SystemExit) as exited:
            check(["-m", *arguments, "logger=none"])
        assert exited.value.code == 2 and capsys.readouterr().err.startswith(message)


@pytest.mark.parametrize("search", [False, True])
def test_an_input_that_a_range_or_a_search_varies_is_left_to_each_job(tmp_path, monkeypatch, search):
    """A 32 px mask fits the jobs' 32 px crops, not the 128 px image that the other settings give."""
    mask = make_png(tmp_path / "mask.png", 32, 32, mode="L")
    sweep = ["-m", "data.size=range(32,33)"]
    if search:  # an Optuna search of one's own over the crop size
        (tmp_path / "hparams_search").mkdir()
        (tmp_path / "hparams_search" / "sizes.yaml").write_text(
            "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n"
            "hydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      data.size: choice(32)\n")
        monkeypatch.setenv("DIP_CONFIG_DIRS", str(tmp_path))
        sweep = ["+hparams_search=sizes"]
    assert check_overrides([*sweep, "task=inpainting", f"data.mask={mask}", "logger=none"]) is not None
