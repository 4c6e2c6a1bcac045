"""The warm Python that runs the command-line tests' scripts behaves as a fresh interpreter would."""

import pytest

from tests.conftest import WarmPython, cli_environment, run_cli

SCRIPT = """import os, sys
print(sys.argv[1:], os.getcwd(), os.environ.get("DIP_PROBE"), sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
print("to stderr", file=sys.stderr)
how = sys.argv[1]
if how == "exit":
    sys.exit(3)
if how == "message":
    sys.exit("a message")
if how == "raise":
    raise ValueError("uncaught")
if how == "interrupt":
    raise KeyboardInterrupt
if how == "logging":  # Lightning sets its logging up as it is imported, by whether the root logger has a handler
    import logging
    logging.basicConfig()
    import pytorch_lightning
    print("lightning propagates:", logging.getLogger("pytorch_lightning").propagate)
"""


@pytest.mark.parametrize("how", ["return", "exit", "message", "raise", "interrupt", "logging"])
def test_a_script_ends_as_in_a_fresh_interpreter(how, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    warm, fresh = (run_cli(how, "two words", script=str(script), env={"DIP_PROBE": "set"}, fresh=new)
                   for new in (False, True))
    assert (warm.returncode, warm.stdout) == (fresh.returncode, fresh.stdout)
    assert warm.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
    assert {"return": 0, "exit": 3, "message": 1, "raise": 1, "interrupt": -2, "logging": 0}[how] == warm.returncode
    assert warm.stdout.startswith(f"['{how}', 'two words'] ")
    assert warm.stdout.endswith("lightning propagates: True\n" if how == "logging" else " set True\n")


def test_a_start_up_setting_that_changed_since_the_warm_python_started_gets_a_fresh_one(monkeypatch, tmp_path):
    script = tmp_path / "threads.py"
    script.write_text("import os\nprint(os.environ['OMP_NUM_THREADS'])\n")
    run_cli(script=str(script))  # the warm Python is started by now
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # read as OpenMP starts: a forked child would run with the old one
    assert WarmPython.starts_differently(cli_environment())
    assert run_cli(script=str(script)).stdout == "3\n"
