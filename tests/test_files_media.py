"""media.py (GIF framing colours and layout) and files.py (atomic writes)."""
import os

import numpy as np
import pytest
import torch

from errors import InputError
from files import atomic_dir, atomic_write_text
from media import framed_row, gif_colours, label_columns


def test_gif_colours_mark_given_generated_and_future_frames():
    green, red, grey = torch.tensor([0.1, 0.8, 0.1]), torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.5, 0.5, 0.5])
    gt, post, sample = (gif_colours(6, 2, k) for k in ("gt", "posterior", "sample"))

    def same(c, colour):
        return torch.allclose(c, colour.expand_as(c))

    assert same(gt[:2], green) and same(gt[2:], grey)
    assert same(post[:2], green) and same(post[2:], red)  # the release's posterior row: given frames, then decoded
    assert same(sample[:2], green) and same(sample[2:], red)

def test_framed_row_places_panels_inside_their_borders():
    t, h, w, pad = 3, 5, 4, 2
    a, b = torch.zeros(t, 1, h, w), torch.ones(t, 1, h, w)
    colours = [gif_colours(t, 1, "gt"), gif_colours(t, 1, "sample")]
    out = framed_row([a, b], colours, pad=pad)
    assert out.shape == (t, h + 2 * pad, 2 * (w + 2 * pad), 3) and out.dtype == np.uint8
    assert (out[:, pad:pad + h, pad:pad + w] == 0).all()  # panel a: black
    assert (out[:, pad:pad + h, w + 3 * pad:2 * w + 3 * pad] == 255).all()  # panel b: white
    assert out[0, 0, 0].tolist() == [26, 204, 26]  # frame 0 of panel a: green border
    assert out[2, 0, w + 2 * pad].tolist() == [230, 26, 26]  # frame 2 of panel b: red border


def test_label_columns_names_every_panel():
    grid = np.full((3, 10, 4 * 52, 3), 7, dtype=np.uint8)
    out = label_columns(grid, ["truth", "posterior", "best", "random"])
    assert out.shape == (3, 14 + 10, 4 * 52, 3) and out.dtype == np.uint8
    assert (out[:, 14:] == 7).all() and (out[0] == out[2]).all()  # the frames untouched, one header for all
    for i in range(4):  # text (white-ish pixels) over every panel, inside its own width
        assert out[0, :14, i * 52:(i + 1) * 52].max() > 200, i
    with pytest.raises(ValueError, match="kind"):
        gif_colours(4, 2, "prior")


def test_atomic_writes_keep_plain_permissions_and_refuse_clobbering(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("1")
    assert (tmp_path / "d" / "f").read_text() == "1"
    with pytest.raises(InputError, match="--overwrite"):
        with atomic_dir(tmp_path / "d"):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d", overwrite=True) as d:
            (d / "f").write_text("2")
            raise RuntimeError("killed mid-write")
    assert (tmp_path / "d" / "f").read_text() == "1"  # the old folder survives a failed rewrite
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def test_a_full_disk_during_an_atomic_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    import pytest
    import torch

    from errors import InputError
    from files import atomic_torch_save, atomic_write_json

    target = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1}, target)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # part of the data lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(InputError, match="could not write .*last.pt \\(No space left on device\\); the previous "
                                         "file is intact"):
        atomic_torch_save({"epoch": 2}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="could not write"):
        atomic_write_json(blocker / "sub" / "x.json", {})  # a folder below a file


def test_key_strip_numbers_every_frame_and_keys_the_colours():
    from media import KEY, key_strip

    grid = np.full((3, 10, 4 * 52, 3), 7, dtype=np.uint8)
    out = key_strip(grid)
    assert out.shape == (3, 10 + 12, 4 * 52, 3) and (out[:, :10] == 7).all()
    assert not (out[0, 10:] == out[1, 10:]).all()  # each frame its own number
    foot = out[0, 10:].astype(int)  # [12, W, 3]
    for _, rgb in KEY:  # each colour's word drawn in (nearly: the text is antialiased) that colour
        assert (np.abs(foot - np.array(rgb)).max(-1) < 40).any(), rgb
