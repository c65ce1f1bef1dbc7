"""Trained methods by name: what ``train_sound2sight.py`` trains, a checkpoint records and the
evaluation scores (the trained-method half of "what can be evaluated and compared"; the
evaluation-only half is :mod:`baselines`).

A :class:`Method` names a config dataclass and a model class. Training takes ``--method``
(default ``sound2sight``) and makes one flag per field of that method's config
(:func:`cli.add_config_flags`); the checkpoint records ``"method": name`` beside
``model_config``; :func:`checkpoints.load_model` rebuilds the model through :data:`METHODS`
(a checkpoint without the key is a Sound2Sight one, written before methods had names). So a
new trained method is its model module in ``models/``, one entry in :data:`METHODS` and a test.

What every method's model provides is :class:`TrainedModel`. Some callers use more when the
model has it, and say plainly what they leave out when it does not:

* :class:`LatentPrior` (a learned prior and posterior over a latent): :mod:`prior_monitor`'s
  figures (``prior_*`` columns of the training log, ``metrics.json``'s ``prior``); without it
  they are left out;
* :class:`PosteriorReconstruction`: the posterior row of the evaluation GIFs and of the
  training's sample GIFs; without it that row is left out;
* ``init_output_bias(value)`` / ``init_logvar_bias(value)``: ``--output_bias`` /
  ``--logvar_bias``; a non-zero flag for a model without the hook is one ``InputError`` line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from errors import InputError
from models.deterministic import DeterministicConfig, DeterministicPredictor
from models.latent import migrate_state_dict
from models.sound2sight import Sound2Sight, Sound2SightConfig, migrate_config


class MethodConfig(Protocol):
    """The fields of a method's config dataclass that training and evaluation read.

    The dataclass must also take ``audio_shape`` and ``n_past`` as keyword arguments (training
    sets them from the data and ``--n_past``; give those fields ``flag=False`` metadata, see
    :func:`cli.add_config_flags`), and raise ``ValueError`` for a bad combination of fields
    (training turns it into one ``InputError`` line)."""

    image_width: int                # frames are [C, image_width, image_width]
    channels: int
    n_past: int                     # context frames it was trained with
    use_audio: bool                 # whether it reads the audio (False: audio may be None)
    audio_shape: tuple[int, int]    # per-frame audio features (F, S) it reads when use_audio


@runtime_checkable
class TrainedModel(Protocol):
    """What a trained method's model (an ``nn.Module``) must provide to be trained and evaluated.

    Frames are time-major ``[T, B, C, H, W]`` in [0, 1]; audio ``[T, B, 1, F, S]`` (scaled
    features), or None for a model that reads none."""

    cfg: Any  # a MethodConfig

    @property
    def noise_dim(self) -> int:
        """Width ``z`` of the standard-normal noise :meth:`sample` reads per step and sequence
        (``eps [T-1, B*nsample, z]``); 0 for a deterministic method (its ``eps`` is then empty)."""

    def forward(self, frames: torch.Tensor, audio: torch.Tensor | None,
                adv_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """One training computation. Returns ``loss`` (the one scalar to backward) and the
        detached scalar terms training logs: ``mse`` (per predicted step) and, where the method
        has them, ``kld``, ``g_adv``, ``d_loss``, ``syn_loss`` (0 where absent:
        :func:`training.logged_figures`). ``--kl_warmup`` / ``--noise_warmup`` pass the keyword
        arguments ``kl_scale`` / ``noise_scale`` as well; training refuses those flags for a
        ``forward`` without them."""

    def configure_optimizer(self, lr: float, disc_lr: float, beta1: float,
                            name: str = "adam") -> torch.optim.Optimizer:
        """One optimiser for the whole model. Parameter groups named ``"generator"`` follow
        ``--lr`` (times the schedule), any other group ``--disc_lr``."""

    def sample(self, context: torch.Tensor, audio: torch.Tensor | None, nsample: int, n_future: int,
               eps: torch.Tensor | None = None) -> torch.Tensor:
        """``nsample`` futures per clip: context ``[n_past, B, C, H, W]``, audio
        ``[n_past + n_future, B, 1, F, S]``, ``eps [T-1, B*nsample, noise_dim]`` (drawn if None)
        -> ``[T, B, nsample, C, H, W]``, the context first. The same ``eps`` gives the same
        frames (the evaluation's per-clip noise relies on it)."""


@runtime_checkable
class LatentPrior(Protocol):
    """A latent with a learned prior and posterior (what :func:`prior_monitor.prior_stats` reads):
    ``encode_frames(frames [T, B, ...]) -> (h [T, B, g], skips)``, ``audio_context(audio) ->
    [T-1, B, g] | None``, and ``prior`` / ``posterior`` with ``forward_seq(h, a_ctx) -> (mu,
    logvar, state)`` (:class:`models.latent.LatentNetwork`)."""

    prior: Any
    posterior: Any

    def encode_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def audio_context(self, audio: torch.Tensor | None) -> torch.Tensor | None: ...


def has_latent_prior(model: Any) -> bool:
    """Whether ``model`` is a :class:`LatentPrior`. Ask this, not ``isinstance(model, LatentPrior)``:
    from Python 3.12 ``isinstance`` against a runtime-checkable protocol looks its data members up
    with ``inspect.getattr_static``, which cannot see an ``nn.Module``'s submodules (kept in its
    ``_modules``, reached through ``__getattr__``), so it answers False for every model there and
    the prior's figures silently disappeared. ``hasattr`` sees them on every version."""
    return all(hasattr(model, name) for name in ("prior", "posterior")) and all(
        callable(getattr(model, name, None)) for name in ("encode_frames", "audio_context"))


@runtime_checkable
class PosteriorReconstruction(Protocol):
    """The posterior rows of the GIFs: ``reconstruct(frames, audio) -> [T, B, C, H, W]`` (teacher
    forced, the training's sample GIFs) and ``reconstruct_generated(frames, audio, n_past, eps)``
    (the evaluation GIFs, ``eps [T-1, B, noise_dim]``); see :class:`models.sound2sight.Sound2Sight`."""

    def reconstruct(self, frames: torch.Tensor, audio: torch.Tensor | None,
                    eps: torch.Tensor | None = None) -> torch.Tensor: ...

    def reconstruct_generated(self, frames: torch.Tensor, audio: torch.Tensor | None, n_past: int,
                              eps: torch.Tensor | None = None) -> torch.Tensor: ...


def _same(d: dict) -> dict:
    return d


@dataclass(frozen=True)
class Method:
    """A trained method: its registry name, how it is labelled, its config and its model.

    ``label(cfg)`` names the trained model in the console, plots and the demo's table (it may
    depend on the config: Sound2Sight without audio is "SVG-LP (no audio)").
    ``migrate_config`` / ``migrate_state`` turn a checkpoint's ``model_config`` dict and state
    dict written by an older version into today's (identity for a method without history)."""

    name: str
    label: Callable[[Any], str]
    config: type
    model: type
    migrate_config: Callable[[dict[str, Any]], dict[str, Any]] = _same
    migrate_state: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _same

    def build(self, cfg: Any) -> torch.nn.Module:
        """A freshly initialised model of ``cfg`` (the caller seeds the RNG first)."""
        return self.model(cfg)


def _sound2sight_label(cfg: Sound2SightConfig) -> str:
    return "Sound2Sight" if cfg.use_audio else "SVG-LP (no audio)"


#: Every trained method by name; ``--method``'s choices. The first is the default.
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sound2sight", _sound2sight_label, Sound2SightConfig, Sound2Sight,
           migrate_config=migrate_config, migrate_state=migrate_state_dict),
    Method("deterministic", lambda cfg: "deterministic predictor", DeterministicConfig, DeterministicPredictor),
)}
DEFAULT_METHOD = "sound2sight"


def get(name: str, where: str = "--method") -> Method:
    """The method registered as ``name``; one InputError line naming ``where`` and the choices otherwise."""
    if name not in METHODS:
        raise InputError(f"{where}: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def of_checkpoint(ckpt: dict[str, Any], path: Any) -> Method:
    """The method a checkpoint dict (read from ``path``) records; ``sound2sight`` when it records
    none (written before methods had names). An unknown name is one InputError line naming the file."""
    name = ckpt.get("method", DEFAULT_METHOD)
    if not isinstance(name, str) or name not in METHODS:
        raise InputError(f"checkpoint {path} was written by method {name!r}, which this version does not have "
                         f"(methods: {', '.join(METHODS)}); use the version that wrote it")
    return METHODS[name]


def of_model(model: torch.nn.Module) -> Method:
    """The first registered method whose model class ``model`` is (for a model not loaded from a
    checkpoint, e.g. handed to the evaluation directly); ValueError when none is."""
    for method in METHODS.values():
        if type(model) is method.model:
            return method
    raise ValueError(f"{type(model).__name__} is not the model of any registered method ({', '.join(METHODS)})")
