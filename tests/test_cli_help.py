"""The command lines as a new user meets them: evaluation on a checkpoint with no settings given,
help that shows defaults in plain text and groups the flags, short answers to a mistyped flag."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cli
import evaluation
import generate_sound2sight as gen
import predict_sound2sight
import train_sound2sight
from data import prepare_av
from M3SO_Gen_Code import generate_m3so
from errors import InputError

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {
    "train_sound2sight.py": train_sound2sight.build_parser,
    "generate_sound2sight.py": gen.build_parser,
    "predict_sound2sight.py": predict_sound2sight.build_parser,
    "data/prepare_av.py": prepare_av.build_parser,
    "M3SO_Gen_Code/generate_m3so.py": generate_m3so.build_parser,
}
GROUPS = {
    "train_sound2sight.py": {"data", "model (Sound2SightConfig)", "optimisation", "validation", "runtime", "output"},
    "generate_sound2sight.py": {"checkpoint", "data", "evaluation protocol", "runtime", "output"},
    "predict_sound2sight.py": {"model", "clip", "sampling", "output"},
    "data/prepare_av.py": {"input and output", "frames and clips", "audio features", "runtime"},
    "M3SO_Gen_Code/generate_m3so.py": {"output", "clips", "runtime"},
}
EVAL_FAST = ["--nsample", "2", "--N", "4", "--batch_size", "4", "--num_gifs", "0", "--no_tensorboard",
             "--device", "cpu"]


# ------------------------------------------------------------- evaluation's defaults
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data) -> Path:
    """A tiny run trained with --n_past 3 on the 10-frame clips of ``tiny_data``."""
    from test_train import run

    return run(tmp_path_factory.mktemp("trained") / "run", tiny_data, "--niter", "1", "--epoch_size", "1")


def test_evaluation_with_no_settings_takes_them_from_the_checkpoint(trained, tiny_data, tmp_path, monkeypatch,
                                                                    capsys):
    """From the repository root (where data/ is the Python package, not a dataset): n_past and the
    data folder are the training's, n_future the clips' remaining 7 frames; one line says so."""
    monkeypatch.chdir(ROOT)
    result = gen.main(["--model_path", str(trained), "--log_dir", str(tmp_path / "eval"), *EVAL_FAST])
    out, err = capsys.readouterr()
    assert (result["n_past"], result["n_future"], result["data_root"]) == (3, 7, str(tiny_data))
    said = [line for line in out.splitlines() if line.startswith("from the checkpoint")]
    assert len(said) == 1
    assert f"--data_root {tiny_data}" in said[0] and "--n_past 3" in said[0] and "--n_future 7" in said[0]
    assert "warning" not in err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_future"] == 7


def test_a_different_n_past_is_evaluated_with_a_warning_saying_why(trained, tmp_path, capsys):
    result = gen.main(["--model_path", str(trained), "--log_dir", str(tmp_path / "eval"), "--n_past", "2",
                       *EVAL_FAST])
    out, err = capsys.readouterr()
    assert (result["n_past"], result["n_future"]) == (2, 8)
    warning = [line for line in err.splitlines() if line.startswith("warning: --n_past 2")]
    assert len(warning) == 1 and "trained with" in warning[0] and "3" in warning[0] and "skip" in warning[0]
    assert "--n_past" not in [line for line in out.splitlines() if line.startswith("from the checkpoint")][0].split(";")[0]


def test_every_setting_given_explicitly_takes_nothing_from_the_checkpoint(trained, tiny_data, tmp_path, capsys):
    """The paper's form of the command (all flags given) runs as before and says nothing about defaults."""
    result = gen.main(["--model_path", str(trained), "--data_root", str(tiny_data), "--n_past", "3",
                       "--n_future", "5", "--log_dir", str(tmp_path / "eval"), *EVAL_FAST])
    out, err = capsys.readouterr()
    assert (result["n_past"], result["n_future"]) == (3, 5)
    assert "from the checkpoint" not in out and "from the clips" not in out and "warning" not in err


def test_n_future_defaults_to_the_remaining_frames_at_most_the_releases_25():
    assert evaluation.RELEASE_N_FUTURE == 25
    assert evaluation.default_n_future(30, 5) == 25  # the paper: 5 + 25 on 30-frame clips
    assert evaluation.default_n_future(60, 5) == 25
    assert evaluation.default_n_future(10, 3) == 7
    assert gen.resolve_horizon(None, None, 5, 30, "d") == (5, 25)
    assert gen.resolve_horizon(2, None, 5, 10, "d") == (2, 8)
    assert gen.resolve_horizon(None, 4, 5, 30, "d") == (5, 4)
    with pytest.raises(InputError, match="--n_past 10 leaves no frame to predict: .* 10 frames"):
        gen.resolve_horizon(10, None, 5, 10, "d")


def test_the_data_folder_comes_from_the_checkpoint_only_when_not_given(tmp_path, tiny_data):
    assert gen.resolve_data_root(None, {"data_root": str(tiny_data)}) == (str(tiny_data), True)
    assert gen.resolve_data_root("elsewhere", {"data_root": str(tiny_data)}) == ("elsewhere", False)
    with pytest.raises(InputError, match="trained on --data_root .*gone, which is not a folder here.*--data_root"):
        gen.resolve_data_root(None, {"data_root": str(tmp_path / "gone")})
    with pytest.raises(InputError, match="--data_root is required"):
        gen.resolve_data_root(None, {})
    assert gen.build_parser().get_default("data_root") is None  # never the repository's data/ package


# --------------------------------------------------------------------------- help
def help_text(parser) -> str:
    return " ".join(parser.format_help().split())  # one line: argparse wraps at the terminal's width


@pytest.mark.parametrize("script", PARSERS)
def test_help_shows_defaults_in_plain_text_grouped_by_purpose(script):
    parser = PARSERS[script]()
    text = help_text(parser)
    assert isinstance(parser, cli.ArgumentParser)
    assert "(default: None)" not in text and "(default: )" not in text
    assert not re.search(r":[a-z]+:`|``", text), "Sphinx markup in --help"
    assert "{," not in text and ",}" not in text and ",," not in text, "an empty choice"
    assert GROUPS[script] <= {g.title for g in parser._action_groups}
    for action in parser._actions:
        if not action.option_strings:
            continue
        assert action.help, f"{script} {action.option_strings[0]} has no help"
        shows = "(default: " in cli.HelpFormatter("x")._get_help_string(action)
        meaningful = not (action.required or action.nargs == 0 or action.default in (None, ""))
        assert shows or not meaningful or "default" in action.help, (script, action.option_strings[0])
        assert not (shows and action.required)


def test_help_defaults_by_example():
    train = help_text(train_sound2sight.build_parser())
    assert "--niter NITER number of epochs (default: 300)" in train
    assert "--lr LR generator learning rate (default: 0.002)" in train
    assert "--nf NF base conv width" in train and "(default: 64)" in train  # a flag made from Sound2SightConfig
    evaluate = help_text(gen.build_parser())
    assert "--nsample NSAMPLE prior samples per clip (default: 100)" in evaluate
    assert "--dataset {smmnist,m3so,m3so_nb,drums,painting,av}" in evaluate
    assert "The work is done by evaluation.py" in evaluate
    prepare = help_text(prepare_av.build_parser())
    assert "--src SRC folder of videos (recursive), a text list of videos, or one video --dest" in prepare


def test_plain_text_strips_sphinx_markup():
    doc = "Done by :mod:`evaluation` over :data:`metrics.PAIR_METRICS`, see :func:`~errors.run_cli`;\n``--n_past`` frames."
    assert cli.plain_text(doc) == "Done by evaluation over metrics.PAIR_METRICS, see errors.run_cli;\n--n_past frames."
    assert cli.plain_text(None) == ""


# --------------------------------------------------------------------------- typos
@pytest.mark.parametrize("script", PARSERS)
def test_an_unknown_flag_answers_in_two_lines_with_the_closest_flags(script, capsys):
    with pytest.raises(SystemExit) as stopped:
        PARSERS[script]().parse_args(["--src", "s", "--dest", "d", "--sed", "3"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and "unknown flag --sed: did you mean --seed" in lines[0], err


def test_the_typo_of_the_issue_at_the_real_entry_point():
    proc = subprocess.run([sys.executable, "generate_sound2sight.py", "--n_fture", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) <= 2, proc.stderr
    assert "unknown flag --n_fture: did you mean --n_future?" in lines[0]


def test_other_mistakes_are_short_too(capsys):
    parser = train_sound2sight.build_parser()
    for argv, said in ((["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"), (["--niter", "x"], "invalid int"),
                       (["extra"], "unexpected argument: extra"), (["--zzzz"], "unknown flag --zzzz")):
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == 2 and len(lines) <= 2 and said in lines[0], lines


def test_every_cli_script_uses_the_shared_parser():
    scripts = [p for p in ROOT.rglob("*.py") if "tests" not in p.parts and p.name != "cli.py"
               and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    plain = [str(p.relative_to(ROOT)) for p in scripts if "argparse.ArgumentParser(" in p.read_text()]
    assert plain == [], f"use cli.ArgumentParser in {plain}"
