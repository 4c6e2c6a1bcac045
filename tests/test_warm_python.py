"""The warm Python that runs the command-line tests' scripts behaves as a fresh interpreter would."""

import pytest

from tests.conftest import WarmPython, cli_environment, run_cli

SCRIPT = """import os, sys, tempfile
print(sys.argv[1:], os.getcwd(), os.environ.get("DIP_PROBE"), sys.path[0] == os.path.dirname(os.path.abspath(__file__)),
      tempfile.gettempdir() == os.environ["TMPDIR"])
print("to stderr", file=sys.stderr)
how = sys.argv[1]
if how == "exit":
    sys.exit(3)
if how == "negative":
    sys.exit(-1)
if how == "message":
    sys.exit("a message")
if how == "raise":
    raise ValueError("uncaught")
if how == "hook":  # wandb records a crash through its own hook
    sys.excepthook = lambda *error: print("the script's hook:", error[1], file=sys.stderr)
    raise ValueError("uncaught")
if how == "interrupt":
    raise KeyboardInterrupt
if how == "logging":  # Lightning sets its logging up as it is imported, by whether the root logger has a handler
    import logging
    logging.basicConfig()
    import pytorch_lightning
    print("lightning propagates:", logging.getLogger("pytorch_lightning").propagate)
"""
STATUS = {"return": 0, "exit": 3, "negative": 255, "message": 1, "raise": 1, "hook": 1, "interrupt": -2, "logging": 0}


@pytest.mark.parametrize("how", STATUS)
def test_a_script_ends_as_in_a_fresh_interpreter(how, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    warm, fresh = (run_cli(how, "two words", script=str(script), env={"DIP_PROBE": "set", "TMPDIR": str(tmp_path)},
                           fresh=new) for new in (False, True))
    assert (warm.returncode, warm.stdout) == (fresh.returncode, fresh.stdout)
    assert warm.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
    assert STATUS[how] == warm.returncode
    assert warm.stdout.startswith(f"['{how}', 'two words'] ")
    assert warm.stdout.endswith("lightning propagates: True\n" if how == "logging" else " set True True\n")
    assert (warm.stderr.splitlines()[-1] == "the script's hook: uncaught") is (how == "hook")


def test_each_child_draws_its_own_random_numbers(tmp_path):
    script = tmp_path / "draw.py"
    script.write_text("import random, numpy\nprint(random.random(), numpy.random.rand())\n")
    first, second = (run_cli(script=str(script)).stdout.split() for _ in range(2))
    assert first[0] != second[0] and first[1] != second[1]


def test_a_start_up_setting_that_changed_since_the_warm_python_started_gets_a_fresh_one(monkeypatch, tmp_path):
    script = tmp_path / "threads.py"
    script.write_text("import os\nprint(os.environ['OMP_NUM_THREADS'])\n")
    run_cli(script=str(script))  # the warm Python is started by now
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # read as OpenMP starts: a forked child would run with the old one
    assert WarmPython.starts_differently(cli_environment())
    assert run_cli(script=str(script)).stdout == "3\n"
