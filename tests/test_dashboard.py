"""Bad input to the dashboard (``experiments/compare.py``) and the report scripts beside it: a run folder
it cannot read is a row naming the file and its fault; anything else is one ``error:`` line, exit status
2, no traceback and nothing half-written. Sweeps are made by hand here (no fits): a run folder is the
files compare.py reads."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from dip import sweeps
from tests.conftest import make_png, run_cli

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import compare  # noqa: E402

METRICS = {"arch": "skip", "device": "cpu", "psnr": 20.5, "psnr_ema": 20.1, "psnr_fit": 25.0, "seed": 0,
           "steps": 3, "steps_per_second": 10.0, "peak_mem_mb": 500.0, "peak_mem_source": "process_max_rss"}


def make_run(sweep: Path, job: str, metrics: dict | None = None, seed: int = 0) -> Path:
    """A finished run folder as a multirun leaves it (no curve logged): ``.hydra/``, the images and
    ``metrics.json`` (``metrics`` over ``METRICS``; a string is written as the file's text)."""
    run_dir = sweep / job
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "data": {"path": None, "observation": None, "default_image": "astronaut"}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    choices = {"hydra": {"runtime": {"choices": {"arch": "skip"}}}}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(choices))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
    make_png(run_dir / "observation.png", 16, 16, seed=seed)
    make_png(run_dir / "restored.png", 16, 16, seed=seed + 1)
    text = metrics if isinstance(metrics, str) else json.dumps({**METRICS, "seed": seed, **(metrics or {})})
    (run_dir / "metrics.json").write_text(text)
    return run_dir


def make_sweep(tmp_path: Path, jobs: int = 2) -> Path:
    sweep = tmp_path / "sweep"
    for job in range(jobs):
        make_run(sweep, str(job), seed=job)
    return sweep


def refused(argv: list[str], capsys, main=compare.main) -> str:
    """What ``main(argv)`` printed on stderr, having checked it stopped with status 2 and printed no more
    than one ``error:`` line."""
    with pytest.raises(SystemExit) as exited:
        code = main(argv)
        raise SystemExit(code)
    assert exited.value.code == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count("\n") == 1 and printed.err.startswith("error: "), printed.err
    return printed.err.rstrip("\n")


@pytest.mark.parametrize("text, fault", [
    ("[]", "holds a list, not an object of metrics"),
    ("[1]", "holds a list, not an object of metrics"),
    ("7", "holds a number, not an object of metrics"),
    ("{}", "no psnr_fit"),
    ('{"steps": 2}', "no psnr_fit"),
    ('{"psnr_fit": 3}', "no steps"),
    ('{"psnr": "x", "psnr_fit": 3, "steps": 2}', 'psnr is "x", not a finite number'),
    ('{"psnr_fit": [3, 4], "steps": 2}', "psnr_fit is [3, 4], not a finite number"),
    ('{"psnr_fit": true, "steps": 2}', "psnr_fit is true, not a finite number"),
    ('{"psnr_fit": 3, "steps": NaN}', "no steps"),
    ('{"psnr_fit": 3, "steps": "2"}', 'steps is "2", not a finite number'),
    ('{"psnr_fit": 3, "steps": 2, "device": 0}', "device is 0, not a string"),
])
def test_a_metrics_json_of_the_wrong_shape_is_an_unreadable_row(tmp_path, text, fault):
    sweep = make_sweep(tmp_path)
    (sweep / "1" / "metrics.json").write_text(text)
    page = compare.write_dashboard(sweep, sweep).read_text()
    assert "1 finished run(s), 1 unfinished or unreadable" in page
    assert f"unreadable: {sweep / '1' / 'metrics.json'}: {fault}" in page.replace("&quot;", '"')
    assert "<a href='0/'>0</a>" in page  # the other run is shown


@pytest.mark.parametrize("score", ["null", "NaN", "Infinity"])
def test_a_run_with_no_finite_score_is_listed_not_ranked(tmp_path, score):
    """A diverged fit's PSNRs are null (older runs wrote NaN or Infinity): the run is a row saying so,
    and the others are ranked on PSNR against the ground truth as before."""
    sweep = make_sweep(tmp_path, jobs=3)
    make_run(sweep, "3", seed=3)
    (sweep / "1" / "metrics.json").write_text(json.dumps({**METRICS, "psnr": None, "psnr_ema": None})
                                              .replace('"psnr_fit": 25.0', f'"psnr_fit": {score}'))
    page = compare.write_dashboard(sweep, sweep).read_text()
    assert "3 finished run(s), 1 with no finite psnr" in page
    assert "finished with no finite psnr (a diverged fit, or no ground truth)" in page
    assert "final psnr (mean" in page
    assert "<a href='1/'>" not in page and "<a href='0/'>0</a>" in page


def test_grouping_by_a_name_no_run_has_is_refused(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    refusal = refused([str(sweep), "--by", "optim.lrr"], capsys)
    assert refusal.startswith("error: --by optim.lrr: no run has a setting or result of that name")
    assert not (sweep / "dashboard.html").exists()
    assert "<td>0</td>" in compare.write_dashboard(sweep, sweep, by="seed").read_text()  # a config setting


def test_a_sweep_where_every_fit_diverged_is_refused(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    for job in ("0", "1"):
        (sweep / job / "metrics.json").write_text(json.dumps({**METRICS, "psnr": None, "psnr_fit": None}))
    refusal = refused([str(sweep)], capsys)
    assert refusal == f"error: {sweep}: no finished run has a finite psnr_fit (every fit diverged?)"
    assert not (sweep / "dashboard.html").exists()


@pytest.mark.parametrize("name, text, fault", [
    ("hydra.yaml", "[1]", "holds a list, not a mapping"),
    ("hydra.yaml", "hydra: 3", "its hydra is a number, not a mapping"),
    ("hydra.yaml", "hydra: {runtime: {choices: [a]}}", "its choices is a list, not a mapping"),
    ("config.yaml", "x", "holds a string, not a mapping"),
    ("config.yaml", "[1, 2]", "holds a list, not a mapping"),
    ("overrides.yaml", "{a: 1}", "holds a mapping, not a list of overrides"),
    ("overrides.yaml", "- a: b: c\n", "(line 1) is not valid YAML: mapping values are not allowed here"),  # unnamed
])
def test_a_hydra_record_of_the_wrong_shape_is_an_unreadable_row(tmp_path, name, text, fault):
    sweep = make_sweep(tmp_path)
    (sweep / "1" / ".hydra" / name).write_text(text)
    page = compare.write_dashboard(sweep, sweep).read_text()
    assert f"unreadable: {sweep / '1' / '.hydra' / name}{'' if fault.startswith('(') else ':'} {fault}" in page
    assert "<a href='0/'>0</a>" in page


def test_a_damaged_image_in_a_run_folder_is_a_cell_naming_it(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    (sweep / "1" / "restored.png").write_bytes((sweep / "1" / "restored.png").read_bytes()[:60])  # truncated
    (sweep / "0" / "observation.png").write_text("not an image")
    texts = []
    show = compare.show

    def recording_show(ax, picture, title, winner=False):
        show(ax, picture, title, winner)
        texts.extend(text.get_text() for text in ax.texts)

    compare.show = recording_show
    try:
        compare.main([str(sweep)])
    finally:
        compare.show = show
    assert capsys.readouterr().out == f"dashboard: {sweep / 'dashboard.html'}\n"
    assert (sweep / "image_grid.png").read_bytes()[:4] == b"\x89PNG"
    assert any(text.startswith("unreadable:\nobservation.png\n") for text in texts), texts
    assert any(text.startswith("unreadable:\nrestored.png\n") for text in texts), texts


def test_a_failed_job_kept_for_its_traceback_is_a_failure_not_an_unfinished_run(tmp_path):
    """It was counted twice: "1 unfinished or unreadable" and "1 job(s) failed"."""
    sweep = make_sweep(tmp_path)
    (sweep / "1" / "metrics.json").unlink()  # the job failed on a bug: its folder stays, for its traceback
    sweeps.record_failure(sweep, f"job 1 (seed=1): RuntimeError: boom (its traceback: {sweep / '1' / 'cli.log'})",
                          str(sweep / "1"))
    page = compare.write_dashboard(sweep, sweep).read_text()
    assert "1 finished run(s) in" in page and "unfinished" not in page.split("<style>")[0] + page.split("</style>")[1]
    assert "1 job(s) failed" in page and sweeps.sweep_jobs(sweep) == {sweep / "1": False}


def test_a_failed_jobs_list_that_is_not_utf8_is_read(tmp_path):
    sweep = make_sweep(tmp_path)
    (sweep / sweeps.FAILED_JOBS).write_bytes(b"job 1 (seed=1): \xff\xfe broken\n")
    assert sweeps.failed_jobs(sweep) == ["job 1 (seed=1): \ufffd\ufffd broken"]
    assert "failed: 1 job(s)" in sweeps.sweep_summary(sweep, {})
    assert "1 job(s) failed" in compare.write_dashboard(sweep, sweep).read_text()


def test_out_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    (tmp_path / "file").write_text("mine")
    assert refused([str(sweep), "--out", str(tmp_path / "file")], capsys) == (
        f"error: {tmp_path / 'file'}: not a folder (--out names the folder to write the dashboard into)")
    assert (tmp_path / "file").read_text() == "mine"
    under_a_file = tmp_path / "file" / "report"
    assert refused([str(sweep), "--out", str(under_a_file)], capsys).startswith(
        f"error: {under_a_file}: cannot write the dashboard there (")
    assert not list(sweep.glob("*.png")) and not (sweep / "dashboard.html").exists()


def test_nothing_is_written_when_the_page_cannot_be_made(tmp_path, capsys, monkeypatch):
    """The figures are written only with the page: a failure making it leaves the folder as it was."""
    sweep = make_sweep(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    (out / "dashboard.html").write_text("the old page")

    def fails(*args):
        raise compare.DipError("cannot make the table")

    monkeypatch.setattr(compare, "group_table", fails)
    assert refused([str(sweep), "--out", str(out)], capsys) == "error: cannot make the table"
    assert sorted(path.name for path in out.iterdir()) == ["dashboard.html"]
    assert (out / "dashboard.html").read_text() == "the old page"
    monkeypatch.undo()
    # one of the files it writes is a folder there: refused before anything is written
    (out / "image_grid.png").mkdir()
    assert refused([str(sweep), "--out", str(out)], capsys) == (
        f"error: {out / 'image_grid.png'}: a folder, where the dashboard writes its image_grid.png")
    assert sorted(path.name for path in out.iterdir()) == ["dashboard.html", "image_grid.png"]
    assert (out / "dashboard.html").read_text() == "the old page"


def test_the_commands_a_sweep_prints_can_be_pasted_into_a_shell(tmp_path, monkeypatch):
    """A folder name with a space split the dashboard's command in two ("unrecognized arguments")."""
    sweep = tmp_path / "my sweep"
    (make_run(sweep, "0") / "wandb" / "offline-run-20261207_000000-a").mkdir(parents=True)
    monkeypatch.chdir(ROOT)
    summary = sweeps.sweep_summary(sweep, {sweep / "0": True}).splitlines()
    lines = {line.split(":")[0].strip(): line for line in summary}
    assert shlex.split(lines["dashboard"])[1:] == ["python", "experiments/compare.py", str(sweep)]
    upload = next(line for line in summary if "wandb sync" in line)
    assert shlex.split(upload) == ["wandb", "sync", f"{sweep}/*/wandb/offline-run-*"]  # the shell expands the *


def test_runs_without_hydras_record_are_named_not_said_missing(tmp_path, capsys):
    """hydra.output_subdir=null: the summary offered the dashboard, which then found "no */metrics.json"."""
    sweep = tmp_path / "sweep"
    shutil.rmtree(make_run(sweep, "0") / ".hydra")
    summary = sweeps.sweep_summary(sweep, {sweep / "0": True})
    assert "sweep: 1 of 1 job(s) finished" in summary and "dashboard:" not in summary
    assert refused([str(sweep)], capsys) == (f"error: {sweep}: no run with Hydra's record of its settings, which the "
                                             f"dashboard compares: 1 finished run(s) without .hydra/config.yaml "
                                             f"(hydra.output_subdir=null?), such as {sweep / '0'}")


def test_an_experiments_sub_runs_are_read_from_their_config_yaml(tmp_path, capsys):
    """An experiment (fig. 8's architectures, say) leaves Hydra's record in its own folder, which holds no
    result, and each sub-run's composed config.yaml beside its metrics.json, with no .hydra/: the dashboard
    refused it as runs "without .hydra/config.yaml (hydra.output_subdir=null?)"."""
    experiment = make_run(tmp_path, "fig8")
    (experiment / "metrics.json").unlink()  # the experiment's folder: Hydra's record, no result of its own
    for index, (arch, lr) in enumerate([("skip_depth2", 0.01), ("unet", 0.001)]):
        sub_run = experiment / arch
        sub_run.mkdir()
        config = {"arch_name": arch, "optim": {"lr": lr}, "seed": 0,
                  "data": {"path": "/data/library.png", "observation": None, "default_image": "astronaut"}}
        (sub_run / "config.yaml").write_text(yaml.safe_dump(config))
        (sub_run / "metrics.json").write_text(json.dumps({**METRICS, "arch": arch, "psnr": 20.0 + index}))
        make_png(sub_run / "restored.png", 16, 16, seed=index)
    compare.main([str(experiment)])
    assert capsys.readouterr().out == f"dashboard: {experiment / 'dashboard.html'}\n"
    page = (experiment / "dashboard.html").read_text()
    assert "2 finished run(s) in" in page and "class='unfinished'" not in page  # nor the experiment's folder
    assert "<a href='skip_depth2/'>skip_depth2</a></td><td>skip_depth2</td><td>library</td>" in page
    assert "<tr><td>unet</td><td>1</td><td>21.00</td>" in page
    assert "<tr><td>0.001</td><td>1</td>" in compare.write_dashboard(experiment, experiment, by="optim.lr").read_text()
    run = compare.read_run(experiment / "unet", "unet")
    assert (run.choices, run.overrides, run.config["optim.lr"]) == ({"arch": "unet"}, [], 0.001)


@pytest.mark.parametrize("device, steps", [("cuda:0", 3000), ("cpu", 500), (None, "${profile:3000,500}")])
def test_a_jobs_settings_are_read_as_it_resolved_them(tmp_path, device, steps):
    """Hydra records a job's config as composed: sr_x4's and sr_x8's runs were one group, "sr_x${task.physics.factor}".
    profile=auto is resolved as the job chose it, by its device; an unfinished job's, not at all."""
    run_dir = make_run(tmp_path, "job", {"device": device} if device else None)
    if device is None:
        (run_dir / "metrics.json").unlink()
    config = {"profile": "auto", "task": {"name": "sr_x${task.physics.factor}", "physics": {"factor": 8}},
              "trainer": {"max_steps": "${profile:3000,500}"}, "log_name": "${hydra:job.name}",
              "optim": {"betas": ["${optim.beta}", 0.999], "beta": 0.9, "named": "${optim.chosen}", "chosen": {"a": 1}},
              # what the job's environment and Hydra gave: not the dashboard's
              "logger": {"group": "${sweep_name:${task.name}}", "job_type": "${task.name}"},
              "data": {"root": "${oc.env:HOME,data}", "under": "${data.root}/x", "bracketed": "${data[root]}/y",
                       "dashed": "${my-dir}/z", "path": "a/bird.png"},
              "my-dir": "${oc.env:HOME}", "spaced": "${ oc.env:HOME }",
              "image_name": "${image_name:${data.path},null,y}",
              "model": {"beta": 0.5, "relative": "${.beta}"}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    settings = compare.read_run(run_dir, "job").config
    assert settings["task.name"] == "sr_x8" and settings["optim.betas"] == [0.9, 0.999]
    assert settings["optim.named"] == {"a": 1} and settings["logger.job_type"] == "sr_x8"
    assert [settings[key] for key in ("logger.group", "data.root", "data.under", "data.bracketed", "data.dashed",
                                      "spaced")] == [config["logger"]["group"], *list(config["data"].values())[:4],
                                                     config["spaced"]]
    assert (settings["image_name"], settings["model.relative"]) == ("bird", 0.5)
    assert settings["trainer.max_steps"] == steps and settings["log_name"] == "${hydra:job.name}"


def test_images_that_share_a_file_stem_get_rows_of_their_own():
    """Two folders' photo.png (or one image under two tasks) were one row of the grid, showing the first
    one's observation, and one "best" run over both."""
    def run(name: str, **config) -> compare.Run:
        settings = {"data.path": "/a/photo.png", "data.default_image": "astronaut", "task.name": "denoising", **config}
        return compare.Run(path=Path(name), name=name, overrides=[], config=settings, choices={}, metrics={})

    runs = [run("0"), run("1", **{"data.path": "/b/photo.png"}), run("2"), run("3", **{"data.path": "/c/other.png"})]
    compare.label_images(runs)
    assert [r.image for r in runs] == ["photo (data.path=/a/photo.png)", "photo (data.path=/b/photo.png)",
                                       "photo (data.path=/a/photo.png)", "other"]
    by_task = [run("0"), run("1", **{"task.name": "jpeg"})]
    compare.label_images(by_task)
    assert [r.image for r in by_task] == ["photo (task.name=denoising)", "photo (task.name=jpeg)"]


def test_a_run_in_the_folder_of_a_job_that_failed_is_an_earlier_sweeps_also_in_a_relative_sweep_folder(
        tmp_path, monkeypatch):
    """The jobs' folders are absolute (Hydra's), a sweep's given relative: they were never equal."""
    monkeypatch.chdir(tmp_path)
    make_run(Path("sweep"), "0")
    summary = sweeps.sweep_summary(Path("sweep"), {tmp_path / "sweep" / "0": False})
    assert "sweep: 0 of 1 job(s) finished in sweep; 1 run(s) of earlier sweeps there too" in summary
    assert "earlier" not in sweeps.sweep_summary(Path("sweep"), {tmp_path / "sweep" / "0": True})


def test_an_earlier_experiment_job_counts_once_and_its_sub_runs_not_as_runs_of_their_own(tmp_path):
    """Two earlier jobs, one an experiment with two sub-runs, were counted as 4 runs of earlier sweeps."""
    sweep = tmp_path / "sweep"
    make_run(sweep, "0")
    (sweep / "1" / ".hydra").mkdir(parents=True)  # an experiment's job: its runs are its sub-runs
    for sub_run in ("run0", "run1"):
        make_run(sweep / "1", sub_run)
        shutil.rmtree(sweep / "1" / sub_run / ".hydra")
    make_run(sweep, "x7")
    summary = sweeps.sweep_summary(sweep, {sweep / "x7": True})
    assert f"sweep: 1 of 1 job(s) finished in {sweep}; 2 run(s) of earlier sweeps there too" in summary
    # this sweep's experiment job: its sub-runs are its own, whether it finished or failed part-way
    assert "of earlier sweeps" not in sweeps.sweep_summary(sweep, {sweep / "0": True, sweep / "1": False,
                                                                   sweep / "x7": True})


def test_a_sweep_whose_jobs_all_failed_says_so(tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    sweeps.record_failure(sweep, "job 0 (data.path=a.png): image file not found: a.png", str(sweep / "0"))
    summary = sweeps.sweep_summary(sweep, {sweep / "0": False})
    assert "sweep: 0 of 1 job(s) finished" in summary and "dashboard:" not in summary and "failed: 1 job(s)" in summary
    assert refused([str(sweep)], capsys) == (f"error: {sweep}: no finished run (no */metrics.json under it); "
                                             f"1 job(s) failed, listed in {sweep / sweeps.FAILED_JOBS}")
    make_run(sweep, "1")
    monkeypatch.chdir(ROOT)
    assert "dashboard: python experiments/compare.py" in sweeps.sweep_summary(sweep, {sweep / "1": True})
    monkeypatch.chdir(tmp_path)  # a sweep run from outside the checkout: a command that works there
    assert f"dashboard: python {sweeps.COMPARE_SCRIPT} {sweep}" in sweeps.sweep_summary(sweep, {sweep / "1": True})
    assert sweeps.COMPARE_SCRIPT.is_file()


def test_a_sweep_whose_only_runs_are_damaged_names_them(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    make_run(sweep, "0", "[1]")
    make_run(sweep, "1", "{damaged")
    assert refused([str(sweep)], capsys) == (
        f"error: {sweep}: no finished run it can read: {sweep / '0' / 'metrics.json'}: holds a list, not an "
        "object of metrics (and 1 more unreadable)")
    assert not list(sweep.glob("*.png"))


@pytest.mark.parametrize("script, argv, fault", [
    ("compare", ["--bogus", "x"], "unrecognized arguments: --bogus"),
    ("compare", [], "the following arguments are required: sweep_dir"),
    ("collapse_report", [], "the following arguments are required: paths"),
    ("collapse_report", ["x.csv", "--drop-db", "-1"], "argument --drop-db: must be a finite number above 0, got -1"),
    ("collapse_report", ["x.csv", "--drop-db", "nan"], "argument --drop-db: must be a finite number above 0, got nan"),
    ("collapse_report", ["x.csv", "--drop-db", "0"], "argument --drop-db: must be a finite number above 0, got 0"),
    ("collapse_report", ["x.csv", "--drop-db", "five"], "argument --drop-db: 'five' is not a number"),
    ("early_stop_report", ["a", "b"], "unrecognized arguments: b"),
])
def test_a_bad_command_line_is_one_error_line(script, argv, fault, capsys):
    main = __import__(f"experiments.{script}", fromlist=["main"]).main
    assert refused(argv, capsys, main) == f"error: {fault} (see {Path(sys.argv[0]).name} -h)"


@pytest.mark.parametrize("name, fault", [("missing", "no such sweep folder"),
                                         ("file.txt", "a file, not a sweep folder")])
def test_a_sweep_folder_that_is_not_one_is_named(tmp_path, name, fault):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(compare.DipError, match=f"^{re.escape(str(tmp_path / name))}: {fault}$"):
        compare.write_dashboard(tmp_path / name, tmp_path)


def test_a_bad_command_line_as_the_user_runs_it():
    done = run_cli("x.csv", "--drop-db", "-1", script="experiments/collapse_report.py")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("error: argument --drop-db: must be a finite number above 0, got -1 "
                           "(see collapse_report.py -h)\n")


def test_the_early_stop_report_takes_an_image_name_that_is_a_number(tmp_path, capsys):
    from experiments.early_stop_report import main

    (tmp_path / "run" / "images" / "five").mkdir(parents=True)
    (tmp_path / "run" / "images" / "five" / "metrics.json").write_text('{"image": 5, "psnr_ema": 30.0}')
    assert main([str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "| 5 | - | 30.00 | - | - | - | - | - |"
