"""Media out and in: frames as uint8, framed and labelled GIF grids, GIFs, 16-bit PCM WAV, and
MP4 videos with their sound (H.264 + AAC).

Every file is written atomically (:func:`files.atomic_write_bytes`).
"""
from __future__ import annotations

import io
import math
import os
import wave

import numpy as np

from errors import InputError
from files import atomic_write_bytes

def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (any shape) to uint8, clipping what lies outside."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def framed_row(panels: list, colours: list, pad: int = 2) -> np.ndarray:
    """Panels ``[T, C, H, W]`` (torch, in [0, 1]) side by side, each frame framed by its colour ``[T, 3]``.

    Returns uint8 ``[T, H + 2 pad, n (W + 2 pad), 3]``, ready for :func:`save_gif`.
    """
    import torch

    video = torch.stack(panels, 1).float().clamp(0, 1)  # [T, P, C, H, W]
    if video.shape[2] == 1:
        video = video.expand(-1, -1, 3, -1, -1)
    t, n, _, h, w = video.shape
    canvas = torch.stack(colours, 1)[:, :, :, None, None].expand(t, n, 3, h + 2 * pad, w + 2 * pad).clone()
    canvas[..., pad:pad + h, pad:pad + w] = video
    grid = canvas.permute(0, 3, 1, 4, 2).reshape(t, h + 2 * pad, n * (w + 2 * pad), 3)
    return (grid.numpy() * 255.0 + 0.5).astype(np.uint8)


#: Heights (px) of the strips every GIF and grid carries: the panels' names above, the key below.
LABEL_HEIGHT, KEY_HEIGHT = 14, 12


def label_columns(grid: np.ndarray, labels: list[str], height: int = LABEL_HEIGHT) -> np.ndarray:
    """A header strip above every frame of ``grid`` (uint8 ``[T, H, W, 3]``, panels of equal width side
    by side) naming each panel: returns uint8 ``[T, height + H, W, 3]``, white text on black, each
    label centred over its panel (``W / len(labels)`` pixels wide; Pillow's default font, shrunk
    until the longest label fits)."""
    from PIL import Image, ImageDraw, ImageFont

    t, _, width, _ = grid.shape
    panel = width / max(len(labels), 1)
    head = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(head)
    for size in range(height - 3, 5, -1):
        font = ImageFont.load_default(size=size)
        if max(draw.textlength(text, font=font) for text in labels) <= panel - 2:
            break
    for i, text in enumerate(labels):
        x = (i + 0.5) * panel - draw.textlength(text, font=font) / 2
        draw.text((x, height / 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    strip = np.broadcast_to(np.asarray(head, dtype=np.uint8), (t, height, width, 3))
    return np.concatenate([strip, grid], axis=1)


#: The frame colours of :func:`gif_colours` as :func:`framed_row` writes them (8-bit RGB), named as the
#: key under every GIF says them.
KEY = (("given", (26, 204, 26)), ("generated", (230, 26, 26)), ("real future", (128, 128, 128)))


def key_strip(grid: np.ndarray, height: int = KEY_HEIGHT) -> np.ndarray:
    """A footer under every frame of ``grid`` (uint8 ``[T, H, W, 3]``): the frame's number and the key
    of the frame colours, each word in its colour ("frame 7/15  given  generated  real future"), so
    a GIF reads without its caption. Returns uint8 ``[T, H + height, W, 3]`` (Pillow's default font,
    shrunk until the line fits)."""
    from PIL import Image, ImageDraw, ImageFont

    t, _, width, _ = grid.shape
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    words = [(f"frame {t}/{t}", (255, 255, 255))] + list(KEY)
    for size in range(height - 2, 4, -1):
        font = ImageFont.load_default(size=size)
        gap = probe.textlength("  ", font=font)
        if sum(probe.textlength(w, font=font) for w, _ in words) + gap * (len(words) - 1) <= width - 2:
            break
    strips = []
    for i in range(t):
        foot = Image.new("RGB", (width, height))
        draw = ImageDraw.Draw(foot)
        x = 1.0
        for text, colour in [(f"frame {i + 1}/{t}", (255, 255, 255))] + list(KEY):
            draw.text((x, height / 2), text, fill=colour, font=font, anchor="lm")
            x += draw.textlength(text, font=font) + gap
        strips.append(np.asarray(foot, dtype=np.uint8))
    return np.concatenate([grid, np.stack(strips)], axis=1)


def gif_colours(total: int, n_past: int, kind: str):
    """Frame colours ``[T, 3]`` for :func:`framed_row`: green = a real frame the model was given,
    red = a model output, grey = a ground-truth future frame (real, never shown to the model).
    ``kind``: ``"gt"``, or ``"posterior"`` / ``"sample"`` (rows that show the ``n_past`` given frames
    and then the model's frames, as the release drew its posterior and sample rows)."""
    import torch

    if kind not in ("gt", "posterior", "sample"):
        raise ValueError(f"kind must be gt, posterior or sample, got {kind!r}")
    green, red, grey = torch.tensor([0.1, 0.8, 0.1]), torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.5, 0.5, 0.5])
    t = torch.arange(total)[:, None]
    return torch.where(t < n_past, green, grey if kind == "gt" else red)


def save_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> None:
    """Write frames ``[T, H, W]`` or ``[T, H, W, C]`` (uint8, or float in [0, 1]) as a looping GIF."""
    import imageio.v3 as iio

    frames = to_uint8(np.asarray(frames))
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    buf = io.BytesIO()
    iio.imwrite(buf, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    atomic_write_bytes(path, buf.getvalue())


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV (stdlib ``wave``: no extra dependency)."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    atomic_write_bytes(path, buf.getvalue())


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV (mono or the mean of its channels) as float32 in [-1, 1]."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise InputError(f"{path}: only 16-bit PCM WAV is supported (got {8 * w.getsampwidth()}-bit)")
            n_ch, sr = w.getnchannels(), w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as err:
        raise InputError(f"{path}: not a readable WAV file ({err}); re-export it as 16-bit PCM") from None
    audio = data.reshape(-1, n_ch).mean(axis=1).astype(np.float32) / 32767.0
    return audio, sr


#: The audio rate of written videos: AAC takes only the standard rates (M3SO's 4,400 Hz is not one),
#: so the sound is resampled to this one (scipy's polyphase filter) and back when read.
VIDEO_AUDIO_RATE = 48000


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = VIDEO_AUDIO_RATE) -> None:
    """Write frames (uint8 ``[T, H, W, 3]``, or float in [0, 1]) as an H.264 video at ``fps`` with the
    mono sound ``audio`` (float in [-1, 1] at ``sample_rate``) as an AAC track, in an MP4 that
    browsers play. Through PyAV's own FFmpeg (no ffmpeg binary); atomically. Odd frame sizes are
    padded with black to even ones (H.264's 4:2:0 needs them); the sound starts with the first frame."""
    from fractions import Fraction

    import av
    from scipy.signal import resample_poly

    from files import atomic_file

    frames = to_uint8(np.asarray(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video needs frames [T, H, W, 3], got {frames.shape}")
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    with atomic_file(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            rate = Fraction(fps).limit_denominator(1000)
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            vs.options = {"crf": "12", "preset": "medium"}  # near-lossless: small frames, few bytes
            if audio is not None:
                sound = np.asarray(audio, dtype=np.float64)
                g = math.gcd(int(sample_rate), VIDEO_AUDIO_RATE)
                sound = resample_poly(sound, VIDEO_AUDIO_RATE // g, int(sample_rate) // g).astype(np.float32)
                aus = out.add_stream("aac", rate=VIDEO_AUDIO_RATE, layout="mono")
            for i, frame in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts = i
                vf.time_base = 1 / rate
                out.mux(vs.encode(vf))
            out.mux(vs.encode(None))
            if audio is not None:
                af = av.AudioFrame.from_ndarray(np.clip(sound, -1, 1)[None], format="fltp", layout="mono")
                af.sample_rate, af.pts = VIDEO_AUDIO_RATE, 0
                out.mux(aus.encode(af))
                out.mux(aus.encode(None))


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Decode a file :func:`write_video` wrote: frames uint8 ``[T, H, W, 3]``, its mono sound (float32,
    or None without an audio track) and the sound's sample rate."""
    import av

    with av.open(str(path)) as f:
        frames = np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])
    with av.open(str(path)) as f:
        if not f.streams.audio:
            return frames, None, 0
        rate = f.streams.audio[0].rate
        chunks = [fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)]
    return frames, np.concatenate(chunks).astype(np.float32), rate
