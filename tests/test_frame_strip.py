"""experiments/frame_strip.py: a labelled still of an evaluation GIF."""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from errors import InputError
from experiments.frame_strip import frame_strip, main
from media import framed_row, gif_colours, key_strip, label_columns, save_gif


def eval_gif(t: int = 6, n_past: int = 2) -> np.ndarray:
    """An evaluation-style GIF: truth | posterior | best | random, each panel a different grey level."""
    panels = [torch.full((t, 1, 48, 48), v) for v in (0.2, 0.4, 0.6, 0.8)]
    for p in panels:  # a moving dot, so no two frames are alike (GIF writers merge equal frames)
        for i in range(t):
            p[i, 0, 20, 5 + 5 * i] = 1.0
    kinds = ["gt", "posterior", "sample", "sample"]
    row = framed_row(panels, [gif_colours(t, n_past, k) for k in kinds])
    return key_strip(label_columns(row, ["truth", "posterior", "best", "random"]))  # as evaluation GIFs are


def test_strip_places_each_panel_and_frame(tmp_path):
    gif = eval_gif()
    img = frame_strip(gif, [1, 3, 5], panels=3, scale=2)
    left, top, cell = 110, 20, 52 * 2
    assert img.shape == (top + 3 * cell, left + 3 * cell, 3)
    for i, level in enumerate((0.2, 0.4, 0.6)):  # row i is panel i: its grey level inside the frame
        y = top + i * cell + cell // 2
        assert abs(int(img[y, left + cell // 2, 0]) - round(level * 255)) <= 1
    # frame 1 is context (green border), frame 3 generated (red) in the posterior row
    y = top + cell + 1
    assert img[y, left + 1, 1] > 150 and img[y, left + cell + 1, 0] > 150
    assert (img[:top, left:] < 128).any() and (img[top:, :left] < 128).any()  # labels drawn


def test_cli_and_bad_input(tmp_path, capsys):
    save_gif(tmp_path / "clip.gif", eval_gif())
    main([str(tmp_path / "clip.gif"), str(tmp_path / "strip.png"), "--frames", "0", "4", "--panels", "4"])
    assert iio.imread(tmp_path / "strip.png").shape[:2] == (20 + 4 * 104, 110 + 2 * 104)
    with pytest.raises(InputError, match="frames 0..5"):
        frame_strip(eval_gif(), [9], panels=2)
    with pytest.raises(InputError, match="has 4 panels"):
        frame_strip(eval_gif(), [0], panels=5)
    (tmp_path / "bad.gif").write_bytes(b"not a gif")
    with pytest.raises(InputError, match="cannot be read"):
        main([str(tmp_path / "bad.gif"), str(tmp_path / "x.png"), "--frames", "0"])
