"""The command line's shared conventions: one checked ``--profile`` with one default (cpu) on
every command, the config and profile announced first, a checkpoint's recorded settings taken
(and a contradicting flag refused), ``--version``, help and default on every flag."""
import argparse
import importlib
import re
import tomllib
from pathlib import Path

import pytest
import torch

from lib.cli import COMMANDS, main
from lib.cli_args import DEFAULT_PROFILE, HelpFormatter
from lib.config import PROFILES, load_config
from lib.models import model_from_config

PROFILE_CHOICES = "{" + ",".join(sorted(PROFILES)) + "}"


def command_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=name, formatter_class=HelpFormatter)
    importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
    return parser


# ``methods`` lists the method registry: it reads no config and runs nothing.
@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"methods"}))
def test_every_command_has_the_checked_profile_defaulting_to_cpu(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())   # argparse wraps lines anywhere
    assert f"--profile {PROFILE_CHOICES}" in text
    help_of_profile = text.split(f"--profile {PROFILE_CHOICES}")[-1]
    assert re.search(r"\(default: cpu\b", help_of_profile), help_of_profile[:300]
    assert DEFAULT_PROFILE == "cpu"
    with pytest.raises(SystemExit) as exit_:   # a checked choice: a typo stops at parsing
        main([name, "--profile", "laptop", "--help"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_has_help_that_states_its_default(name):
    parser = command_parser(name)
    formatter = parser._get_formatter()
    missing = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        text = formatter._get_help_string(action) or ""
        says_default = "default" in text or "required" in text or action.required \
            or action.default is False   # a switch: off unless given
        if not action.help or not says_default:
            missing.append(f"{action.option_strings[0]}: {action.help!r}")
    assert not missing, missing


def test_version_is_the_pyproject_version(capsys):
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"python -m lib {pyproject['project']['version']}"
    import lib
    assert lib.__version__ == pyproject["project"]["version"]


def test_synthetic_profile_without_config_sizes_the_layout(tmp_path, capsys):
    assert main(["synthetic", "--layout", "nyuv2_3", "--profile", "tiny", "--root",
                 str(tmp_path / "syn"), "--num-train", "1", "--num-test", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "config nyuv2_3task, profile tiny"
    assert "(48x64)" in lines[-1]   # the tiny profile's image size, not the cpu one's 96x128


def test_a_command_without_profile_runs_cpu_and_says_so_first(tmp_path, capsys):
    # train fails on the missing data root, after announcing what it would run
    assert main(["train", "--config", "nyuv2_3task", "--data-root", str(tmp_path / "none"),
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().out.splitlines()[0] == "config nyuv2_3task, profile cpu"
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def pruned_tiny(tmp_path_factory):
    """A tiny base model pruned by ``python -m lib prune --profile tiny`` (data-free), and a
    tiny synthetic dataset to evaluate it on."""
    root = tmp_path_factory.mktemp("recorded")
    cfg = load_config("nyuv2_3task", profile="tiny")
    torch.manual_seed(0)
    torch.save(model_from_config(cfg).state_dict(), root / "base.pth")
    assert main(["prune", "--config", "nyuv2_3task", "--profile", "tiny", "--checkpoint",
                 str(root / "base.pth"), "--method", "random", "--tasks", "seg", "depth",
                 "--keep-ratio", "0.5", "--out", str(root / "pruned")]) == 0
    assert main(["synthetic", "--config", "nyuv2_3task", "--profile", "tiny", "--root",
                 str(root / "syn"), "--num-train", "1", "--num-test", "2"]) == 0
    pruned = next((root / "pruned").glob("*.pth"))
    return pruned, root / "syn"


def test_evaluate_takes_the_recorded_config_and_profile(pruned_tiny, tmp_path, capsys):
    pruned, data = pruned_tiny
    capsys.readouterr()
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(pruned), "--data-root", str(data),
                 "--out", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("config nyuv2_3task, profile tiny (recorded in ") and \
        pruned.stem in first
    assert out.is_file()
    # the same values given explicitly agree with the record
    assert main(["evaluate", "--checkpoint", str(pruned), "--data-root", str(data), "--config",
                 "nyuv2_3task", "--profile", "tiny", "--out", str(tmp_path / "m2.json")]) == 0


@pytest.mark.parametrize("command", ["evaluate", "finetune", "export"])
def test_a_contradicting_profile_is_refused_in_one_line(pruned_tiny, tmp_path, capsys, command):
    pruned, data = pruned_tiny
    flag = "--checkpoint" if command == "evaluate" else "--pruned"
    out = tmp_path / "out"
    extra = {"evaluate": ["--data-root", str(data), "--out", str(out)],
             "finetune": ["--data-root", str(data), "--run-dir", str(out)],
             "export": ["--out", str(out)]}[command]
    capsys.readouterr()
    assert main([command, flag, str(pruned), "--profile", "cpu", *extra]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --profile cpu contradicts")
    assert "profile tiny" in err and str(pruned.with_suffix(".json")) in err
    assert captured.out == "" and not out.exists()


def test_a_contradicting_config_is_refused_by_prune(pruned_tiny, tmp_path, capsys):
    pruned, _ = pruned_tiny
    capsys.readouterr()
    assert main(["prune", "--config", "cityscapes", "--checkpoint", str(pruned), "--method",
                 "random", "--tasks", "seg", "--keep-ratio", "0.5", "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--config cityscapes contradicts config nyuv2_3task" in err and pruned.stem in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_without_a_record_keeps_the_old_behaviour(tmp_path, capsys):
    cfg = load_config("nyuv2_3task", profile="tiny")
    torch.save(model_from_config(cfg).state_dict(), tmp_path / "base.pth")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "base.pth"), "--profile", "tiny",
                 "--data-root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--config is required" in err and "has no sidecar that records one" in err


@pytest.mark.parametrize("command", ["reproduce", "demo"])
def test_the_study_commands_announce_their_config_and_profile_first(command, tmp_path, capsys):
    # an unknown method stops them right after the announcement, before any work
    assert main([command, "--methods", "bogus", "--out", str(tmp_path / "out"), "--engine",
                 "serial"]) == 2
    assert capsys.readouterr().out.splitlines()[0] == "config nyuv2_3task, profile cpu"
    assert not (tmp_path / "out").exists()


def test_export_and_prune_announce_the_recorded_settings(pruned_tiny, tmp_path, capsys):
    pruned, _ = pruned_tiny
    capsys.readouterr()
    assert main(["export", "--pruned", str(pruned), "--out", str(tmp_path / "edge")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        f"config nyuv2_3task, profile tiny (recorded in {pruned.with_suffix('.json')})"
    # prune takes the config from the file's record, then refuses a pruned file as a base
    assert main(["prune", "--checkpoint", str(pruned), "--method", "random", "--tasks", "seg",
                 "--keep-ratio", "0.5", "--out", str(tmp_path / "again")]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("config nyuv2_3task, profile tiny (recorded in ")
    assert "is a pruned checkpoint" in captured.err and not (tmp_path / "again").exists()
