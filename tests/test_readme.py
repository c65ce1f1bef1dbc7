"""The README's commands, as written, at toy sizes.

The commands listed here are found in the README's ``bash`` blocks (so a README edit that
breaks one fails here), then run from an empty folder, as from a fresh clone, with flags
appended that shrink the sizes (argparse keeps the last value of a flag)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# The README's commands this test runs, by their first words, in order (later ones use what earlier
# ones made), and what each gets appended to run at toy size.
TINY_TRAIN = ["--niter", "1", "--epoch_size", "1", "--batch_size", "4", "--g_dim", "16", "--rnn_size", "32",
              "--z_dim", "4", "--dim_ff", "32", "--disc_rnn_size", "16", "--nhead", "2", "--nf", "8",
              "--val_nsample", "1", "--bn_recalibrate", "1", "--data_threads", "0"]
TINY_DATA = ["--num_train", "8", "--num_test", "4"]
TINY_EVAL = ["--nsample", "2", "--N", "2", "--num_gifs", "1"]
COMMANDS = [
    ("python M3SO_Gen_Code/generate_m3so.py --dest datasets/m3so_nb --no_block", TINY_DATA),
    ("python M3SO_Gen_Code/generate_m3so.py --dest datasets/m3so --num_workers 2 --previews 4", TINY_DATA),
    ("python train_sound2sight.py --dataset smmnist --data_root datasets/m3so", TINY_TRAIN),      # the paper's
    ("python train_sound2sight.py --data_root datasets/m3so --log_dir logs/m3so_cpu", TINY_TRAIN),  # CPU recipe
    ("python generate_sound2sight.py --model_path logs/lp --nsample 5", TINY_EVAL),  # settings from the checkpoint
    ("python generate_sound2sight.py --model_path logs/lp --data_root datasets/m3so", [*TINY_EVAL, "--N", "3"]),
]


def readme_commands() -> list[list[str]]:
    """Every command in the README's ``bash`` blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def find(prefix: str, commands: list[list[str]]) -> list[str]:
    """The one README command that starts with ``prefix`` (the whole command when the prefix is
    one by itself there)."""
    want = shlex.split(prefix)
    exact = [c for c in commands if c == want]
    found = exact or [c for c in commands if c[:len(want)] == want]
    assert len(found) == 1, f"the README has {len(found)} commands starting with {prefix!r}"
    return found[0]


def run_command(words: list[str]) -> object:
    """``python SCRIPT ARGS`` in this process (the scripts' ``main``), from the current folder."""
    assert words[0] == "python", words
    script, argv = words[1], words[2:]
    if script == "M3SO_Gen_Code/generate_m3so.py":
        from M3SO_Gen_Code import generate_m3so
        return generate_m3so.main(argv)
    if script == "train_sound2sight.py":
        import train_sound2sight
        return train_sound2sight.main(argv)
    if script == "generate_sound2sight.py":
        import generate_sound2sight
        return generate_sound2sight.main(argv)
    raise AssertionError(f"no runner for {script}")


def test_the_readme_never_writes_into_the_data_package():
    """``data/`` is the Python package: no README command makes or reads a dataset there."""
    for words in readme_commands():
        for flag in ("--dest", "--data_root", "--src"):
            if flag in words[:-1]:
                value = words[words.index(flag) + 1]
                assert not re.match(r"(\./)?data(/|$)", value), shlex.join(words)


def test_the_readme_commands_run_as_written_at_toy_sizes(tmp_path, monkeypatch):
    commands = readme_commands()
    found = [(find(prefix, commands), extra) for prefix, extra in COMMANDS]
    monkeypatch.chdir(tmp_path)  # a fresh clone's working folder: every relative path lands here
    results = [run_command(words + extra) for words, extra in found]
    for made in ("datasets/m3so_nb/dataset.json", "datasets/m3so/dataset.json", "datasets/m3so/test/previews",
                 "logs/lp/checkpoints/last.pt", "logs/m3so_cpu/checkpoints/last.pt"):
        assert (tmp_path / made).exists(), made
    assert len(list((tmp_path / "logs/lp/eval").glob("*/metrics.json"))) == 2  # two evaluations, both kept
    cfg = json.loads((tmp_path / "logs/m3so_cpu/config.json").read_text())["args"]
    assert (cfg["output_bias"], cfg["lr_schedule"], cfg["logvar_bias"], cfg["n_future"]) == (-6.0, "cosine", -4.0, 15)
    by_checkpoint, paper = results[4], results[5]
    assert by_checkpoint["n_past"] == paper["n_past"] == 5 and by_checkpoint["n_future"] == paper["n_future"] == 25


@pytest.mark.parametrize("prefix", [p for p, _ in COMMANDS])
def test_each_listed_command_is_in_the_readme(prefix):
    find(prefix, readme_commands())
