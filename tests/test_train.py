"""train_sound2sight.py / training.py: schedule, exact resume, DDP, clear errors, learning."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoints
import demo
import runtime
import train_sound2sight
import training
from errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--g_dim", "16", "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32", "--disc_rnn_size", "16",
        "--nhead", "2", "--n_past", "3", "--n_future", "3", "--n_eval", "8", "--batch_size", "4",
        "--data_threads", "0", "--val_nsample", "2", "--device", "cpu", "--save_every", "0"]


def run(tmp: Path, data: Path, *extra: str) -> Path:
    argv = ["--data_root", str(data), "--log_dir", str(tmp), *TINY, *extra]
    return train_sound2sight.main(argv)


def test_model_flags_are_the_config_fields_with_the_original_names_and_defaults(tmp_path):
    """One table: every Sound2SightConfig field with a flag has it under its own name (or its
    ``no_`` switch), with the config's default; parsed flags give the same config back."""
    import dataclasses

    from models.sound2sight import Sound2SightConfig

    parser = train_sound2sight.build_parser()
    dests = {a.dest: a for a in parser._actions}
    original = ["image_width", "channels", "model", "g_dim", "z_dim", "rnn_size", "prior_rnn_layers",
                "posterior_rnn_layers", "predictor_rnn_layers", "audio_rnn_layers", "video_rnn_layers", "nhead",
                "dim_ff", "disc_rnn_size", "disc_layers", "disc_buffer", "beta", "last_frame_skip"]
    assert set(original) <= set(dests)
    for f in dataclasses.fields(Sound2SightConfig):
        flag = f.metadata.get("flag", f.name)
        if flag is False:
            assert f.name not in dests or f.name == "n_past"  # --n_past is the training's own flag
            continue
        action = dests[flag if isinstance(f.default, bool) and f.default else f.name]
        assert action.help, f.name
        assert action.default == (False if isinstance(f.default, bool) else f.default), f.name
    args = train_sound2sight.parse_args(["--data_root", str(tmp_path / "none"), "--nf", "8", "--no_disc",
                                         "--last_frame_skip", "--model", "vgg", "--image_width", "64"])
    cfg = train_sound2sight.model_config(args, (23, 21))
    assert cfg == Sound2SightConfig(nf=8, use_disc=False, last_frame_skip=True, model="vgg", image_width=64,
                                    n_past=args.n_past)
    with pytest.raises(SystemExit):  # the one list of choices
        train_sound2sight.parse_args(["--optimizer", "lbfgs"])


def test_adv_weight_schedule():
    b = 1e-4
    assert training.adv_weight(0, b) == 0.0
    assert training.adv_weight(1, b) == pytest.approx(1e-4)
    assert training.adv_weight(300, b) == pytest.approx(1e-4)
    assert training.adv_weight(301, b) == pytest.approx(5e-4)
    assert training.adv_weight(600, b) == pytest.approx(5e-4)
    assert training.adv_weight(601, b) == pytest.approx(1e-3)
    assert training.adv_weight(900, b) == pytest.approx(1e-3)
    assert training.adv_weight(901, b) == pytest.approx(1e-2)


def test_validate_scores_every_baseline():
    """``val_<column>_<metric>`` for every registered baseline: its prediction from the context scored on
    the future (copy-last-frame's MSE by hand)."""
    import metrics
    from baselines import BASELINES
    from models.sound2sight import Sound2Sight, Sound2SightConfig

    cfg = Sound2SightConfig(g_dim=16, rnn_size=32, z_dim=4, dim_ff=32, nhead=2, disc_rnn_size=16, n_past=2)
    torch.manual_seed(0)
    model = Sound2Sight(cfg)
    frames = torch.rand(5, 3, 1, 48, 48)                                     # [T, B, C, H, W]
    audio = torch.rand(5, 3, 1, *cfg.audio_shape)
    val = training.validate(model, frames, audio, 2, 3, 2, seed=0)
    gt = frames[2:].transpose(0, 1)                                           # [B, F, C, H, W]
    assert val["val_copy_last_mse"] == pytest.approx(float(((gt - frames[1:2].transpose(0, 1)) ** 2).mean()),
                                                      rel=1e-6)
    for b in BASELINES.values():
        want = metrics.score(gt, b.predict(frames[:2], 3).transpose(0, 1), training.VALIDATION_METRICS)
        for m in training.VALIDATION_METRICS:
            assert val[f"val_{b.column}_{m}"] == pytest.approx(float(want[m].mean()), rel=1e-9), (b.name, m)


def test_run_writes_everything(tmp_path, tiny_data):
    log = run(tmp_path / "run", tiny_data, "--niter", "2", "--epoch_size", "2")
    cfg = json.loads((log / "config.json").read_text())
    assert cfg["args"]["g_dim"] == 16 and cfg["model_config"]["audio_shape"] == [23, 21]
    rows = list(csv.DictReader(open(log / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and [int(r["epochs_done"]) for r in rows] == [1, 2]
    assert float(rows[0]["adv_weight"]) == 0.0 and float(rows[1]["adv_weight"]) > 0
    for key in ("train_mse_loss", "kld_loss", "disc_loss", "gen_loss", "g_adv", "val_min_mse", "val_ssim",
                "val_copy_last_mse", "val_constant_velocity_mse", "val_constant_velocity_ssim"):
        assert all(float(r[key]) == float(r[key]) for r in rows), key  # present and not NaN
    for f in ("checkpoints/last.pt", "checkpoints/best.pt", "losses.png", "samples/epoch_0001.gif",
              "samples/epoch_0002.gif"):
        assert (log / f).is_file(), f
    ckpt = torch.load(log / "checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "rng", "model_config", "args"}


def test_epoch_numbers_agree(tmp_path, tiny_data, capsys):
    """The console's "epoch N/M" counts from 1 and is the epochs done after it: the ``epoch`` of the
    checkpoint saved then (``best.pt`` for the last "*best*" line, ``epoch_N.pt``), ``samples/epoch_N.gif``
    and metrics.csv's ``epochs_done`` (its ``epoch`` column is the 0-based index)."""
    import re

    log = run(tmp_path / "run", tiny_data, "--niter", "3", "--epoch_size", "1", "--save_every", "1")
    out = capsys.readouterr().out
    assert "epochs 1..3," in out
    lines = re.findall(r"^epoch (\d+)/3: .*$", out, flags=re.M)
    assert lines == ["1", "2", "3"]
    best = [int(m) for m in re.findall(r"^epoch (\d+)/3: .*\*best\*$", out, flags=re.M)]
    assert best and torch.load(log / "checkpoints/best.pt", weights_only=True)["epoch"] == best[-1]
    rows = list(csv.DictReader(open(log / "metrics.csv")))
    assert [(int(r["epoch"]), int(r["epochs_done"])) for r in rows] == [(0, 1), (1, 2), (2, 3)]
    for n in (1, 2, 3):
        assert torch.load(log / f"checkpoints/epoch_{n}.pt", weights_only=True)["epoch"] == n
        assert (log / f"samples/epoch_{n:04d}.gif").is_file()
    run(tmp_path / "run", tiny_data, "--niter", "4", "--epoch_size", "1", "--resume")
    out = capsys.readouterr().out
    assert "after epoch 3/4" in out and "epochs 4..4," in out and re.search(r"^epoch 4/4: ", out, flags=re.M)


def _state(log: Path) -> dict:
    return torch.load(log / "checkpoints" / "last.pt", weights_only=True)


def test_resume_equals_straight_run(tmp_path, tiny_data):
    straight = run(tmp_path / "a", tiny_data, "--niter", "2", "--epoch_size", "3")
    run(tmp_path / "b", tiny_data, "--niter", "1", "--epoch_size", "3")
    resumed = run(tmp_path / "b", tiny_data, "--niter", "2", "--epoch_size", "3", "--resume")
    a, b = _state(straight), _state(resumed)
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(b["optimizer"]["state"][k][name])), (k, name)
    rows_a = list(csv.DictReader(open(straight / "metrics.csv")))
    rows_b = list(csv.DictReader(open(resumed / "metrics.csv")))
    assert [r["train_mse_loss"] for r in rows_a] == [r["train_mse_loss"] for r in rows_b]


def test_validates_every_nth_epoch_and_the_last():
    assert [e for e in range(7) if training.validates(e, 7, 3)] == [2, 5, 6]
    assert [e for e in range(3) if training.validates(e, 3, 1)] == [0, 1, 2]
    assert [e for e in range(2) if training.validates(e, 2, 5)] == [1]


def test_val_every_skips_validation_and_trains_the_same(tmp_path, tiny_data, capsys):
    """--val_every 2 over 3 epochs: validation (its metrics.csv columns, the sample GIF, the console's
    figures, best.pt) after epochs 2 and 3 only, and the very same training and final checkpoint as
    validating every epoch (validation draws from its own generators and leaves the weights alone)."""
    every = run(tmp_path / "every", tiny_data, "--niter", "3", "--epoch_size", "2")
    capsys.readouterr()
    second = run(tmp_path / "second", tiny_data, "--niter", "3", "--epoch_size", "2", "--val_every", "2")
    out = capsys.readouterr().out
    a, b = _state(every), _state(second)
    for k, v in a["model"].items():  # the BatchNorm statistics too: both re-estimated after the last epoch
        assert torch.equal(v, b["model"][k]), k
    rows_a = list(csv.DictReader(open(every / "metrics.csv")))
    rows_b = list(csv.DictReader(open(second / "metrics.csv")))
    assert [r["train_mse_loss"] for r in rows_a] == [r["train_mse_loss"] for r in rows_b]
    assert rows_b[0]["val_ssim"] == "" and rows_b[0]["prior_audio_change"] == ""
    for ra, rb in zip(rows_a[1:], rows_b[1:]):
        assert rb["val_ssim"] == ra["val_ssim"] and rb["val_min_mse"] == ra["val_min_mse"]
    assert sorted(p.name for p in (second / "samples").iterdir()) == ["epoch_0002.gif", "epoch_0003.gif"]
    assert torch.load(second / "checkpoints/best.pt", weights_only=True)["epoch"] in (2, 3)
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3 and "SSIM" not in lines[0] and all("SSIM" in line for line in lines[1:])
    assert (second / "losses.png").is_file()
    with pytest.raises(InputError, match="--val_every"):
        run(tmp_path / "zero", tiny_data, "--niter", "1", "--val_every", "0")


def test_resume_without_checkpoint_starts_afresh(tmp_path, tiny_data, capsys):
    run(tmp_path / "c", tiny_data, "--niter", "1", "--epoch_size", "1", "--resume")
    assert "starting afresh" in capsys.readouterr().out
    assert (tmp_path / "c" / "checkpoints" / "last.pt").is_file()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_says_so_and_is_never_overwritten(tmp_path, tiny_data, capsys):
    log = run(tmp_path / "d", tiny_data, "--niter", "1", "--epoch_size", "1", "--lr_schedule", "cosine")
    before = _files(log)
    capsys.readouterr()
    run(tmp_path / "d", tiny_data, "--niter", "1", "--epoch_size", "1", "--lr_schedule", "cosine")  # the same command
    out = capsys.readouterr().out
    assert "has finished its 1 epochs" in out and "--niter above 1" in out and "starting afresh" not in out
    assert _files(log) == before  # nothing trained, nothing rewritten


def test_a_differing_flag_is_refused_by_name_and_leaves_the_run_unchanged(tmp_path, tiny_data):
    log = run(tmp_path / "e", tiny_data, "--niter", "1", "--epoch_size", "1", "--lr_schedule", "cosine")
    before = _files(log)
    with pytest.raises(InputError, match=r"made with other settings: --g_dim 24 \(the run: 16\), --lr_schedule constant "
                                         r"\(the run: cosine\), --batch_size 2 \(the run: 4\); drop these"):
        train_sound2sight.main(["--log_dir", str(log), "--resume", "--g_dim", "24", "--batch_size", "2",
                                "--lr_schedule", "constant", "--niter", "2"])
    assert _files(log) == before


def test_a_continued_run_takes_its_own_settings_and_lists_what_may_change(tmp_path, tiny_data, capsys):
    log = run(tmp_path / "g", tiny_data, "--niter", "1", "--epoch_size", "2", "--lr_schedule", "cosine",
              "--output_bias", "-3", "--val_clips", "3")
    capsys.readouterr()
    train_sound2sight.main(["--log_dir", str(log), "--niter", "2"])  # no --resume, nothing else repeated
    out = capsys.readouterr().out
    assert "changed on this command line: --niter 2 (the run: 1)" in out
    cfg = json.loads((log / "config.json").read_text())["args"]
    assert (cfg["niter"], cfg["epoch_size"], cfg["lr_schedule"], cfg["output_bias"], cfg["val_clips"],
            cfg["batch_size"], cfg["g_dim"]) == (2, 2, "cosine", -3.0, 3, 4, 16)
    assert "explicit" not in cfg and "continued" not in cfg
    rows = list(csv.DictReader(open(log / "metrics.csv")))
    assert [float(r["lr"]) for r in rows] == [0.002, 0.002 * 0.5 * (1 + math.cos(math.pi / 2))]


def test_bad_inputs(tmp_path, tiny_data):
    with pytest.raises(InputError, match="nope"):
        run(tmp_path / "f", tmp_path / "nope", "--niter", "1")
    with pytest.raises(InputError, match="have 10"):
        run(tmp_path / "g", tiny_data, "--niter", "1", "--n_future", "20")
    with pytest.raises(InputError, match="image"):
        run(tmp_path / "h", tiny_data, "--niter", "1", "--image_width", "64")
    with pytest.raises(SystemExit):
        run(tmp_path / "i", tiny_data, "--model", "resnet")
    with pytest.raises(InputError, match="fewer than one batch"):
        run(tmp_path / "j", tiny_data, "--niter", "1", "--batch_size", "64")
    for name in "fghj":  # a start that failed leaves no empty run folder behind
        assert not (tmp_path / name).exists(), name
    (tmp_path / "k").mkdir()
    with pytest.raises(InputError):
        run(tmp_path / "k", tiny_data, "--niter", "1", "--batch_size", "64")
    assert (tmp_path / "k").is_dir()  # a folder the user made stays


def test_worker_cap_is_said_only_when_asked_for(tmp_path, tiny_data, capsys):
    cores = len(os.sched_getaffinity(0))
    run(tmp_path / "a", tiny_data, "--niter", "1", "--epoch_size", "1", "--num_workers", str(cores + 1))
    assert f"--num_workers {cores + 1}: this machine" in capsys.readouterr().out
    i = TINY.index("--data_threads")
    train_sound2sight.main(["--data_root", str(tiny_data), "--log_dir", str(tmp_path / "b"), *TINY[:i], *TINY[i + 2:],
                            "--niter", "1", "--epoch_size", "1"])
    assert "--num_workers" not in capsys.readouterr().out  # the release's default of 5, capped silently


def test_training_lowers_reconstruction_loss(tmp_path, tiny_data):
    log = run(tmp_path / "k", tiny_data, "--niter", "4", "--epoch_size", "4", "--no_disc", "--lr", "0.002")
    mse = [float(r["train_mse_loss"]) for r in csv.DictReader(open(log / "metrics.csv"))]
    assert mse[-1] < 0.8 * mse[0], mse


def test_no_audio_ablation_trains(tmp_path, tiny_data):
    log = run(tmp_path / "l", tiny_data, "--niter", "1", "--epoch_size", "1", "--no_audio")
    assert json.loads((log / "config.json").read_text())["model_config"]["use_audio"] is False


def test_two_process_gloo(tmp_path, tiny_data):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train_sound2sight.py"), "--data_root", str(tiny_data), "--log_dir", str(tmp_path / "ddp"),
           *TINY, "--niter", "1", "--epoch_size", "2"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2 and ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_demo_with_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(demo.DATA, "num_train", 24)
    monkeypatch.setitem(demo.DATA, "num_test", 8)
    log = train_sound2sight.main(["--demo", "--log_dir", str(tmp_path / "demo"), "--niter", "2", "--epoch_size", "2",
                                  "--g_dim", "16", "--rnn_size", "32", "--disc_rnn_size", "16", "--batch_size", "4",
                                  "--eval_nsample", "2", "--device", "cpu"])
    assert (log / "m3so_nb_data" / "dataset.json").is_file()
    (eval_dir,) = (log / "eval").iterdir()  # one folder per checkpoint and settings
    m = json.loads((eval_dir / "metrics.json").read_text())
    assert 0 < m["paper"]["ssim"] <= 1 and 0 < m["copy_last_frame"]["paper"]["ssim"] <= 1
    assert m["checkpoint"].endswith("last.pt") and m["num_clips"] == 8  # the final model, all test clips
    args = json.loads((log / "config.json").read_text())["args"]
    assert args["n_future"] == 10 and args["niter"] == 2  # demo default kept, explicit flag wins
    assert (args["output_bias"], args["lr_schedule"], args["val_clips"], args["logvar_bias"]) == (-6.0, "cosine", 64, -4.0)
    out = capsys.readouterr().out
    assert "Sound2Sight   copy last frame   constant velocity" in out and f"{m['paper']['ssim']:.4f}" in out
    assert f"{m['constant_velocity']['paper']['ssim']:.4f}" in out  # every baseline beside it
    drop = m["audio_shuffled"]["drop"]["paper"]  # the demo scores swapped audio too, and says what it costs
    assert f"swapped audio costs SSIM {drop['ssim']:+.4f}, PSNR {drop['psnr']:+.2f} dB" in out
    assert f"prior's change under swapped audio {m['prior']['audio_change']:.3g}" in out
    ckpt = torch.load(log / "checkpoints" / "last.pt", weights_only=True)
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == pytest.approx([0.001, 0.00125])  # cosine


def test_amp_bf16_autocast_on_cpu(tmp_path, tiny_data):
    """--amp on CPU: the step runs under bfloat16 autocast and still trains to finite losses."""
    from models.sound2sight import Sound2Sight, Sound2SightConfig

    model = Sound2Sight(Sound2SightConfig(nf=8, g_dim=16, rnn_size=32, z_dim=4, dim_ff=32, disc_rnn_size=16,
                                          nhead=2, n_past=3))
    frames, audio = torch.rand(6, 4, 1, 48, 48), torch.rand(6, 4, 1, 23, 21)
    seen = []
    hook = model.encoder.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    opt = model.configure_optimizer(0.002, 0.0025, 0.9)
    terms = training.train_step(model, opt, frames, audio, 1e-4, amp=True)
    hook.remove()
    assert seen and seen[0] == torch.bfloat16
    assert all(v == v and abs(v) < float("inf") for v in terms.values())
    log = run(tmp_path / "amp", tiny_data, "--niter", "1", "--epoch_size", "1", "--amp", "--nf", "8")
    assert float(list(csv.DictReader(open(log / "metrics.csv")))[0]["train_mse_loss"]) > 0


def test_compiled_step_equals_eager_step(tmp_path, tiny_data):
    """--compile: the compiled model's training step gives the eager step's losses (the
    dynamo-traced graph; the 'eager' backend keeps the test fast, inductor takes minutes on CPU)."""
    from models.sound2sight import Sound2Sight, Sound2SightConfig

    cfg = Sound2SightConfig(nf=8, g_dim=16, rnn_size=32, z_dim=4, dim_ff=32, disc_rnn_size=16, nhead=2, n_past=3)
    frames, audio = torch.rand(6, 4, 1, 48, 48), torch.rand(6, 4, 1, 23, 21)
    terms = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = Sound2Sight(cfg).train()
        opt = model.configure_optimizer(0.002, 0.0025, 0.9)
        net = torch.compile(model, backend="eager") if compiled else model
        terms.append([training.train_step(net, opt, frames, audio, w) for w in (0.0, 1e-4)])
    for eager, comp in zip(*terms):
        assert eager.keys() == comp.keys()
        assert all(abs(eager[k] - comp[k]) <= 1e-5 * max(1.0, abs(eager[k])) for k in eager), (eager, comp)
    log = run(tmp_path / "c", tiny_data, "--niter", "1", "--epoch_size", "1", "--nf", "8",
              "--compile", "--compile_backend", "eager")
    assert json.loads((log / "config.json").read_text())["args"]["compile"] is True


def test_recalibrate_batchnorm_averages_batch_statistics_and_touches_nothing_else():
    from models.sound2sight import Sound2Sight, Sound2SightConfig

    torch.manual_seed(0)
    model = Sound2Sight(Sound2SightConfig(g_dim=16, rnn_size=32, z_dim=4, disc_rnn_size=16, dim_ff=32, n_past=2))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(4, 3, 1, 48, 48, generator=g), torch.rand(4, 3, 1, 23, 21, generator=g)) for _ in range(2)]
    bn = model.encoder.stages[0][1] if hasattr(model.encoder, "stages") else training.batchnorm_layers(model.encoder)[0]
    # the reference: each batch's own statistics (momentum 1 keeps only the newest), then their mean
    per_batch = []
    for frames, audio in batches:
        bn.momentum = 1.0
        with torch.no_grad():
            model.train()(frames, audio, 0.0)
        per_batch.append((bn.running_mean.clone(), bn.running_var.clone()))
    bn.momentum = 0.1
    params = {n: p.clone() for n, p in model.named_parameters()}
    model.eval()
    rng = torch.get_rng_state()
    training.recalibrate_batchnorm(model, batches)
    assert torch.equal(torch.get_rng_state(), rng)  # training's RNG stream is untouched
    assert not model.training and bn.momentum == 0.1
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    torch.testing.assert_close(bn.running_mean, (per_batch[0][0] + per_batch[1][0]) / 2)
    torch.testing.assert_close(bn.running_var, (per_batch[0][1] + per_batch[1][1]) / 2)
    stale = bn.running_mean.clone()
    training.recalibrate_batchnorm(model, [])  # nothing to average over: nothing changes
    assert torch.equal(bn.running_mean, stale)


def test_optimizer_state_of_a_legacy_checkpoint_is_reindexed():
    """Checkpoints from before the prior/posterior modules: parameters had other names and another
    order; each parameter's Adam state must land on the same parameter."""
    from models.sound2sight import Sound2Sight, Sound2SightConfig

    torch.manual_seed(0)
    model = Sound2Sight(Sound2SightConfig(g_dim=8, rnn_size=16, z_dim=2, disc_rnn_size=8, dim_ff=16, nhead=2,
                                          n_past=2, nf=4))
    opt = model.configure_optimizer(0.002, 0.0025, 0.9)
    frames, audio = torch.rand(4, 2, 1, 48, 48), torch.rand(4, 2, 1, 23, 21)
    training.train_step(model, opt, frames, audio, 0.5)
    names = [n for n, _ in model.named_parameters()]
    index = {p: i for i, p in enumerate(q for g in opt.param_groups for q in g["params"])}
    state_by_name = {n: opt.state_dict()["state"][index[p]] for n, p in model.named_parameters() if p in index}

    def legacy(name: str) -> str:
        for new, old in (("posterior.transformer.", "posterior_transformer."), ("prior.transformer.", "prior_transformer."),
                         ("posterior.lstm.", "posterior."), ("prior.lstm.", "prior.")):
            if name.startswith(new):
                return old + name[len(new):]
        return name

    order = ["encoder", "decoder", "audio_encoder", "audio_transformer", "posterior_transformer", "prior_transformer",
             "posterior", "prior", "predictor", "disc"]
    old_names = sorted((legacy(n) for n in model.state_dict()), key=lambda k: order.index(k.split(".")[0]))
    old_params = [legacy(n) for n in names]
    old_params = [n for n in old_names if n in old_params]
    back = {legacy(n): n for n in names}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    gen = [n for n in old_params if not n.startswith("disc.")]
    dis = [n for n in old_params if n.startswith("disc.") and back[n] in trainable]
    saved_state = {i: state_by_name[back[n]] for i, n in enumerate(gen + dis)}
    groups = opt.state_dict()["param_groups"]
    saved = {"state": saved_state, "param_groups": [{**groups[0], "params": list(range(len(gen)))},
                                                    {**groups[1], "params": list(range(len(gen), len(gen) + len(dis)))}]}
    assert old_params != [legacy(n) for n in names]  # the order really differs
    fresh = model.configure_optimizer(0.002, 0.0025, 0.9)
    fresh.load_state_dict(checkpoints.migrate_optimizer_state(saved, dict.fromkeys(old_names), model))
    for n, p in model.named_parameters():
        if n in state_by_name:
            for key, value in state_by_name[n].items():
                assert torch.equal(torch.as_tensor(fresh.state[p][key]), torch.as_tensor(value)), (n, key)
    same = opt.state_dict()
    assert checkpoints.migrate_optimizer_state(same, model.state_dict(), model) is same  # today's names: unchanged


def test_lr_schedules():
    assert training.lr_scale(5, 10, "constant") == 1.0
    assert training.lr_scale(0, 10, "cosine") == 1.0
    assert training.lr_scale(5, 10, "cosine") == pytest.approx(0.5)
    assert training.lr_scale(9, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    with pytest.raises(ValueError, match="cosine"):
        training.lr_scale(0, 10, "step")


def test_cosine_schedule_sets_both_groups_and_resumes(tmp_path, tiny_data):
    log = run(tmp_path / "cos", tiny_data, "--niter", "2", "--epoch_size", "1", "--lr_schedule", "cosine",
              "--output_bias", "-3")
    rows = list(csv.DictReader(open(log / "metrics.csv")))
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.002, 0.001])
    opt = torch.load(log / "checkpoints" / "last.pt", weights_only=True)["optimizer"]
    assert [g["lr"] for g in opt["param_groups"]] == pytest.approx([0.001, 0.00125])  # epoch 1's rates
    bias = torch.load(log / "checkpoints" / "last.pt", weights_only=True)["model"]["decoder.last.0.bias"]
    assert float(bias.mean()) == pytest.approx(-3.0, abs=0.05)  # --output_bias, moved by 2 Adam steps only


def _train_cmd(log: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train_sound2sight.py"), "--data_root", str(data), "--log_dir", str(log),
            *TINY, *extra]


def test_sigterm_stops_cleanly_and_resume_equals_a_straight_run(tmp_path, tiny_data):
    """A real SIGTERM to a real training process: exit 128+15, last.pt written, the printed resume
    command continues exactly as if nothing had happened."""
    import signal
    import time

    flags = ("--niter", "3", "--epoch_size", "4", "--batch_size", "2", "--bn_recalibrate", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(_train_cmd(tmp_path / "a", tiny_data, *flags), env=env, capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
    assert straight.returncode == 0, straight.stderr[-2000:]
    log = tmp_path / "b"
    proc = subprocess.Popen(_train_cmd(log, tiny_data, *flags), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 240
    while not (log / "checkpoints" / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # inside epoch 1 (or its validation): either is a safe point
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM received" in err and "Resume with:" in err
    line = next(x for x in err.splitlines() if "stopped " in x)
    assert line.split("stopped ")[0].replace("\r", "").strip() == ""  # on its own line, not after the progress bar
    resume_line = err.strip().splitlines()[-1].strip()
    assert resume_line.startswith("python train_sound2sight.py") and resume_line.endswith("--resume")
    assert "Traceback" not in err
    stopped = torch.load(log / "checkpoints" / "last.pt", weights_only=True)
    assert stopped["epoch"] < 3
    assert resume_line == f"python train_sound2sight.py --log_dir {log} --resume"
    # nothing repeated but the run folder: its own settings come from it
    resumed = subprocess.run([sys.executable, "train_sound2sight.py", "--log_dir", str(log), "--resume"], env=env,
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "with the run's own settings" in resumed.stdout and "changed on this command line" not in resumed.stdout
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _state(tmp_path / "a"), _state(log)
    assert a["epoch"] == b["epoch"] == 3 and "partial_epoch" not in b
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    rows_a = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(log / "metrics.csv")))
    assert [r["train_mse_loss"] for r in rows_a] == [r["train_mse_loss"] for r in rows_b]  # the epoch means too
    assert not (log / ".lock").exists()


def test_partial_epoch_checkpoint_resumes_mid_epoch(tmp_path, tiny_data, monkeypatch):
    """The mid-epoch path itself (the signal test may land on an epoch boundary): a stop requested
    before iteration 2 of epoch 1 writes partial_epoch, and resuming from it matches a straight run."""
    from signals import StopSignals

    straight = run(tmp_path / "a", tiny_data, "--niter", "2", "--epoch_size", "4", "--batch_size", "2")
    calls = {"n": 0}
    real = runtime.stop_agreed

    def stop_at_seventh(stop, device, world):
        calls["n"] += 1
        if calls["n"] == 7:  # epoch 0: 4 checks + 1 at its end; epoch 1: checks 6, 7 -> stop before iteration 1
            stop.requested = 15
        return real(stop, device, world)

    monkeypatch.setattr(runtime, "stop_agreed", stop_at_seventh)
    with pytest.raises(SystemExit) as code:
        run(tmp_path / "b", tiny_data, "--niter", "2", "--epoch_size", "4", "--batch_size", "2")
    assert code.value.code == 143
    ckpt = _state(tmp_path / "b")
    assert ckpt["epoch"] == 1 and ckpt["partial_epoch"]["iteration"] == 1
    monkeypatch.setattr(runtime, "stop_agreed", real)
    resumed = run(tmp_path / "b", tiny_data, "--niter", "2", "--epoch_size", "4", "--batch_size", "2", "--resume")
    a, b = _state(straight), _state(resumed)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert StopSignals().requested == 0


def test_run_lock_refuses_a_live_owner_and_a_killed_owners_file_does_not_block(tmp_path, tiny_data, capsys,
                                                                                 lock_holder):
    log = tmp_path / "run"
    log.mkdir()
    holder = lock_holder(log, "training")
    with pytest.raises(InputError, match=f"in use by another training \\(process {holder.pid}\\)"):
        run(log, tiny_data, "--niter", "1", "--epoch_size", "1")
    assert not (log / "checkpoints").exists()  # nothing was written
    holder.kill()  # killed outright: its file stays, naming it; the kernel released its lock
    holder.wait()
    assert (log / ".lock").read_text().split()[0] == str(holder.pid)
    run(log, tiny_data, "--niter", "1", "--epoch_size", "1")
    assert f"left by process {holder.pid}" in capsys.readouterr().err
    assert (log / "checkpoints" / "last.pt").is_file() and not (log / ".lock").exists()


def test_tensorboard_event_files(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = run(tmp_path / "tb", tiny_data, "--niter", "2", "--epoch_size", "3")
    acc = EventAccumulator(str(log / "tensorboard" / "train"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [e.step for e in acc.Scalars("train/train_mse_loss")] == list(range(6))  # every iteration
    assert [e.step for e in acc.Scalars("val/ssim")] == [3, 6]  # every epoch
    assert [round(e.value, 6) for e in acc.Scalars("schedule/adv_weight")] == [0.0, 0.0001]
    clip_tags = [t for t in tags["images"] if t.startswith("samples/clip_")]
    assert len(clip_tags) == 4 and all(len(acc.Images(t)) == 2 for t in clip_tags)  # 4 clips, every epoch
    img = acc.Images(clip_tags[0])[0]
    assert (img.height, img.width) == (5 * 52, 8 * 52)  # rows: truth, posterior, 3 samples; 8 frames across
    # the evaluation's run sits at the training iterations behind its checkpoint: one x-axis for both
    import evaluation

    settings = evaluation.EvalSettings(n_past=3, n_future=3, nsample=2, num_clips=2, batch_size=2)
    evaluation.evaluate_checkpoint(log / "checkpoints" / "last.pt", str(tiny_data), log / "eval", settings,
                                   device=torch.device("cpu"))
    ev = EventAccumulator(str(log / "eval" / "tensorboard" / "eval"), size_guidance={"scalars": 0})
    ev.Reload()
    assert [e.step for e in ev.Scalars("eval/paper/model_ssim")] == [6] == [acc.Scalars("val/ssim")[-1].step]
    assert torch.load(log / "checkpoints" / "last.pt", weights_only=True)["iterations"] == 6
    none = run(tmp_path / "none", tiny_data, "--niter", "1", "--epoch_size", "1", "--no_tensorboard")
    assert not (none / "tensorboard").exists()


def test_clip_strips_lay_each_clip_out_in_time():
    t, h, w, clips, kinds = 3, 4, 5, 2, 3
    grid = np.random.default_rng(0).integers(0, 255, (t, 14 + clips * h + 12, kinds * w, 3), dtype=np.uint8)
    strips = training.clip_strips(grid, clips, kinds)
    assert len(strips) == clips and strips[0].shape == (kinds * h, t * w, 3)
    for b in range(clips):
        for k in range(kinds):
            for i in range(t):  # clip b, row k, time i is the grid's frame i at that clip's row and kind's column
                np.testing.assert_array_equal(strips[b][k * h:(k + 1) * h, i * w:(i + 1) * w],
                                              grid[i, 14 + b * h:14 + (b + 1) * h, k * w:(k + 1) * w])


def test_cap_workers(capsys):
    cores = len(os.sched_getaffinity(0))
    assert runtime.cap_workers(0) == 0 and runtime.cap_workers(1) == 1
    assert runtime.cap_workers(cores + 3) == cores and "using" in capsys.readouterr().out
    assert runtime.cap_workers(cores + 3, world=cores * 2, say=False) == 1
    args = train_sound2sight.parse_args(["--num_workers", "1"])
    assert args.data_threads == 1 and train_sound2sight.parse_args(["--data_threads", "2"]).data_threads == 2


def test_bad_clip_found_by_a_loader_worker_is_one_line(tmp_path, tiny_data):
    """NaN features in a clip the open-time scan skips: raised inside a DataLoader worker, shown
    as the same one line (file, clip, fix), exit status 2, no traceback."""
    import shutil

    import numpy as np

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    stft = np.load(data / "train" / "stft.npy")
    stft[5, 2, 3, 4] = np.nan  # clip 5: not among the clips scanned when the split is opened
    np.save(data / "train" / "stft.npy", stft)
    cmd = _train_cmd(tmp_path / "run", data, "--niter", "1", "--epoch_size", "4", "--num_workers", "1",
                     "--bn_recalibrate", "0")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "stft.npy: clip 5 has NaN/inf audio features" in lines[0]
    assert "Traceback" not in proc.stderr and "Original" not in proc.stderr


def test_the_release_training_command_runs_as_written(tmp_path):
    """The release README's M3SO command, flag for flag (script name changed, paths real), with
    the budget and widths shrunk by flags appended after it."""
    from M3SO_Gen_Code.generate_m3so import generate

    data = generate(tmp_path / "m3so", num_train=8, num_test=4, seed=2, progress=False)  # 30-frame clips
    paper = ["--dataset", "smmnist", "--data_root", str(data), "--n_past", "5", "--n_future", "15", "--n_eval", "30",
             "--batch_size", "110", "--niter", "1001", "--image_width", "48", "--channels", "1", "--model", "dcgan"]
    tiny = ["--batch_size", "4", "--niter", "1", "--epoch_size", "1", "--g_dim", "16", "--rnn_size", "32",
            "--z_dim", "4", "--dim_ff", "32", "--disc_rnn_size", "16", "--nhead", "2", "--nf", "8",
            "--val_nsample", "1", "--log_dir", str(tmp_path / "lp")]
    log = train_sound2sight.main(paper + tiny)
    cfg = json.loads((log / "config.json").read_text())
    assert cfg["args"]["n_eval"] == 30 and cfg["args"]["n_future"] == 15 and cfg["args"]["dataset"] == "smmnist"
    import generate_sound2sight

    out = tmp_path / "log_directory"
    out.mkdir()
    generate_sound2sight.main(["--model_path", str(log / "checkpoints" / "last.pt"), "--data_root", str(data),
                               "--n_past", "5", "--n_future", "25", "--nsample", "100", "--N", "1000",
                               "--model_epoch", "1000", "--log_path", str(out),
                               "--nsample", "2", "--N", "2", "--log_dir", str(tmp_path / "eval")])
    assert json.loads((out / "results_epoch_1000.json").read_text())["n_future"] == 25
