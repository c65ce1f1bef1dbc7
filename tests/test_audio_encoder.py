"""models/audio.py: the audio encoder's layers follow the feature shape by one rule."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.audio import KNOWN_AUDIO_SHAPES, MIN_AUDIO_SIZE, AudioEncoder, audio_layout, check_audio_shape
from models.sound2sight import Sound2SightConfig

# The layers each named shape had when the encoder was a table (the first conv's stride and
# padding, the final conv's kernel); old checkpoints hold exactly these parameters.
TABLE = {(23, 21): ((1, 1), (0, 0), (2, 2)), (32, 21): ((2, 1), (1, 0), (2, 2)),
         (45, 17): ((2, 1), (1, 0), (2, 1)), (48, 17): ((2, 1), (1, 0), (3, 1))}


def expected_parameters(nf: int, g: int, final_kernel: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of conv(1 -> nf, 4x4) + BN, three conv(4x4) + BN stages doubling the width,
    conv(8 nf -> g, final_kernel) + BN."""
    out: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, c_in: int, c_out: int, kernel: tuple[int, int]) -> None:
        out[f"{prefix}.0.weight"] = (c_out, c_in, *kernel)
        out[f"{prefix}.0.bias"] = (c_out,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.1.{name}"] = (c_out,)
        out[f"{prefix}.1.num_batches_tracked"] = ()

    conv_bn("stack.0", 1, nf, (4, 4))
    for i, c_in in enumerate((nf, 2 * nf, 4 * nf), start=1):
        conv_bn(f"stack.{i}", c_in, 2 * c_in, (4, 4))
    conv_bn("final", 8 * nf, g, final_kernel)
    return out


@pytest.mark.parametrize("shape", KNOWN_AUDIO_SHAPES)
def test_named_shapes_keep_their_layers_exactly(shape):
    stride, padding, final_kernel = TABLE[shape]
    enc = AudioEncoder(8, shape, nf=16)
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert got == expected_parameters(16, 8, final_kernel)
    assert list(got) == list(expected_parameters(16, 8, final_kernel))  # same names, same order
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.stride, c.padding) for c in convs] == [(stride, padding)] + [((2, 2), (1, 1))] * 3 + [((1, 1), (0, 0))]
    layout = audio_layout(shape)
    assert (layout.kernel, layout.stride, layout.padding, layout.final_kernel) == ((4, 4), stride, padding,
                                                                                    final_kernel)
    out = enc(torch.rand(3, 1, *shape))
    assert out.shape == (3, 8) and out.abs().max() <= 1


@pytest.mark.parametrize("shape,kernel,stride,padding,final", [
    ((32, 17), (4, 4), (2, 1), (1, 0), (2, 1)),      # data.prepare_av --features mfcc at its defaults
    ((64, 33), (8, 4), (4, 2), (2, 1), (2, 2)),
    ((128, 44), (16, 4), (8, 2), (4, 1), (2, 2)),
    ((128, 64), (16, 8), (8, 4), (4, 2), (2, 2)),
    ((8, 8), (4, 4), (1, 1), (2, 2), (1, 1)),         # the smallest: padded so the three stages get 8
    ((11, 24), (4, 4), (1, 2), (0, 1), (1, 1)),
])
def test_other_shapes_follow_the_rule(shape, kernel, stride, padding, final):
    layout = audio_layout(shape)
    assert (layout.kernel, layout.stride, layout.padding, layout.final_kernel) == (kernel, stride, padding, final)
    enc = AudioEncoder(8, shape, nf=8)
    assert enc.final[0].kernel_size == final
    enc.train()
    out = enc(torch.rand(2, 1, *shape))
    assert out.shape == (2, 8) and torch.isfinite(out).all()


def test_every_size_from_the_minimum_up_gives_a_small_final_map():
    for n in range(MIN_AUDIO_SIZE, 600):
        f = audio_layout((n, n)).final_kernel[0]
        assert 1 <= f <= 3, n


@pytest.mark.parametrize("shape", [(7, 21), (23, 5), (0, 0), (23,), (23, 21, 1)])
def test_too_small_or_malformed_shapes_are_refused_naming_the_minimum(shape):
    with pytest.raises(ValueError, match="each at least 8"):
        check_audio_shape(shape)
    with pytest.raises(ValueError, match="each at least 8"):
        Sound2SightConfig(audio_shape=shape)


def test_features_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"built for \[23, 21\] features, got \[32, 21\]"):
        AudioEncoder(8, (23, 21))(torch.rand(2, 1, 32, 21))
