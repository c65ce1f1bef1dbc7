"""Trained methods by name (methods.METHODS): checkpoints record their method and load through the
registry, ``--method`` picks the model and its flags, and a second method registered here (a toy
deterministic predictor) trains and is evaluated through the same scripts, unchanged."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field

import imageio.v3 as iio
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import checkpoints
import generate_sound2sight
import methods
import train_sound2sight
from errors import InputError
from models.sound2sight import Sound2Sight, Sound2SightConfig

TINY_S2S = dict(g_dim=16, rnn_size=32, z_dim=4, dim_ff=32, disc_rnn_size=16, nhead=2, nf=8, n_past=2)
TRAIN = ["--n_past", "3", "--n_future", "3", "--n_eval", "8", "--batch_size", "4", "--data_threads", "0",
         "--val_nsample", "2", "--device", "cpu", "--save_every", "0", "--niter", "1", "--epoch_size", "2",
         "--bn_recalibrate", "1"]
EVAL = ["--nsample", "3", "--N", "4", "--batch_size", "4", "--num_gifs", "1", "--no_tensorboard", "--device", "cpu"]


# ------------------------------------------------------------------ a toy second method
@dataclass
class ToyConfig:
    """A one-convolution next-frame predictor (fields as methods.MethodConfig asks)."""

    image_width: int = field(default=48, metadata={"help": "frame size"})
    channels: int = field(default=1, metadata={"help": "frame channels"})
    width: int = field(default=4, metadata={"help": "hidden channels of the toy's convolution"})
    n_past: int = field(default=5, metadata={"help": "context frames", "flag": False})
    audio_shape: tuple[int, int] = field(default=(23, 21), metadata={"help": "unused", "flag": False})
    use_audio: bool = field(default=False, metadata={"help": "never", "flag": False})


class ToyPredictor(nn.Module):
    """Deterministic: frame t = sigmoid(conv(frame t-1)); no latent, no audio, no posterior, no biases."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Conv2d(cfg.channels, cfg.width, 3, padding=1), nn.BatchNorm2d(cfg.width),
                                 nn.ReLU(), nn.Conv2d(cfg.width, cfg.channels, 3, padding=1))

    @property
    def noise_dim(self) -> int:
        return 0

    def step(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C, H, W]
        return torch.sigmoid(self.net(x))

    def forward(self, frames, audio, adv_weight: float = 0.0):
        steps = frames.shape[0] - 1
        pred = self.step(frames[:-1].flatten(0, 1)).reshape(frames[1:].shape)  # [T-1, B, C, H, W]
        mse = F.mse_loss(pred, frames[1:], reduction="none").flatten(2).mean(-1).mean(-1).sum()
        return {"loss": mse, "mse": (mse / steps).detach(), "pred": pred.detach()}

    def configure_optimizer(self, lr, disc_lr, beta1, name="adam"):
        return torch.optim.Adam([{"params": self.parameters(), "lr": lr, "name": "generator"}], lr=lr,
                                betas=(beta1, 0.999))

    @torch.no_grad()
    def sample(self, context, audio, nsample, n_future, eps=None):
        x = context[-1].repeat_interleave(nsample, 0)  # [B*S, C, H, W]
        out = list(context.repeat_interleave(nsample, 1).unbind(0))
        for _ in range(n_future):
            x = self.step(x)
            out.append(x)
        return torch.stack(out).reshape(len(out), context.shape[1], nsample, *context.shape[2:])


@pytest.fixture
def toy(monkeypatch):
    method = methods.Method("toy", lambda cfg: "Toy predictor", ToyConfig, ToyPredictor)
    monkeypatch.setitem(methods.METHODS, "toy", method)
    return method


# ------------------------------------------------------------------ the registry
def test_latent_prior_is_found_as_python_3_12_looks_attributes_up():
    """From Python 3.12, ``isinstance`` against a runtime-checkable protocol looks data members up
    with ``inspect.getattr_static``, which cannot see an nn.Module's submodules: the reason the
    library asks :func:`methods.has_latent_prior` (the prior's figures had vanished on 3.12)."""
    import inspect

    s2s = methods.METHODS["sound2sight"].build(Sound2SightConfig(**TINY_S2S))
    sentinel = object()
    assert inspect.getattr_static(s2s, "prior", sentinel) is sentinel  # what 3.12's isinstance would see
    assert methods.has_latent_prior(s2s)
    import prior_monitor

    frames, audio = torch.rand(3, 2, 1, 48, 48), torch.rand(3, 2, 1, *s2s.cfg.audio_shape)
    assert prior_monitor.prior_stats(s2s, frames, audio) is not None


def test_the_toy_fits_the_protocol_and_sound2sight_has_every_capability(toy):
    toy_model = toy.build(ToyConfig())
    assert isinstance(toy_model, methods.TrainedModel)
    assert not methods.has_latent_prior(toy_model) and not isinstance(toy_model, methods.PosteriorReconstruction)
    s2s = methods.METHODS["sound2sight"].build(Sound2SightConfig(**TINY_S2S))
    assert isinstance(s2s, methods.TrainedModel) and isinstance(s2s, methods.PosteriorReconstruction)
    assert methods.has_latent_prior(s2s)
    assert s2s.noise_dim == 4
    assert methods.of_model(s2s).name == "sound2sight" and methods.of_model(toy_model) is toy
    label = methods.METHODS["sound2sight"].label
    assert label(s2s.cfg) == "Sound2Sight"
    assert label(Sound2SightConfig(**TINY_S2S, use_audio=False, use_disc=False)) == "SVG-LP (no audio)"
    with pytest.raises(ValueError, match="not the model of any registered method"):
        methods.of_model(nn.Linear(1, 1))


def test_a_checkpoint_records_its_method_and_loads_through_the_registry(tmp_path, toy):
    torch.manual_seed(0)
    model = Sound2Sight(Sound2SightConfig(**TINY_S2S))
    opt = model.configure_optimizer(1e-3, 1e-3, 0.9)
    checkpoints.save_checkpoint(tmp_path / "s2s.pt", method="sound2sight", model=model, optimizer=opt, scaler=None,
                                epoch=1, best_val=0.5, args={})
    loaded, ckpt = checkpoints.load_model(tmp_path / "s2s.pt")
    assert ckpt["method"] == "sound2sight" and type(loaded) is Sound2Sight and loaded.cfg == model.cfg
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))

    # written before methods had names: no key, a Sound2Sight
    torch.save(model.checkpoint(), tmp_path / "old.pt")
    assert "method" not in torch.load(tmp_path / "old.pt", weights_only=True)
    assert type(checkpoints.load_model(tmp_path / "old.pt")[0]) is Sound2Sight

    # another method's checkpoint rebuilds that method's model
    toy_model = toy.build(ToyConfig(width=3))
    checkpoints.save_checkpoint(tmp_path / "toy.pt", method="toy", model=toy_model,
                                optimizer=toy_model.configure_optimizer(1e-3, 0, 0.9), scaler=None, epoch=1,
                                best_val=0.5, args={})
    loaded, ckpt = checkpoints.load_model(tmp_path / "toy.pt")
    assert ckpt["method"] == "toy" and type(loaded) is ToyPredictor and loaded.cfg == ToyConfig(width=3)

    # an unknown method: one line naming the file
    ckpt = torch.load(tmp_path / "s2s.pt", weights_only=True)
    ckpt["method"] = "svg_prime"
    torch.save(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(InputError) as err:
        checkpoints.load_model(tmp_path / "unknown.pt")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "unknown.pt") in message and "'svg_prime'" in message
    assert "sound2sight" in message  # the methods this version has


# ------------------------------------------------------------------ the command line
def test_method_flag_is_in_the_help_and_picks_the_model_flags(toy):
    text = " ".join(train_sound2sight.build_parser().format_help().split())
    assert f"--method {{{','.join(methods.METHODS)}}}" in text and "the trained method" in text
    assert list(methods.METHODS)[0] == "sound2sight" and list(methods.METHODS)[-1] == "toy"  # the default first
    assert "--z_dim" in text and "model (Sound2SightConfig)" in text   # the default method's flags
    toy_flags = {s for a in train_sound2sight.build_parser("toy")._actions for s in a.option_strings}
    assert "--width" in toy_flags and "--method" in toy_flags and "--z_dim" not in toy_flags
    args = train_sound2sight.parse_args(["--method", "toy", "--width", "7", "--data_root", "nowhere"])
    assert train_sound2sight.model_config(args, (23, 21)) == ToyConfig(width=7, n_past=args.n_past)
    with pytest.raises(SystemExit) as stop:  # one of the choices, or argparse's one-line error
        train_sound2sight.parse_args(["--method", "svg_prime"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit):  # Sound2Sight's flags are not the toy's
        train_sound2sight.parse_args(["--method", "toy", "--z_dim", "4"])


def test_bias_and_warmup_flags_a_method_cannot_take_are_one_line(tmp_path, tiny_data, toy):
    base = ["--method", "toy", "--data_root", str(tiny_data), *TRAIN]
    for flag, value, words in (("--logvar_bias", "-4", "--logvar_bias -4.0: method toy has no such bias"),
                               ("--output_bias", "-6", "--output_bias -6.0: method toy has no such bias"),
                               ("--kl_warmup", "1", "--kl_warmup: method toy has no kl scale")):
        with pytest.raises(InputError) as err:
            train_sound2sight.main([*base, "--log_dir", str(tmp_path / flag[2:]), flag, value])
        assert words in str(err.value) and "\n" not in str(err.value)
        assert not (tmp_path / flag[2:]).exists()  # refused before anything was written


# ------------------------------------------------------------------ the loops are method-agnostic
def test_a_registered_method_trains_and_is_evaluated_through_the_scripts(tmp_path, tiny_data, toy, capsys):
    log = train_sound2sight.main(["--method", "toy", "--width", "3", "--data_root", str(tiny_data),
                                  "--log_dir", str(tmp_path / "run"), *TRAIN])
    out = capsys.readouterr().out
    assert f"training Toy predictor on {tiny_data}" in out and "prior audio change" not in out
    config = json.loads((log / "config.json").read_text())
    assert config["method"] == "toy" and config["model_config"]["width"] == 3
    ckpt = torch.load(log / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["method"] == "toy" and ckpt["epoch"] == 1
    rows = list(csv.DictReader(open(log / "metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["train_mse_loss"]) > 0 and float(rows[0]["kld_loss"]) == 0
    assert float(rows[0]["val_ssim"]) == float(rows[0]["val_ssim"]) and not any(k.startswith("prior_") for k in rows[0])
    # the training's sample GIF: truth | 3 samples (no posterior column), 48-px frames framed by 2 px
    assert iio.imread(log / "samples" / "epoch_0001.gif").shape[2] == 4 * (48 + 4)

    # resuming it as another method is refused by name
    with pytest.raises(InputError, match="made by --method toy, this run asks for --method sound2sight"):
        train_sound2sight.main(["--data_root", str(tiny_data), "--log_dir", str(tmp_path / "run"), *TRAIN,
                                "--g_dim", "16", "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32",
                                "--disc_rnn_size", "16", "--nhead", "2", "--nf", "8", "--resume", "--niter", "2"])

    result = generate_sound2sight.main(["--model_path", str(log), "--log_dir", str(tmp_path / "eval"), *EVAL])
    metrics_json = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics_json["prior"] is None and metrics_json["use_audio"] is False
    # deterministic: its noise is empty, its 3 samples are one, so both protocols agree and diversity is 0
    assert result["diversity"] == pytest.approx(0.0, abs=1e-12)
    assert result["paper"]["ssim"] == pytest.approx(result["best"]["ssim"], abs=1e-12)
    assert 0 < result["paper"]["ssim"] < 1 and result["num_clips"] == 4
    # the evaluation GIF: truth | best | 3 random (no posterior column)
    assert iio.imread(tmp_path / "eval" / "gifs" / "clip_00000.gif").shape[2] == 5 * (48 + 4)
