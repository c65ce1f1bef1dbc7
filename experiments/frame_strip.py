"""A labelled still of an evaluation GIF: chosen time steps across, the GIF's panels down.

The evaluation's GIFs (``<eval dir>/gifs/clip_*.gif``) show one clip as a row of panels
(truth | posterior | best sample | random samples) under a strip naming them, each frame
framed green (given to the model), red (made by the model) or grey (real future). This
lays chosen frames of the first ``--panels`` panels out as a grid, one panel per row,
named on the left, with each column's frame index on top, for a README or a paper:

    python experiments/frame_strip.py logs/demo/eval/gifs/clip_00000.gif docs/demo_strip.png \
        --frames 3 4 5 7 9 11 14 --panels 4
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from cli import ArgumentParser, HelpFormatter, plain_text  # noqa: E402
from errors import InputError, run_cli  # noqa: E402
from files import atomic_write_bytes  # noqa: E402

from media import KEY_HEIGHT, LABEL_HEIGHT  # noqa: E402

HEADER, FOOTER = LABEL_HEIGHT, KEY_HEIGHT  # the GIF's label strip and its key (media.label_columns, key_strip)
PANEL_NAMES = ("truth", "posterior", "best sample", "random sample", "random sample", "random sample")


def frame_strip(gif: np.ndarray, frames: list[int], panels: int, scale: int = 2) -> np.ndarray:
    """``gif`` uint8 ``[T, 14 + P + 12, n*P, 3]`` (square panels of side ``P`` between the label strip and the key) ->
    uint8 image ``[top + panels*P*scale, left + len(frames)*P*scale, 3]``: frame ``frames[j]`` of panel ``i``
    at row ``i``, column ``j``, enlarged ``scale`` times (nearest neighbour), labelled."""
    from PIL import Image, ImageDraw, ImageFont

    t, height, width, _ = gif.shape
    side = height - HEADER - FOOTER
    available = width // side
    if side < 1 or width % side:
        raise InputError(f"the GIF is {width}x{height}: not a row of square panels between a {HEADER}-pixel label strip "
                         f"and a {FOOTER}-pixel key")
    if not 1 <= panels <= available:
        raise InputError(f"--panels {panels}: the GIF has {available} panels")
    bad = [f for f in frames if not 0 <= f < t]
    if bad:
        raise InputError(f"--frames {bad}: the GIF has frames 0..{t - 1}")
    cells = gif[:, HEADER:HEADER + side]                                      # [T, P, n*P, 3]
    rows = [np.concatenate([cells[f, :, i * side:(i + 1) * side] for f in frames], axis=1) for i in range(panels)]
    grid = np.concatenate(rows, axis=0).repeat(scale, axis=0).repeat(scale, axis=1)
    font = ImageFont.load_default(size=12)
    left, top = 110, 20
    canvas = Image.new("RGB", (left + grid.shape[1], top + grid.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    cell = side * scale
    for j, f in enumerate(frames):
        draw.text((left + j * cell + cell / 2, top / 2), f"frame {f}", fill=(0, 0, 0), font=font, anchor="mm")
    for i in range(panels):
        draw.text((left - 6, top + i * cell + cell / 2), PANEL_NAMES[min(i, len(PANEL_NAMES) - 1)], fill=(0, 0, 0),
                  font=font, anchor="rm")
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> Path:
    p = ArgumentParser(description=plain_text(__doc__), formatter_class=HelpFormatter)
    p.add_argument("gif", help="an evaluation GIF (<eval dir>/gifs/clip_*.gif)")
    p.add_argument("out", help="the PNG to write")
    p.add_argument("--frames", type=int, nargs="+", required=True, help="time steps to show, left to right")
    p.add_argument("--panels", type=int, default=4, help="the GIF's first panels to show, top to bottom")
    p.add_argument("--scale", type=int, default=2, help="enlargement (nearest neighbour)")
    args = p.parse_args(argv)
    import io

    import imageio.v3 as iio
    from PIL import Image

    try:
        gif = np.asarray(iio.imread(args.gif, index=None, mode="RGB"))
    except (OSError, ValueError) as err:
        raise InputError(f"{args.gif} cannot be read as a GIF ({err}); pass an evaluation GIF") from None
    image = frame_strip(gif, args.frames, args.panels, max(1, args.scale))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}")
    return Path(args.out)


if __name__ == "__main__":
    run_cli(main)
