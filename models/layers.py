"""Small building blocks and the weight initialisation shared by the Sound2Sight modules."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class SpaceToDepthConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` with stride ``s >= 2`` and kernel a multiple of ``s`` that computes, on
    the CPU, the same values as a stride-1 convolution over the space-to-depth input.

    With ``U = pixel_unshuffle(pad(x), s)`` (``U[c*s*s + i*s + j, Y, X] = x_pad[c, s*Y + i,
    s*X + j]``), the output is ``conv2d(U, W')`` with kernel ``k / s`` and ``W'[o, c*s*s + i*s
    + j, a, b] = W[o, c, s*a + i, s*b + j]``: the same products, summed in another order
    (equal to float rounding; ``tests/test_models.py``). Why: oneDNN's CPU kernels run a
    convolution with ONE input channel (the grey frame entering the encoders) far below
    their speed with a few channels, forward and above all backward (the weight gradient
    of the generator's encoder, the input gradient of the discriminator's), on AVX-512
    and AVX2 alike (``docs/DESIGN.md``, "The demo's step on each CPU kind"). With 3 or
    more input channels the plain kernel was as fast or faster, so :func:`conv_block`
    uses this class for single-channel inputs only. Other devices run the plain
    convolution (not measured there). Parameters, their names and ``state_dict`` are
    ``nn.Conv2d``'s, so checkpoints load either way.
    """

    @staticmethod
    def fits(kernel: int | Sequence[int], stride: int | Sequence[int]) -> bool:
        """Whether a convolution of this ``kernel`` and ``stride`` can be folded: equal strides >= 2
        that divide the kernel along both axes."""
        ks = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        st = (stride, stride) if isinstance(stride, int) else tuple(stride)
        return st[0] == st[1] >= 2 and all(k % st[0] == 0 for k in ks)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if (not self.fits(self.kernel_size, self.stride) or self.groups != 1 or self.dilation != (1, 1)
                or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            raise ValueError(f"SpaceToDepthConv2d needs equal strides >= 2 dividing the kernel, no groups, no "
                             f"dilation and zero padding; got stride {self.stride}, kernel {self.kernel_size}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        s = self.stride[0]
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        h, w = x.shape[-2:]
        out_h, out_w = (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1
        # pad, plus up to s - 1 rows/columns at the far edges so that unshuffle divides evenly;
        # they only add output rows/columns past out_h/out_w, cut below
        extra_h, extra_w = -(h + 2 * ph) % s, -(w + 2 * pw) % s
        u = F.pixel_unshuffle(F.pad(x, (pw, pw + extra_w, ph, ph + extra_h)), s)
        o, c = self.weight.shape[:2]
        weight = (self.weight.reshape(o, c, kh // s, s, kw // s, s).permute(0, 1, 3, 5, 2, 4)
                  .reshape(o, c * s * s, kh // s, kw // s))
        # oneDNN (float32, bf16) is fast only with the unshuffled channels innermost (channels-last);
        # float64 runs ATen's reference kernel, whose backward needs contiguous weights
        fmt = torch.contiguous_format if x.dtype == torch.float64 else torch.channels_last
        y = F.conv2d(u.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt), self.bias)
        return y[..., :out_h, :out_w]


class MatmulConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that, when its kernel spans its whole unpadded input (a 6x6 map and a
    6x6 kernel: a 1x1 output), computes it as ONE matrix product, ``y[n, o] = sum_{c,i,j}
    x[n, c, i, j] W[o, c, i, j] + b[o]``: the same products, summed in another order (equal
    to float rounding; ``tests/test_models.py``). Why: the encoders' last convolution is a
    fully connected layer in disguise; oneDNN's AVX-512 kernels notice and run it as a matrix
    product, its AVX2 kernels run it as a convolution, 3-5x slower forward and backward
    (``docs/DESIGN.md``, "The demo's step on each CPU kind"). On the CPU only: on an H200 it
    was not shown to pay (the demo's step ran 0.85x as fast with it; the same comparison with
    identical computations on both sides gave 0.91-0.98x), so other devices, and other input
    sizes, run the plain convolution. Parameters and ``state_dict`` are ``nn.Conv2d``'s."""

    def spans(self, x: torch.Tensor) -> bool:
        """Whether ``x`` [N, C, H, W] is on the CPU and exactly one kernel window (the output is 1x1)."""
        return (x.device.type == "cpu" and x.dim() == 4 and tuple(x.shape[-2:]) == self.kernel_size
                and self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spans(x):
            return super().forward(x)
        n, o = x.shape[0], self.out_channels
        if x.is_contiguous():  # flatten (c, i, j)
            flat, weight = x.reshape(n, -1), self.weight.reshape(o, -1)
        else:  # channels-last: flatten (i, j, c), a free view of both x and a channels-last weight
            flat, weight = x.permute(0, 2, 3, 1).reshape(n, -1), self.weight.permute(0, 2, 3, 1).reshape(o, -1)
        return F.linear(flat, weight, self.bias).reshape(n, o, 1, 1)


class MatmulConvTranspose2d(nn.ConvTranspose2d):
    """An ``nn.ConvTranspose2d`` that, on a 1x1 input without padding, computes its ``k x k``
    output as ONE matrix product, ``y[n, o, i, j] = sum_c x[n, c] W[c, o, i, j] + b[o]`` (the
    decoders' first layer, :class:`MatmulConv2d`'s mirror; why, and why on the CPU only: the
    same). The output is channels-last, as the model's maps are. Other devices and inputs run
    the plain transposed convolution. Parameters and ``state_dict`` are ``nn.ConvTranspose2d``'s."""

    def spans(self, x: torch.Tensor) -> bool:
        """Whether ``x`` [N, C, 1, 1] is on the CPU and a single pixel that every kernel tap reaches unpadded."""
        return (x.device.type == "cpu" and x.dim() == 4 and tuple(x.shape[-2:]) == (1, 1)
                and self.padding == (0, 0) and self.output_padding == (0, 0) and self.dilation == (1, 1)
                and self.groups == 1)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or not self.spans(x):
            return super().forward(x, output_size)
        n, o, (kh, kw) = x.shape[0], self.out_channels, self.kernel_size
        # columns ordered (i, j, o): a free view of a channels-last weight [C, O, kh, kw]
        weight = self.weight.permute(2, 3, 1, 0).reshape(kh * kw * o, -1)
        bias = None if self.bias is None else self.bias.repeat(kh * kw)
        return F.linear(x.reshape(n, -1), weight, bias).reshape(n, kh, kw, o).permute(0, 3, 1, 2)


def conv_transpose2d_by_phases(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride=2, padding=1)`` for a 4x4 kernel, computed as
    ONE stride-1 convolution: each of the output's four phases ``y[:, :, 2m + r, 2n + q]`` reads
    a 2x2 window of the input at rows ``m - 1 + r, m + r`` and columns ``n - 1 + q, n + q``
    (with kernel taps ``3 - r - 2a``, ``3 - q - 2b`` for window offsets ``a, b``), so a 2x2
    convolution over the input padded by 1, to ``4 * O`` channels, computes all four; the phases
    are then interleaved. The same products summed in another order (``tests/test_models.py``).

    x: [N, C, H, W]; weight: [C, O, 4, 4] (``nn.ConvTranspose2d``'s layout); returns [N, O, 2H, 2W].
    Why: oneDNN's CPU transposed convolution to ONE output channel (the decoder's last layer
    on grey frames) runs far below its speed with a few channels (``docs/DESIGN.md``); where
    this pays: :class:`PhasedConvTranspose2d`."""
    c, o = weight.shape[:2]
    n, _, h, w = x.shape
    # w2[(o, r, q), c, a, b] = weight[c, o, 3 - r - 2a, 3 - q - 2b]
    taps = torch.tensor([[3, 1], [2, 0]], device=weight.device)  # [r, a] -> kernel tap
    w2 = weight[:, :, taps[:, None, :, None], taps[None, :, None, :]]  # [C, O, r, q, a, b]
    w2 = w2.permute(1, 2, 3, 0, 4, 5).reshape(4 * o, c, 2, 2)
    z = F.conv2d(F.pad(x, (1, 1, 1, 1)), w2)  # [N, 4 O, H + 1, W + 1]: phase (r, q) at offset (r, q)
    z = z.unflatten(1, (o, 2, 2))            # [N, O, r, q, H + 1, W + 1]
    y = torch.stack([torch.stack([z[:, :, r, q, r:r + h, q:q + w] for q in range(2)], -1) for r in range(2)], 3)
    y = y.reshape(n, o, 2 * h, 2 * w)        # [N, O, H, r, W, q] -> [N, O, 2H, 2W]
    return y if bias is None else y + bias.view(1, o, 1, 1)


class PhasedConvTranspose2d(nn.ConvTranspose2d):
    """An ``nn.ConvTranspose2d`` that computes a 4x4, stride-2, padding-1 transposed convolution
    from at most 16 channels to ONE (the demo-width decoder's last layer on grey frames) on the
    CPU without gradients (sampling, validation, evaluation) with
    :func:`conv_transpose2d_by_phases`. Measured forward, 24x24 maps: 2.0-2.6x faster from 16
    channels on both kernel sets, no gain or a loss from 32-128 under AVX2; forward + backward
    no faster. Everything else runs the plain transposed convolution. Parameters and
    ``state_dict`` are ``nn.ConvTranspose2d``'s."""

    def uses_phases(self, x: torch.Tensor) -> bool:
        """Whether this call takes the phases: CPU, no gradients, <= 16 -> 1 channel, 4x4 / 2 / 1.
        (``x`` may hold only some of the input channels: :func:`conv_channels`.)"""
        return (x.device.type == "cpu" and not torch.is_grad_enabled() and self.out_channels == 1
                and x.dim() == 4 and x.shape[1] <= 16 and self.kernel_size == (4, 4) and self.stride == (2, 2)
                and self.padding == (1, 1) and self.output_padding == (0, 0) and self.dilation == (1, 1)
                and self.groups == 1)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None and self.uses_phases(x):
            return conv_transpose2d_by_phases(x, self.weight, self.bias)
        return super().forward(x, output_size)


#: Each shortcut convolution of this module and the plain class it computes.
SHORTCUT_CONVS: dict[type, type] = {SpaceToDepthConv2d: nn.Conv2d, MatmulConv2d: nn.Conv2d,
                                    MatmulConvTranspose2d: nn.ConvTranspose2d,
                                    PhasedConvTranspose2d: nn.ConvTranspose2d}


def plain_convolutions(module: nn.Module) -> nn.Module:
    """Replace every shortcut convolution in ``module`` (in place; :data:`SHORTCUT_CONVS`) by the
    plain ``nn.Conv2d`` / ``nn.ConvTranspose2d`` with the same parameters, layout and
    ``requires_grad``; returns ``module``. For the tests, the step-by-step reference and
    ``bench/train_step.py --plain_convs``, which compare the two."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            plain_type = SHORTCUT_CONVS.get(type(child))
            if plain_type is None:
                continue
            extra = {"output_padding": child.output_padding} if plain_type is nn.ConvTranspose2d else {}
            plain = plain_type(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                               child.padding, dilation=child.dilation, groups=child.groups,
                               bias=child.bias is not None, padding_mode=child.padding_mode, **extra)
            plain.weight, plain.bias = child.weight, child.bias  # the same Parameter objects
            setattr(parent, name, plain)
    return module


def conv_block(c_in: int, c_out: int, kernel=4, stride=2, padding=1) -> nn.Sequential:
    """Conv + BatchNorm + LeakyReLU(0.2): the DCGAN down-sampling unit. A single-channel input
    with a stride dividing the kernel gets :class:`SpaceToDepthConv2d` (same maths, faster on CPU)."""
    s2d = c_in == 1 and SpaceToDepthConv2d.fits(kernel, stride)
    conv = (SpaceToDepthConv2d if s2d else nn.Conv2d)(c_in, c_out, kernel, stride, padding)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


def upconv_block(c_in: int, c_out: int, kernel=4, stride=2, padding=1) -> nn.Sequential:
    """ConvTranspose + BatchNorm + LeakyReLU(0.2): the DCGAN up-sampling unit. Unpadded, it is
    :class:`MatmulConvTranspose2d`, which computes a 1x1 input (the decoder's first layer) as a
    matrix product."""
    deconv = MatmulConvTranspose2d if padding == 0 else nn.ConvTranspose2d
    return nn.Sequential(deconv(c_in, c_out, kernel, stride, padding),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


def init_weights(module: nn.Module) -> None:
    """The release's initialisation, for ``module.apply``: conv/linear weights N(0, 0.02) with zero
    bias, BatchNorm weight N(1, 0.02) with zero bias. LSTM cells and attention projections
    that are not ``nn.Linear`` keep PyTorch's defaults (as the original did)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def fold(x: torch.Tensor) -> torch.Tensor:
    """[T, B, ...] -> [T*B, ...] (time folded into the batch)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold(x: torch.Tensor, steps: int) -> torch.Tensor:
    """[T*B, ...] -> [T, B, ...]."""
    return x.reshape(steps, x.shape[0] // steps, *x.shape[1:])


def _slot_runs(slots: Sequence[int]) -> list[tuple[int, int, bool]]:
    """Split per-step slots into runs ``(length, first slot, repeated)``: a repeated run
    reuses one slot for every step, an aligned run takes consecutive slots."""
    runs, i, n = [], 0, len(slots)
    while i < n:
        j = i + 1
        if j < n and slots[j] == slots[i]:
            while j < n and slots[j] == slots[i]:
                j += 1
            runs.append((j - i, slots[i], True))
        else:
            while j < n and slots[j] == slots[j - 1] + 1 and not (j + 1 < n and slots[j + 1] == slots[j]):
                j += 1
            runs.append((j - i, slots[i], False))
        i = j
    return runs


def add_by_slot(out: torch.Tensor, src: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
    """``out + src`` gathered by step: ``out [S*B, ...]`` (step-major), ``src [M*B, ...]`` holds
    ``M`` distinct maps per clip, step ``s`` adds map ``slots[s]``.

    Equal to ``out + src.unflatten(0, (M, B))[slots].flatten(0, 1)``, but a run of steps that
    reuses one map adds it by broadcasting and a run of consecutive maps adds a slice, so
    nothing is gathered and the backward is a sum over each repeated run instead of a
    ``scatter_add`` (which cost ~5% of a training step)."""
    batch = out.shape[0] // len(slots)
    s = src.unflatten(0, (src.shape[0] // batch, batch))                   # [M, B, ...]
    runs = _slot_runs(slots)
    # Split and concatenate in 4D (one split: its backward is one concatenation): cat keeps
    # a channels-last layout for 4D tensors only, and a plain-layout result (or gradient)
    # would cost a layout copy in every convolution next to it.
    parts = out.split([n * batch for n, _, _ in runs])                     # [n*B, ...] each
    summed = [(p.unflatten(0, (n, batch)) + (s[first] if repeated else s[first:first + n])).flatten(0, 1)
              for p, (n, first, repeated) in zip(parts, runs)]
    return summed[0] if len(summed) == 1 else torch.cat(summed)


def conv_channels(conv: nn.Module, x: torch.Tensor, first: int, bias: bool) -> torch.Tensor:
    """``conv`` applied to ``x``, which holds its input channels ``first .. first + x.shape[1] - 1``.

    A convolution is linear in its input channels, so ``conv(cat([d, skip], 1))`` equals
    ``conv_channels(conv, d, 0, True) + conv_channels(conv, skip, d.shape[1], False)``: the
    skip half can then run once per DISTINCT skip map and be added to many rows.
    ``conv``: ``nn.Conv2d`` or ``nn.ConvTranspose2d``."""
    c = slice(first, first + x.shape[1])
    b = conv.bias if bias else None
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out, k, k]
        if isinstance(conv, PhasedConvTranspose2d) and conv.uses_phases(x):
            return conv_transpose2d_by_phases(x, conv.weight[c], b)
        return F.conv_transpose2d(x, conv.weight[c], b, conv.stride, conv.padding, conv.output_padding,
                                  conv.groups, conv.dilation)
    return F.conv2d(x, conv.weight[:, c], b, conv.stride, conv.padding, conv.dilation, conv.groups)


SkipAdd = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (conv output rows, skip term) -> sum


def skip_add(slots: Sequence[int]) -> SkipAdd:
    """Adder for decoding ``S`` steps (step-major rows ``[S*B, ...]``) whose skip terms are
    ``[M*B, ...]``, step ``s`` using map ``slots[s]`` (see :func:`add_by_slot`)."""
    return lambda out, term: add_by_slot(out, term, slots)


def sample_add(nsample: int) -> SkipAdd:
    """Adder for decoding ``B*nsample`` rows (index ``b * nsample + s``) whose skip terms are
    one per clip ``[B, ...]``: broadcast over the samples instead of repeating them."""
    return lambda out, term: (out.unflatten(0, (term.shape[0], nsample)) + term.unsqueeze(1)).flatten(0, 1)
