"""The three ReFusion networks as plain ``nn.Module``s.

- :class:`FusionNet` (F): the only network used at inference, 59,856 parameters,
  parameter-for-parameter compatible with the authors' released checkpoints.
- :class:`LossProposalNet` (P): proposes the per-pixel weights of the fusion loss.
- :class:`ReconstructionNet` (R): reconstructs both sources from the fused image.

All convolutions are bias-free. Meta-learning uses these modules unchanged through
``torch.func.functional_call`` with dicts of look-ahead tensors, so no layer keeps
shadow weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


def dwconv3x3(ch: int) -> nn.Conv2d:
    return nn.Conv2d(ch, ch, 3, padding=1, groups=ch, bias=False)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel dim at each pixel (eps 1e-5, biased variance).

    Written with ``F.layer_norm`` on a channels-last view so that ONNX export gives
    one LayerNormalization node.
    """

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.channels = ch  # a Python int, so ONNX tracing keeps normalized_shape constant
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))

    def forward(self, x: Tensor) -> Tensor:
        # Contiguous copies keep float32 results within 1e-6 of the authors' code; the
        # strided views change the conv kernels' summation order enough to drift ~2e-5.
        y = F.layer_norm(x.permute(0, 2, 3, 1).contiguous(), (self.channels,), self.weight, self.bias, 1e-5)
        return y.permute(0, 3, 1, 2).contiguous()


def l2_normalize_spatial(x: Tensor) -> Tensor:
    """L2-normalise along the last (H*W) axis.

    The sum of squares over all pixels overflows float16 at 640x480, so in a half
    model it is computed in float32 and the result cast back (the "float32 island").
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        return F.normalize(x.float(), dim=-1).to(x.dtype)
    return F.normalize(x, dim=-1)


def channel_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, temperature: Tensor) -> Tensor:
    """Transposed (channel) attention of Restormer's MDTA on (B, C, H, W) maps.

    Attention is over channels within each head, so the cost is linear in H*W.
    """
    b, c, h, w = v.shape
    q = l2_normalize_spatial(q.reshape(b, heads, c // heads, h * w))
    k = l2_normalize_spatial(k.reshape(b, heads, c // heads, h * w))
    v = v.reshape(b, heads, c // heads, h * w)
    attn = torch.softmax((q @ k.transpose(-2, -1)) * temperature, dim=-1)
    return (attn @ v).reshape(b, c, h, w)


class ChannelAttention(nn.Module):
    """MDTA: qkv = dwconv3x3(conv1x1(x)); channel attention; conv1x1 projection."""

    def __init__(self, ch: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = conv1x1(ch, 3 * ch)
        self.qkv_dw = dwconv3x3(3 * ch)
        self.proj = conv1x1(ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        return self.proj(channel_attention(q, k, v, self.heads, self.temperature))


class GatedFFN(nn.Module):
    """GDFN: conv1x1 C->2eC, dwconv3x3, gelu(x1) * x2, conv1x1 eC->C."""

    def __init__(self, ch: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = ch * expansion
        self.expand = conv1x1(ch, 2 * hidden)
        self.dw = dwconv3x3(2 * hidden)
        self.proj = conv1x1(hidden, ch)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.dw(self.expand(x)).chunk(2, dim=1)
        return self.proj(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(self, ch: int, heads: int = 8, expansion: int = 2) -> None:
        super().__init__()
        self.norm1 = ChannelNorm(ch)
        self.attn = ChannelAttention(ch, heads)
        self.norm2 = ChannelNorm(ch)
        self.ffn = GatedFFN(ch, expansion)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def blocks(ch: int, n: int, heads: int) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(ch, heads) for _ in range(n)])


class AdaptiveFusion(nn.Module):
    """AFM: cross channel-attention between the two streams, then a gated merge."""

    def __init__(self, ch: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature_a = nn.Parameter(torch.ones(heads, 1, 1))
        self.temperature_b = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv_a, self.qkv_a_dw = conv1x1(ch, 3 * ch), dwconv3x3(3 * ch)
        self.qkv_b, self.qkv_b_dw = conv1x1(ch, 3 * ch), dwconv3x3(3 * ch)
        self.proj_a, self.proj_b = conv1x1(ch, ch), conv1x1(ch, ch)
        self.gate, self.gate_dw = conv1x1(2 * ch, 8 * ch), dwconv3x3(8 * ch)
        self.value_a, self.value_a_dw = conv1x1(ch, 4 * ch), dwconv3x3(4 * ch)
        self.value_b, self.value_b_dw = conv1x1(ch, 4 * ch), dwconv3x3(4 * ch)
        self.out_a, self.out_b = conv1x1(4 * ch, 2 * ch), conv1x1(4 * ch, 2 * ch)

    def forward(self, xa: Tensor, xb: Tensor) -> Tensor:
        qa, ka, va = self.qkv_a_dw(self.qkv_a(xa)).chunk(3, dim=1)
        qb, kb, vb = self.qkv_b_dw(self.qkv_b(xb)).chunk(3, dim=1)
        # Each stream queries the other: a's keys/values are attended by b's queries.
        xa = xa + self.proj_a(channel_attention(qb, ka, va, self.heads, self.temperature_a))
        xb = xb + self.proj_b(channel_attention(qa, kb, vb, self.heads, self.temperature_b))
        cat = torch.cat([xa, xb], dim=1)
        ga, gb = self.gate_dw(self.gate(cat)).chunk(2, dim=1)
        ya = F.gelu(ga) * self.value_a_dw(self.value_a(xa))
        yb = F.gelu(gb) * self.value_b_dw(self.value_b(xb))
        return cat + self.out_a(ya) + self.out_b(yb)


@dataclass(frozen=True)
class FusionConfig:
    """Shape of F. The released checkpoints all use the defaults."""

    dim: int = 16  # channels per stream; the decoder runs at 2*dim
    heads: int = 8  # attention heads in every block
    encoder_blocks: int = 2  # TransformerBlocks per source stream
    decoder_blocks: int = 2  # TransformerBlocks after fusion

    def to_dict(self) -> dict:
        return asdict(self)


class FusionNet(nn.Module):
    """F: two Y channels in [0, 1] -> fused Y in [0, 1].

    Input ``x`` is (B, 2, H, W) = (source a, source b); any H, W. Output (B, 1, H, W)
    after a sigmoid.
    """

    def __init__(self, config: FusionConfig = FusionConfig()) -> None:
        super().__init__()
        self.config = config
        d, h = config.dim, config.heads
        self.embed_a, self.embed_b = conv3x3(1, d), conv3x3(1, d)
        self.encoder_a = blocks(d, config.encoder_blocks, h)
        self.encoder_b = blocks(d, config.encoder_blocks, h)
        self.afm = AdaptiveFusion(d, h)
        self.decoder = blocks(2 * d, config.decoder_blocks, h)
        self.head1 = conv3x3(2 * d, d)
        self.head2 = conv3x3(d, 1)

    def forward(self, x: Tensor) -> Tensor:
        xa = self.encoder_a(self.embed_a(x[:, 0:1]))
        xb = self.encoder_b(self.embed_b(x[:, 1:2]))
        y = self.decoder(self.afm(xa, xb))
        y = F.leaky_relu(self.head1(y), 0.01)
        return torch.sigmoid(self.head2(y))


SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


_SOBEL_CACHE: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def sobel_kernels(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The (2, 1, 3, 3) Sobel x/y kernels, built once per dtype and device.

    Building them from a Python list on every call would copy host memory to the
    device (a synchronisation) inside every training step.
    """
    key = (dtype, device)
    k = _SOBEL_CACHE.get(key)
    if k is None:
        kx = torch.tensor(SOBEL_X, dtype=dtype)
        k = _SOBEL_CACHE[key] = torch.stack([kx, kx.t()]).unsqueeze(1).to(device)
    return k


def sobel_magnitude(x: Tensor) -> Tensor:
    """|Sx * x| + |Sy * x| per channel, zero padding 1 (the gradient used in every loss)."""
    k = sobel_kernels(x.dtype, x.device)
    c = x.shape[1]
    g = F.conv2d(x.reshape(-1, 1, *x.shape[2:]), k, padding=1)
    return g.abs().sum(dim=1).reshape(x.shape[0], c, *x.shape[2:])


class LossProposalNet(nn.Module):
    """P: the two sources -> (w, v), each (B, 2, H, W), softmax over the 2 channels.

    w weights the intensity term and v the gradient term of the fusion loss, per
    source and per pixel (w_a + w_b = 1, v_a + v_b = 1). Design inferred from the
    paper (the authors' P is unpublished): each source with its Sobel magnitude is
    embedded and encoded separately, merged, and read out by two heads.
    """

    def __init__(self, dim: int = 16, heads: int = 8) -> None:
        super().__init__()
        self.embed_a, self.embed_b = conv3x3(2, dim), conv3x3(2, dim)
        self.encoder_a, self.encoder_b = blocks(dim, 2, heads), blocks(dim, 2, heads)
        self.merge = blocks(2 * dim, 2, heads)
        self.head_w = nn.Sequential(conv3x3(2 * dim, dim), nn.PReLU(), conv3x3(dim, 2))
        self.head_v = nn.Sequential(conv3x3(2 * dim, dim), nn.PReLU(), conv3x3(dim, 2))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        g = sobel_magnitude(x)
        fa = self.encoder_a(self.embed_a(torch.cat([x[:, 0:1], g[:, 0:1]], dim=1)))
        fb = self.encoder_b(self.embed_b(torch.cat([x[:, 1:2], g[:, 1:2]], dim=1)))
        f = self.merge(torch.cat([fa, fb], dim=1))
        return torch.softmax(self.head_w(f), dim=1), torch.softmax(self.head_v(f), dim=1)


class ReconstructionNet(nn.Module):
    """R: fused (B, 1, H, W) -> reconstructions of (a, b) as (B, 2, H, W) in [0, 1].

    Design inferred from the paper ("two-branch"): a shared stem, then one branch per
    source. The output order is always (a, b), whatever order F saw.
    """

    def __init__(self, dim: int = 16, heads: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(1, dim), TransformerBlock(dim, heads))
        self.branch_a = self._branch(dim, heads)
        self.branch_b = self._branch(dim, heads)

    @staticmethod
    def _branch(dim: int, heads: int) -> nn.Sequential:
        return nn.Sequential(
            blocks(dim, 2, heads), conv3x3(dim, dim), nn.LeakyReLU(0.01), conv3x3(dim, 1), nn.Sigmoid()
        )

    def forward(self, fused: Tensor) -> Tensor:
        s = self.stem(fused)
        return torch.cat([self.branch_a(s), self.branch_b(s)], dim=1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
