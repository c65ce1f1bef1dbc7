"""Predict one clip and watch it with its sound: a trained model's futures of a clip (a dataset's, or
any video file with sound) as an MP4 video (H.264 + AAC) with the clip's soundtrack, the predicted
frames as an array, and a JSON of per-frame SSIM/PSNR against the real future beside
copy-last-frame and constant velocity.

    python predict_sound2sight.py --model_path logs/demo --data_root logs/demo/m3so_nb_data --clip 3
    python predict_sound2sight.py --model_path logs/demo --data_root logs/demo/m3so_nb_data --clip 3 --audio_clip 7
    python predict_sound2sight.py --model_path logs/demo --video my_clip.mp4 --start 2.5

``--video``: any file with a video and an audio stream that PyAV opens. Its frames and sound
become the model's input exactly as the dataset tools make them (``data.prepare_av``'s decoder
and features, with the frame size, channels, frame rate and audio features of the data the
model was trained on, read from the run's ``config.json``): another resolution or frame rate
is converted as the preparer converts it.

The first ``n_past`` frames (the checkpoint's) are the context; the model predicts the rest of
the checkpoint's sequence (or what the clip has), ``--nsample`` futures drawn from its prior with
the evaluation's noise for that clip (so they are the samples ``generate_sound2sight.py`` scores
with the same ``--seed``). ``--audio_clip J`` also predicts the same context with clip J's sound:
the what-if that shows the sound driving the motion, in a second video with that sound.

Writes into ``--out`` (default ``<run folder>/predict/clip_<I>``; an existing one is refused
without ``--overwrite``): ``prediction.mp4`` (panels: the real clip, then the samples; context
framed green, generated red, the real future grey; the frame number and that key under the
panels), ``predicted.npy`` (float32 ``[K, T, C, H, W]`` in [0, 1]), with ``--audio_clip`` also
``what_if_audio_<J>.mp4`` (the real clip, the clip's own samples, the samples with J's sound,
J's sound playing) and ``predicted_audio_<J>.npy``, and ``prediction.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import evaluation
import runtime
from baselines import BASELINES
from checkpoints import load_model, resolve_checkpoint, run_folder_of
from cli import ArgumentParser, plain_text
from data import clip_sound, dataset_info, open_dataset
from errors import InputError, run_cli
from files import atomic_save_npy, atomic_write_json, check_output_folder
from media import framed_row, gif_colours, key_strip, label_columns, write_video
from metrics import score


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=plain_text(__doc__))
    model = p.add_argument_group("model")
    model.add_argument("--model_path", default="", help="a checkpoint file or a training run folder (best.pt, else last.pt)")
    model.add_argument("--model_epoch", type=int, default=None, help="with a run folder: its checkpoints/epoch_N.pt")
    clip = p.add_argument_group("clip")
    clip.add_argument("--video", default="", help="a video file with sound (mp4, mkv, webm, mov, ...)")
    clip.add_argument("--start", type=float, default=0.0, help="--video: where the clip starts, in seconds")
    clip.add_argument("--data_root", default="", help="a prepared dataset folder (M3SO, M3SO-NB, prepare_av's)")
    clip.add_argument("--clip", type=int, default=0, help="index of the clip in --split")
    clip.add_argument("--split", default="test", choices=("train", "test"), help="the dataset split the clips come from")
    clip.add_argument("--audio_clip", type=int, default=None,
                      help="also predict the same context with this clip's sound (the what-if)")
    sampling = p.add_argument_group("sampling")
    sampling.add_argument("--nsample", type=int, default=3, help="futures drawn from the prior")
    sampling.add_argument("--seed", type=int, default=1, help="the evaluation's seed: the same samples as its")
    sampling.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="", help="output folder (default: <run folder>/predict/clip_<I>, or "
                                                "predict/<video name> with --video)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    out.add_argument("--scale", type=int, default=4, help="enlarge the video's frames this many times (nearest)")
    return p


def check_args(args: argparse.Namespace, num_clips: int) -> None:
    """``--clip`` and ``--audio_clip`` name clips of the split."""
    for name in ("clip", "audio_clip"):
        value = getattr(args, name)
        if value is not None and not 0 <= value < num_clips:
            raise InputError(f"--{name} {value}: the {args.split} split of {args.data_root} has clips 0..{num_clips - 1}")


def default_out(ckpt_path: Path, name: str) -> Path:
    return run_folder_of(ckpt_path) / "predict" / name


@torch.no_grad()
def sample(model, frames: torch.Tensor, audio: torch.Tensor, clip: int, n_past: int, nsample: int,
           seed: int) -> torch.Tensor:
    """``nsample`` futures of one clip (frames ``[T, 1, C, H, W]``, audio ``[T, 1, 1, F, S]``), drawn
    with the evaluation's noise for clip ``clip`` (:func:`evaluation.batch_noise`): ``[K, T, C, H, W]``."""
    total = frames.shape[0]
    # the evaluation's own prior-noise stream for this clip: the samples generate_sound2sight.py scores
    noise = evaluation.batch_noise(seed, [clip], evaluation._STREAM_PRIOR, (total - 1, nsample, model.noise_dim))
    eps = noise.permute(1, 0, 2, 3).reshape(total - 1, nsample, model.noise_dim).to(frames.device)
    gen = model.sample(frames[:n_past], audio, nsample, total - n_past, eps=eps)  # [T, 1, K, C, H, W]
    return gen[:, 0].float().clamp(0, 1).transpose(0, 1).cpu()  # [K, T, C, H, W]


def per_frame(gt: torch.Tensor, samples: torch.Tensor, context: torch.Tensor) -> dict[str, Any]:
    """SSIM/PSNR per future frame (release settings) of the best sample (per frame, the paper protocol),
    the samples' mean, and every baseline. gt ``[F, C, H, W]``, samples ``[K, F, C, H, W]``."""
    scores = score(gt[None].expand_as(samples), samples, ("ssim", "psnr"))  # {m: [K, F]}
    out: dict[str, Any] = {"model": {m: {"best": v.max(0).values.tolist(), "mean": v.mean(0).tolist()}
                                     for m, v in scores.items()}}
    for name, b in BASELINES.items():
        pred = b.predict(context[:, None], gt.shape[0])[:, 0]  # [F, C, H, W]
        out[name] = {m: v.tolist() for m, v in score(gt, pred, ("ssim", "psnr")).items()}
    return out


def video_frames(panels: list[torch.Tensor], kinds: list[str], labels: list[str], n_past: int,
                 scale: int) -> np.ndarray:
    """The labelled, framed panels (each ``[T, C, H, W]``) side by side, enlarged ``scale`` times."""
    big = [p.repeat_interleave(scale, -1).repeat_interleave(scale, -2) for p in panels]
    total = panels[0].shape[0]
    return key_strip(label_columns(framed_row(big, [gif_colours(total, n_past, k) for k in kinds]), labels))


@dataclass
class Clip:
    """One clip as the model reads it, with what the video needs."""

    frames: torch.Tensor       # [T, C, H, W] in [0, 1]
    features: torch.Tensor     # [T, 1, F, S] the audio features, scaled as the loader scales them
    sound: np.ndarray | None   # [T * L] mono, or None when the source keeps no waveform
    rate: int                  # the sound's sample rate
    fps: float
    name: str                  # "clip_<I>" or the video's file name


def data_settings(ckpt_path: Path, trained: dict[str, Any]) -> dict[str, Any]:
    """The ``dataset.json`` of the data the model was trained on: from its run's ``config.json``
    (which keeps it), else from its training ``--data_root`` when that is still there."""
    config = run_folder_of(ckpt_path) / "config.json"
    if config.is_file():
        data = json.loads(config.read_text()).get("data")
        if data:
            return data
    if trained.get("data_root") and (Path(trained["data_root"]) / "dataset.json").is_file():
        return dataset_info(trained["data_root"])
    raise InputError(f"cannot tell which frame rate and audio features {ckpt_path} reads: its run folder has no "
                     f"config.json and its training data ({trained.get('data_root') or 'unknown'}) is not here; "
                     "pass the run folder, or --data_root with a dataset made like its training data")


def video_clip(args: argparse.Namespace, info: dict[str, Any], total: int, n_past: int, cfg) -> Clip:
    """``--video`` decoded onto the training data's grid by the preparer's own code."""
    from data.prepare_av import SkipVideo, config_for_data, decode_video, model_inputs

    path = Path(args.video)
    if not path.is_file():
        raise InputError(f"--video {path} does not exist; pass a video file with sound")
    # seq_len 1: the decoder keeps any length; the context and one frame to predict are checked below
    av_cfg = dataclasses.replace(config_for_data(info), seq_len=1)
    try:
        decoded = decode_video(path, av_cfg)
    except SkipVideo as why:
        raise InputError(f"--video {path}: {why}; pass a file with a video and an audio stream") from None
    first = int(round(args.start * av_cfg.fps))
    have = len(decoded.frames) - first
    if args.start < 0 or have < n_past + 1:
        raise InputError(f"--video {path}: {max(have, 0)} frames at {av_cfg.fps} fps from --start {args.start} s, the "
                         f"model needs {n_past} context frames and at least one to predict; pass an earlier --start "
                         "or a longer video")
    n = min(total, have)
    spf = av_cfg.samples_per_frame
    frames, features = model_inputs(decoded.frames[first:first + n], decoded.audio[first * spf:(first + n) * spf],
                                    av_cfg)
    if tuple(features.shape[-2:]) != tuple(cfg.audio_shape):
        raise InputError(f"--video {path}: its audio features are {list(features.shape[-2:])}, the model reads "
                         f"{list(cfg.audio_shape)}; its run's config.json does not describe the data it was trained on")
    sound = np.asarray(decoded.audio[first * spf:(first + n) * spf], dtype=np.float32)
    return Clip(frames, features, sound, av_cfg.sample_rate, float(av_cfg.fps), path.stem)


def dataset_clip(args: argparse.Namespace, total: int, cfg) -> tuple[Clip, Any]:
    """Clip ``--clip`` of ``--data_root``'s ``--split``, and the split (for ``--audio_clip``)."""
    info = dataset_info(args.data_root)
    total = min(total, int(info["num_frames"]))
    dataset = open_dataset(args.data_root, args.split, total, image_width=cfg.image_width, channels=cfg.channels)
    check_args(args, len(dataset))
    frames, features = dataset[args.clip]
    sound, rate = clip_sound(args.data_root, args.split, args.clip, total) or (None, 0)
    return Clip(frames, features, sound, rate, float(info.get("fps") or 10), f"clip_{args.clip}"), dataset


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if bool(args.data_root) == bool(args.video):
        raise InputError("pass one clip source: --video FILE, or --data_root DIR with --clip I")
    if args.video and args.audio_clip is not None:
        raise InputError("--audio_clip J picks another clip of --data_root; it does not go with --video")
    for name, low in (("nsample", 1), ("scale", 1)):
        if getattr(args, name) < low:
            raise InputError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    ckpt_path = resolve_checkpoint(args.model_path, args.model_epoch)
    device = runtime.get_device(args.device)
    model, ckpt = load_model(ckpt_path, map_location=device)
    cfg, trained = model.cfg, ckpt.get("args") or {}
    n_past = int(trained.get("n_past", getattr(cfg, "n_past", 5)))
    total = int(trained.get("n_eval", n_past + int(trained.get("n_future", 10))))
    dataset = None
    if args.video:
        clip = video_clip(args, data_settings(ckpt_path, trained), total, n_past, cfg)
    else:
        evaluation.check_model_fits_data(cfg, dataset_info(args.data_root), ckpt_path, args.data_root, 1)
        clip, dataset = dataset_clip(args, total, cfg)
    total = clip.frames.shape[0]
    if total <= n_past:
        raise InputError(f"the clip has {total} frames, no future after the checkpoint's {n_past} context frames; "
                         f"use clips longer than {n_past} frames")
    out = Path(args.out) if args.out else default_out(ckpt_path, clip.name)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder")
    if (out / "prediction.json").exists() and not args.overwrite:
        raise InputError(f"{out} already holds a prediction; pass --overwrite to replace it, or another --out")
    check_output_folder(out, "--out")

    frames, audio = clip.frames[:, None].to(device), clip.features[:, None].to(device)  # [T, 1, C, H, W], [T, 1, 1, F, S]
    index = args.clip if dataset is not None else 0
    samples = sample(model, frames, audio if cfg.use_audio else None, index, n_past, args.nsample, args.seed)
    truth = clip.frames.float()  # [T, C, H, W]
    out.mkdir(parents=True, exist_ok=True)
    labels = ["real clip"] + [f"sample {k + 1}" for k in range(args.nsample)]
    write_video(out / "prediction.mp4", video_frames([truth, *samples], ["gt"] + ["sample"] * args.nsample, labels,
                                                     n_past, args.scale), clip.fps, clip.sound, clip.rate or 48000)
    atomic_save_npy(out / "predicted.npy", samples.numpy().astype(np.float32))
    result: dict[str, Any] = {
        "checkpoint": str(ckpt_path), "model_epoch": ckpt.get("epoch"),
        "source": {"video": str(args.video), "start_s": args.start} if args.video else
        {"data_root": str(args.data_root), "split": args.split, "clip": args.clip},
        "n_past": n_past, "n_future": total - n_past, "nsample": args.nsample, "seed": args.seed, "fps": clip.fps,
        "sound": clip.sound is not None,
        "scores": per_frame(truth[n_past:], samples[:, n_past:], truth[:n_past]),
        "files": ["prediction.mp4", "predicted.npy", "prediction.json"]}
    if args.audio_clip is not None:
        other_audio = dataset[args.audio_clip][1][:, None].to(device)
        other = sample(model, frames, other_audio if cfg.use_audio else None, args.clip, n_past, args.nsample,
                       args.seed)
        other_sound, _ = clip_sound(args.data_root, args.split, args.audio_clip, total) or (None, 0)
        name = f"what_if_audio_{args.audio_clip}"
        write_video(out / f"{name}.mp4",
                    video_frames([truth, samples[0], *other], ["gt", "sample"] + ["sample"] * args.nsample,
                                 ["real clip", "its sound"] + [f"sound of {args.audio_clip}, {k + 1}"
                                                               for k in range(args.nsample)], n_past, args.scale),
                    clip.fps, other_sound, clip.rate or 48000)
        atomic_save_npy(out / f"predicted_audio_{args.audio_clip}.npy", other.numpy().astype(np.float32))
        result["audio_clip"] = args.audio_clip
        result["audio_clip_scores"] = per_frame(truth[n_past:], other[:, n_past:], truth[:n_past])
        result["files"] += [f"{name}.mp4", f"predicted_audio_{args.audio_clip}.npy"]
    atomic_write_json(out / "prediction.json", result)
    best, cv = result["scores"]["model"], result["scores"]["constant_velocity"]
    print(f"{clip.name}: {args.nsample} samples of {total - n_past} frames after {n_past}; best-of-samples SSIM "
          f"{np.mean(best['ssim']['best']):.4f} PSNR {np.mean(best['psnr']['best']):.2f} dB (constant velocity "
          f"{np.mean(cv['ssim']):.4f} / {np.mean(cv['psnr']):.2f})"
          + ("" if clip.sound is not None else "; this dataset keeps no waveform, so the video is silent"))
    print(f"wrote {out}/ ({', '.join(result['files'])})")
    return result


if __name__ == "__main__":
    run_cli(main)
