import subprocess
import sys

from lib.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_unknown_command_is_an_error(capsys):
    assert main(["frobnicate"]) == 2


def test_errors_are_one_line_without_traceback(tmp_path):
    missing = tmp_path / "nope.pth"
    proc = subprocess.run([sys.executable, "-m", "lib", "evaluate", "--config", "nyuv2_3task",
                           "--profile", "tiny", "--checkpoint", str(missing),
                           "--data-root", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
