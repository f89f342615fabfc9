"""The command line's shared conventions: one checked ``--profile`` with one default (cpu) on
every command, the config and profile announced first, a checkpoint's recorded settings taken
(and a contradicting flag refused), ``--version``, help and default on every flag."""
import argparse
import json
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
    assert main(["synthetic", "--layout", "nyuv2_3", "--profile", "tiny", "--out",
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
    assert main(["synthetic", "--config", "nyuv2_3task", "--profile", "tiny", "--out",
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
    flag = "--checkpoint"
    out = tmp_path / "out"
    extra = {"evaluate": ["--data-root", str(data), "--out", str(out)],
             "finetune": ["--data-root", str(data), "--out", str(out)],
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
    assert main(["export", "--checkpoint", str(pruned), "--out", str(tmp_path / "edge")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        f"config nyuv2_3task, profile tiny (recorded in {pruned.with_suffix('.json')})"
    # prune takes the config from the file's record, then refuses a pruned file as a base
    assert main(["prune", "--checkpoint", str(pruned), "--method", "random", "--tasks", "seg",
                 "--keep-ratio", "0.5", "--out", str(tmp_path / "again")]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("config nyuv2_3task, profile tiny (recorded in ")
    assert "is a pruned checkpoint" in captured.err and not (tmp_path / "again").exists()


# ----------------------------------------------------------------------------- shared groups
# Every flag declared once in lib.cli_args, with the commands that must have it.
# ``methods`` lists the registry: no config, no data, no output, no progress, so no shared option.
RUNS = set(COMMANDS) - {"methods"}
SHARED = {"--config": RUNS - {"demo"}, "--profile": RUNS, "--set": RUNS, "--seed": RUNS,
          "--quiet": RUNS, "--out": RUNS,
          "--data-root": {"train", "finetune", "evaluate", "prune", "export", "reproduce"},
          "--device": {"train", "finetune", "evaluate", "prune", "reproduce"},
          "--num-workers": {"train", "finetune", "evaluate", "prune", "reproduce"},
          "--amp": {"train", "finetune", "evaluate", "reproduce"},
          "--channels-last": {"train", "finetune", "evaluate", "reproduce"},
          "--num-batches": {"prune", "export", "reproduce"}}
# What a command's own flag of a shared name means instead (its help says so).
OWN_MEANING = {("synthetic", "--num-workers"): "render in this many worker processes"}
# Renamed flags: (command, old name, new name, the rest of a parseable command line).
RENAMED = [("finetune", "--pruned", "--checkpoint", ["--out", "r"]),
           ("finetune", "--run-dir", "--out", ["--checkpoint", "p.pth"]),
           ("train", "--run-dir", "--out", ["--config", "nyuv2_3task"]),
           ("export", "--pruned", "--checkpoint", ["--out", "o"]),
           ("export", "--base", "--checkpoint", ["--out", "o"]),
           ("reproduce", "--base-checkpoint", "--checkpoint", []),
           ("reproduce", "--selection", "--tasks", []),
           ("reproduce", "--finetune-iters", "--max-iters", []),
           ("synthetic", "--root", "--out", []),
           ("synthetic", "--workers", "--num-workers", ["--out", "d"]),
           ("export", "--engine", "--latency-engine", ["--out", "o"])]


def _before_default(text: str) -> str:
    return text.split(" (default")[0]


def _actions(name: str) -> dict[str, argparse.Action]:
    return {flag: action for action in command_parser(name)._actions
            for flag in action.option_strings}


def test_shared_flags_have_one_declaration_everywhere():
    """Same name, same help (up to what the default is) in every command that has the concept,
    and in the help's shared group."""
    helps: dict[str, set[str]] = {flag: set() for flag in SHARED}
    for name in COMMANDS:
        parser = command_parser(name)
        group = next((g for g in parser._action_groups if g.title == "shared options"), None)
        if name not in RUNS:
            assert group is None and not set(_actions(name)) & set(SHARED), name
            continue
        in_group = {flag for action in group._group_actions for flag in action.option_strings}
        actions = _actions(name)
        for flag, commands in SHARED.items():
            if name not in commands:
                assert flag not in actions or (name, flag) in OWN_MEANING, (name, flag)
                continue
            assert flag in actions and flag in in_group, (name, flag)
            if (name, flag) in OWN_MEANING:
                assert actions[flag].help.startswith(OWN_MEANING[name, flag])
            elif flag not in ("--config", "--out"):   # what these name is the command's
                helps[flag].add(_before_default(actions[flag].help))
    differing = {flag: texts for flag, texts in helps.items()
                 if len(texts) != 1 and flag not in ("--config", "--out")}
    assert not differing, differing


@pytest.mark.parametrize("name", sorted(RUNS))
def test_help_shows_the_shared_group_and_no_old_name(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = capsys.readouterr().out
    assert "shared options:" in text
    for flag, commands in SHARED.items():
        if name in commands:
            assert re.search(rf"^\s+{re.escape(flag)}\b", text, re.M), (name, flag)
    for command, old, _, _ in RENAMED:
        if command == name:
            assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", text), (name, old)


@pytest.mark.parametrize("name, old, new, rest", RENAMED,
                         ids=[f"{c}{o}" for c, o, _, _ in RENAMED])
def test_an_old_flag_name_works_with_a_one_line_note(name, old, new, rest, capsys):
    value = {"--selection": ["seg", "depth"], "--finetune-iters": ["3"],
             "--workers": ["2"], "--engine": ["torch"]}.get(old, ["x.pth"])
    parser = command_parser(name)
    via_new = parser.parse_args([*rest, new, *value])
    capsys.readouterr()
    via_old = parser.parse_args([*rest, old, *value])
    assert capsys.readouterr().err == f"{old} is deprecated; use {new}\n"
    assert {k: v for k, v in vars(via_old).items() if not k.startswith("_")} == \
        {k: v for k, v in vars(via_new).items() if not k.startswith("_")}


def test_one_setting_under_two_names_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--pruned", "a.pth", "--base", "b.pth", "--out", "o"])
    assert exit_.value.code == 2
    assert "error: --pruned and --base both set --checkpoint; give it once" in \
        capsys.readouterr().err


# ----------------------------------------------------------------------------- KEY=VALUE
def test_parse_key_values_has_one_literal_rule_and_one_line_errors():
    from lib.cli_args import parse_key_values

    assert parse_key_values(["a=10", "b=0.5", "c=True", "d=[1, 2]", "e=present", "f=x=y",
                             "g="], "--x") == \
        {"a": 10, "b": 0.5, "c": True, "d": [1, 2], "e": "present", "f": "x=y", "g": ""}
    assert parse_key_values([], "--x") == {} and parse_key_values(None, "--x") == {}
    for bad in ("novalue", "=5"):
        with pytest.raises(ValueError) as err:
            parse_key_values(["a=1", bad], "--sparse-option")
        assert str(err.value) == f"--sparse-option {bad!r}: expected KEY=VALUE"


@pytest.mark.parametrize("argv, flag", [
    (["train", "--config", "nyuv2_3task", "--out", "r", "--sparse", "rigl", "--sparsity", "50",
      "--sparse-option", "interval"], "--sparse-option"),
    (["reproduce", "--metric-option", "miou", "--engine", "serial"], "--metric-option"),
    (["prune", "--config", "nyuv2_3task", "--checkpoint", "b.pth", "--tasks", "seg",
      "--keep-ratio", "0.5", "--out", "o", "--set", "BATCH_SIZE"], "--set")])
def test_every_key_value_flag_reports_the_bad_item(argv, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = argv[-1] if flag != "--metric-option" else "miou"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} {bad!r}: expected KEY=VALUE" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- --quiet, records
@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_silences_the_progress_bars(pruned_tiny, tmp_path, capsys, quiet):
    pruned, data = pruned_tiny
    base = pruned.parent.parent / "base.pth"
    flag = ["--quiet"] if quiet else []
    capsys.readouterr()
    assert main(["prune", "--config", "nyuv2_3task", "--profile", "tiny", "--checkpoint",
                 str(base), "--method", "snip", "--tasks", "seg", "--keep-ratio", "0.5",
                 "--num-batches", "1", "--data-root", str(data), "--out", str(tmp_path / "p"),
                 *flag]) == 0
    assert main(["evaluate", "--checkpoint", str(pruned), "--data-root", str(data), "--out",
                 str(tmp_path / "m.json"), *flag]) == 0
    err = capsys.readouterr().err
    for bar in ("SNIP scores", "evaluate"):
        assert (bar in err) != quiet, (bar, err[-300:])


def test_train_records_config_profile_and_tasks_for_later_commands(pruned_tiny, tmp_path,
                                                                    capsys):
    _, data = pruned_tiny
    run = tmp_path / "base"
    assert main(["train", "--config", "nyuv2_3task", "--profile", "tiny", "--data-root",
                 str(data), "--out", str(run), "--max-iters", "1", "--quiet", "--selection",
                 "test"]) == 0
    side = run / "base_model.json"
    meta = json.loads(side.read_text())["meta"]
    assert (meta["config"], meta["profile"]) == ("nyuv2_3task", "tiny")
    assert meta["selected_tasks"] == list(load_config("nyuv2_3task", "tiny").TASKS)
    capsys.readouterr()
    prune = ["prune", "--checkpoint", str(run / "base_model.pth"), "--method", "random",
             "--tasks", "seg", "--keep-ratio", "0.5"]
    assert main([*prune, "--out", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        f"config nyuv2_3task, profile tiny (recorded in {side})"
    assert main([*prune, "--profile", "cpu", "--out", str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --profile cpu contradicts "
                                                         f"profile tiny recorded in {side}")
    assert not (tmp_path / "p2").exists()
    assert main(["evaluate", "--checkpoint", str(run / "base_model.pth"), "--data-root",
                 str(data), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(f"(recorded in {side})")


# ----------------------------------------------------------------------------- the README
def readme_cli_lines() -> list[str]:
    """The ``python -m lib`` lines of the README's command-line block, continuations joined."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = text.split("The same steps run from the command line")[1].split("```bash\n")[1]
    block = block.split("```")[0].replace("\\\n", " ")
    return [line for line in block.splitlines() if line.startswith("python -m lib ")]


# What makes each line of the laptop sequence tiny, without changing what it runs with.
TINY = {"synthetic": ["--num-train", "16", "--num-test", "4"],
        "train": ["--max-iters", "2", "--quiet", "--num-workers", "0"],
        "prune": ["--num-batches", "1", "--quiet", "--num-workers", "0"],
        "finetune": ["--max-iters", "2", "--quiet", "--num-workers", "0"],
        "evaluate": ["--quiet", "--num-workers", "0"], "export": ["--quiet"]}


def test_the_readme_cli_runs_as_written_without_profile(tmp_path, capsys, monkeypatch):
    """Every line parses with no deprecation note; the laptop sequence (synthetic ... export)
    runs as written, at the default profile, each command after train taking the settings
    the files record."""
    import shlex

    lines = readme_cli_lines()
    assert [shlex.split(line)[3] for line in lines][:6] == list(TINY)
    for line in lines:
        argv = shlex.split(line, comments=True)[3:]
        command_parser(argv[0]).parse_args(argv[1:])
        assert "deprecated" not in capsys.readouterr().err, line
    monkeypatch.chdir(tmp_path)
    for line in lines[:6]:
        argv = shlex.split(line, comments=True)[3:]
        assert "--profile" not in argv, line
        assert main([*argv, *TINY[argv[0]]]) == 0, line
        first = capsys.readouterr().out.splitlines()[0]
        assert first.startswith("config nyuv2_3task, profile cpu"), (line, first)
        if argv[0] not in ("synthetic", "train"):
            assert "(recorded in " in first, (line, first)
    assert (tmp_path / "runs" / "edge" / "export_summary.json").is_file()


@pytest.mark.parametrize("progress", [True, False])
def test_the_library_takes_progress(tiny_setup, tmp_path, capsys, progress):
    """``prune``, ``train``, ``finetune`` and ``evaluate`` show their bars unless
    ``progress=False`` (``train``/``finetune`` keep their tensorboard log either way)."""
    import copy

    from conftest import BatchItems
    from lib.pruning import prune
    from lib.training import evaluate, finetune, train

    cfg, net, criterion, batches = tiny_setup
    loader = torch.utils.data.DataLoader(BatchItems(batches[0]), batch_size=2)
    capsys.readouterr()
    pruned = prune("snip", net, criterion, batches, selected_tasks=["seg"], keep_ratio=0.5,
                   num_batches=1, progress=progress).net
    train(copy.deepcopy(net), criterion, loader, cfg, tmp_path / "t", max_iters=1,
          progress=progress)
    finetune(pruned, criterion, loader, cfg, tmp_path / "f", max_iters=1, progress=progress)
    evaluate(pruned, loader, cfg, progress=progress)
    err = capsys.readouterr().err
    for bar in ("SNIP scores", "train:", "finetune:", "evaluate"):
        assert (bar in err) == progress, (bar, err[-300:])
    assert any((tmp_path / "t" / "tb").iterdir())   # the log is kept without the bar


def test_export_never_ignores_set(pruned_tiny, tmp_path, capsys):
    pruned, _ = pruned_tiny
    base = pruned.parent.parent / "base.pth"   # a plain state dict: no record
    for argv, message in (
            (["--checkpoint", str(pruned)], "this export reads no config (only --int8, "
                                            "--dense and budget mode do)"),
            (["--checkpoint", str(base), "--dense", str(base), "--input-shape", "1", "3", "48",
              "64"], "no config to set it in; give --config")):
        assert main(["export", *argv, "--set", "BATCH_SIZE=2", "--out",
                     str(tmp_path / "edge")]) == 2
        captured = capsys.readouterr()
        assert captured.err.strip() == f"error: --set BATCH_SIZE=2: {message} (set " \
                                       f"CUT_DEBUG=1 for the traceback)"
        assert captured.out == "" and not (tmp_path / "edge").exists()
