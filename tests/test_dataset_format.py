"""data/dataset_format.py: dataset.json read, written and checked in one place."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from data.dataset_format import FORMAT_VERSION, SPLITS, DatasetMeta, recreate_hint
from data.features import FrameSettings
from errors import InputError

STFT = {"n_fft": 44, "hop_length": 22, "center": True, "window": "hann", "shape": [23, 21]}
# dataset.json files as the tools wrote them before this module existed (format_version 1)
OLD_GENERATOR = {"name": "M3SO-NB", "format_version": 1, "image_size": 48, "channels": 1, "num_frames": 30, "fps": 10,
                 "sample_rate": 4400, "samples_per_frame": 440, "stft": STFT, "splits": {"train": 16, "test": 8},
                 "generator": {"num_train": 16, "seed": 3, "no_block": True, "previews": 0}, "chunk_clips": 256,
                 "block_size": None, "tone_table": {"low_hz": [300.0]}, "digit_source": {"train": {"licence": "x"}}}
OLD_PREPARE_MFCC = {"name": "av", "format_version": 1, "image_size": 32, "channels": 1, "num_frames": 5, "fps": 10,
                    "sample_rate": 7040, "samples_per_frame": 704,
                    "stft": {"n_fft": 88, "hop_length": 44, "center": True, "window": "hann", "shape": [45, 17]},
                    "features": "mfcc", "splits": {"train": 6, "test": 3}, "videos": {"train": 2, "test": 1},
                    "skipped": 0, "source": "/videos", "flags": {"seed": 0}, "warnings": [],
                    "mfcc": {"n_mfcc": 32, "n_mels": 40, "shape": [32, 17], "file": "mfcc.npy", "scaled": "log-mel"}}
OLD_LEGACY = {"name": "M3SO (legacy import)", "format_version": 1, "image_size": 16, "channels": 1, "num_frames": 6,
              "fps": 10, "sample_rate": 4400, "samples_per_frame": 440, "stft": STFT, "splits": {"train": 3},
              "source": {"layout": "legacy", "path": "/x"}, "ids": {"train": ["0", "5", "10"]}, "audio": {}}
MINIMAL = {"name": "tiny", "format_version": 1, "image_size": 48, "channels": 1, "num_frames": 8, "stft": STFT,
           "splits": {"test": 2}}


@pytest.mark.parametrize("obj", [OLD_GENERATOR, OLD_PREPARE_MFCC, OLD_LEGACY, MINIMAL],
                         ids=["generator", "prepare_av_mfcc", "legacy_import", "minimal"])
def test_existing_files_read_and_round_trip(tmp_path, obj):
    (tmp_path / "dataset.json").write_text(json.dumps(obj))
    meta = DatasetMeta.read(tmp_path)
    assert meta.to_json() == obj  # every key, provenance included, comes back as it was
    assert list(meta.to_json()) == [k for k in ("name", "format_version", "image_size", "channels", "num_frames",
                                                "fps", "sample_rate", "samples_per_frame", "stft", "features",
                                                "mfcc", "splits") if k in obj] + [k for k in obj if k in meta.extra]
    meta.write(tmp_path / "copy")
    assert json.loads((tmp_path / "copy" / "dataset.json").read_text()) == obj


def test_kinds_shapes_and_files():
    assert DatasetMeta.from_json(OLD_GENERATOR, "x/dataset.json").audio_shape == (23, 21)
    meta = DatasetMeta.from_json(OLD_PREPARE_MFCC, "x/dataset.json")
    assert meta.feature_name == "mfcc" and meta.kind.file == "mfcc.npy"
    assert meta.audio_shape == (32, 17) and meta.stft_shape == (45, 17)
    assert DatasetMeta.from_json(MINIMAL, "x/dataset.json").feature_name == "stft"
    assert FORMAT_VERSION == 1 and SPLITS == ("train", "test")


def test_for_features_builds_the_blocks_from_the_registry(tmp_path):
    meta = DatasetMeta.for_features("M3SO", image_size=48, channels=1, num_frames=30, fps=10,
                                    splits={"train": 2, "test": 1}, settings=FrameSettings(), features="mfcc",
                                    extra={"generator": {"features": "mfcc"}})
    obj = meta.to_json()
    assert obj["stft"] == STFT and obj["features"] == "mfcc" and obj["mfcc"]["shape"] == [32, 21]
    assert (obj["sample_rate"], obj["samples_per_frame"], obj["generator"]) == (4400, 440, {"features": "mfcc"})
    meta.write(tmp_path)
    assert DatasetMeta.read(tmp_path) == meta
    with pytest.raises(ValueError, match="choose one of stft, mfcc"):
        DatasetMeta.for_features("M3SO", image_size=48, channels=1, num_frames=30, fps=10, splits={},
                                 settings=FrameSettings(), features="wavelets")


def _bad(tmp_path: Path, obj) -> str:
    (tmp_path / "dataset.json").write_text(obj if isinstance(obj, str) else json.dumps(obj))
    with pytest.raises(InputError) as err:
        DatasetMeta.read(tmp_path)
    text = str(err.value)
    assert "\n" not in text and str(tmp_path / "dataset.json") in text
    return text


def test_bad_files_say_which_and_how_to_re_create_them(tmp_path):
    with pytest.raises(InputError, match="does not exist; make the dataset with python M3SO_Gen_Code"):
        DatasetMeta.read(tmp_path)
    assert "is not readable JSON" in _bad(tmp_path, "{not json")
    assert "must hold a JSON object" in _bad(tmp_path, "[1, 2]")
    text = _bad(tmp_path, {"name": "x", "format_version": 1})
    assert "lacks key(s) image_size, channels, num_frames, stft, splits; re-create it with" in text
    text = _bad(tmp_path, {**OLD_PREPARE_MFCC, "format_version": 2})
    assert "has format_version 2, this code reads 1; re-create it with python -m data.prepare_av" in text
    assert "must be positive integers" in _bad(tmp_path, {**OLD_GENERATOR, "image_size": 0})
    assert "must be positive integers" in _bad(tmp_path, {**OLD_GENERATOR, "channels": True})
    assert "must be positive integers" in _bad(tmp_path, {**OLD_GENERATOR, "stft": {"shape": [23]}})
    assert "must be positive integers" in _bad(tmp_path, {**OLD_GENERATOR, "splits": {"train": -1}})
    assert "fps must be a positive integer" in _bad(tmp_path, {**OLD_GENERATOR, "fps": "10"})
    text = _bad(tmp_path, {**OLD_LEGACY, "features": "wavelets"})
    assert "has features 'wavelets'; this code reads stft, mfcc; re-create it with python -m data.convert_legacy" in text
    no_block = {k: v for k, v in OLD_PREPARE_MFCC.items() if k != "mfcc"}
    assert "says features 'mfcc' but lacks a valid \"mfcc\"" in _bad(tmp_path, no_block)
    escaped = {**OLD_PREPARE_MFCC, "mfcc": {**OLD_PREPARE_MFCC["mfcc"], "file": "../../etc/passwd"}}
    assert "lacks a valid" in _bad(tmp_path, escaped)
    assert recreate_hint("d", "av") == "python -m data.prepare_av --src VIDEOS --dest d"


def test_a_killed_builds_temporary_folders_are_removed_by_the_next_build(tmp_path, capsys):
    """SIGKILL leaves ``.DEST.*.partial`` beside --dest; the next build of that --dest removes those of
    dead processes (and PID-less ones older than itself) and says so; a live build's and other names stay."""
    import subprocess
    import sys

    from M3SO_Gen_Code.generate_m3so import generate

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    leftovers = [f".m3so.{dead}.abcd_123.partial", ".m3so.zz9yx8wv.partial"]
    kept = [f".m3so.{os.getppid()}.live1234.partial",  # a build still running
            f".m3so.v2.{dead}.abcd_123.partial",  # another --dest (m3so.v2)
            f".m3so.{dead}.abcd_123.old"]  # the dataset being replaced: kept while --dest does not exist
    for name in leftovers + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "clips.npy").write_bytes(b"x" * 100)
    os.utime(tmp_path / ".m3so.zz9yx8wv.partial", (1_000_000, 1_000_000))  # long before this run
    generate(tmp_path / "m3so", num_train=4, num_test=2, num_frames=4, no_block=True, progress=False)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "temporary folder" in line]
    assert lines == [f"removed 2 temporary folders left beside {tmp_path / 'm3so'} by a build that was killed: "
                     + ", ".join(sorted(leftovers))]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(kept)
    assert (tmp_path / "m3so" / "dataset.json").is_file()
    generate(tmp_path / "m3so", num_train=4, num_test=2, num_frames=4, no_block=True, progress=False,
             overwrite=True)  # now --dest exists: the dead process's .old is removed too
    assert f".m3so.{dead}.abcd_123.old" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(kept[:2])


def test_datasets_live_outside_the_data_package(tmp_path, monkeypatch):
    """No message advises writing a dataset into the ``data/`` package (from the repository root
    ``data`` is the code): the hints, the loader's errors and the tools' ``--dest`` check point at
    ``datasets/`` instead, and the training's default ``--data_root`` is there."""
    import data
    import train_sound2sight
    from data.dataset_format import DEFAULT_DATA_ROOT, PACKAGE_DIR, check_dest, in_package

    root = PACKAGE_DIR.parent
    monkeypatch.chdir(root)
    assert DEFAULT_DATA_ROOT == "datasets/m3so" and not in_package(DEFAULT_DATA_ROOT)
    assert train_sound2sight.parse_args([]).data_root == DEFAULT_DATA_ROOT
    for given, dest in (("data", "datasets/m3so"), ("data/", "datasets/m3so"), ("./data/m3so_nb", "datasets/m3so_nb")):
        assert in_package(given)
        hint = recreate_hint(given)
        assert hint == f"python M3SO_Gen_Code/generate_m3so.py --dest {dest} and pass --data_root {dest}", hint
        with pytest.raises(InputError) as err:
            data.detect_layout(given)
        assert f"--dest {dest}" in str(err.value) and not re.search(r"--dest (\./)?data(/|\s|$)", str(err.value))
        with pytest.raises(InputError) as err:
            check_dest(given, overwrite=True)
        assert f"e.g. --dest {dest}" in str(err.value)
    assert not in_package("datasets/m3so") and not in_package("tests/data") and not in_package(tmp_path / "data")
    assert recreate_hint(tmp_path / "data") == f"python M3SO_Gen_Code/generate_m3so.py --dest {tmp_path / 'data'}"
    with pytest.raises(InputError) as err:  # the default, not made yet: the command that makes it
        data.detect_layout(DEFAULT_DATA_ROOT)
    assert str(err.value).endswith(f"python M3SO_Gen_Code/generate_m3so.py --dest {DEFAULT_DATA_ROOT}")
