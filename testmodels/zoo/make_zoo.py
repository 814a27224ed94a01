#!/usr/bin/python3
"""Builds the model zoo of issue 14: small PyTorch exports of every family
whose dense layers ecprune should prune, with calibration inputs, torch's
outputs on them, and a manifest (testdata/zoo/zoo.json).

Run with Debian's interpreter (python3-torch 1.13, python3-torchvision 0.14,
python3-onnx):

    /usr/bin/python3 testmodels/zoo/make_zoo.py [BASE...]

With base names (e.g. swin_tiny), only those models are written and the
other entries of zoo.json are kept as they are.

Every weight and input comes from seeds derived from the model's name, and
torch runs on one thread, so running it again writes the same bytes.
"""

import collections
import io
import json
import os
import sys
import zlib

import numpy as np
import onnx
import onnx.checker
import onnx.numpy_helper
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
from torchvision.models.resnet import BasicBlock
from torchvision.models.swin_transformer import SwinTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "testdata", "zoo")
SAMPLES = 32

torch.set_num_threads(1)  # reductions in a fixed order: same outputs every run


def seed_of(base):
    return zlib.crc32(base.encode())


def randomize(model, gen):
    """Gives norm layers, layer scales and the like non-trivial values: at
    their defaults (weight 1, bias 0, running stats 0 and 1) they would test
    nothing."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(0.75 + 0.5 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))


# ---------------------------------------------------------------- MLPs


class MLPRelu(nn.Module):
    # 784-64-64-10 rather than 784-256-256-10: the wider one is a 1.07 MB
    # file for the same structure.
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class MLPBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(),
            nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(),
            nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class MLPTanhDeep(nn.Module):
    def __init__(self):
        super().__init__()
        layers = [nn.Linear(8, 32), nn.Tanh()]
        for _ in range(6):
            layers += [nn.Linear(32, 32), nn.Tanh()]
        layers.append(nn.Linear(32, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MLPShared(nn.Module):
    """fc_mid is applied twice: two Gemm nodes read one initializer."""

    def __init__(self):
        super().__init__()
        self.fc_in = nn.Linear(16, 32)
        self.fc_mid = nn.Linear(32, 32)
        self.fc_out = nn.Linear(32, 4)

    def forward(self, x):
        x = F.relu(self.fc_in(x))
        x = F.relu(self.fc_mid(x))
        x = F.relu(self.fc_mid(x))
        return self.fc_out(x)


# ---------------------------------------------------------------- CNNs


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class TinyVGG(nn.Module):
    """Conv+BN pairs (the exporter folds them into the Conv) and one BN after
    the ReLU (which stays a BatchNormalization node)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(32),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(32 * 2 * 2, 64), nn.ReLU(True), nn.Dropout(),
            nn.Linear(64, 10))

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class TinyAlexNet(nn.Module):
    """torchvision's AlexNet layout (features, avgpool, classifier with
    Dropout) at reduced width on 32x32 inputs; as at 224x224 for the real
    one, the features end at 6x6 and the adaptive pool keeps 6x6."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=5, stride=1, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(16, 32, kernel_size=3), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(32, 48, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(48, 32, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(16 * 6 * 6, 48), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(48, 48), nn.ReLU(inplace=True),
            nn.Linear(48, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v3_small():
    conf, last = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25, reduced_tail=True)
    return MobileNetV3(conf, last, num_classes=10)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = BasicBlock(16, 16)
        down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        self.layer2 = BasicBlock(16, 32, stride=2, downsample=down)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class CNNPads(nn.Module):
    """Asymmetric zero padding (Pad), reflect padding, average pools with
    pads and ceil_mode, a non-square kernel. (Conv2d(padding="same") has no
    ONNX export in torch 1.13.)"""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.ZeroPad2d((1, 2, 0, 1)),
            nn.Conv2d(3, 8, 4), nn.ReLU(),
            nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
            nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
            nn.AvgPool2d(2, ceil_mode=True),
            nn.Conv2d(8, 16, (3, 1), padding=(1, 0)), nn.ReLU(),
        )
        n = self.features(torch.zeros(1, 3, 16, 16)).numel()
        self.fc1 = nn.Linear(n, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


# ---------------------------------------------------------------- transformers


class Encoder(nn.Module):
    """nn.TransformerEncoder over a Linear embedding of [N, 8, 16] inputs;
    post-norm reads out the mean over tokens, pre-norm (with the final
    LayerNorm) token 0."""

    def __init__(self, norm_first):
        super().__init__()
        self.norm_first = norm_first
        self.embed = nn.Linear(16, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(32) if norm_first else None,
                                             enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        h = self.encoder(self.embed(x))
        h = h[:, 0] if self.norm_first else h.mean(dim=1)
        return self.head(h)


class Decoder(nn.Module):
    """nn.TransformerDecoder (batch_first) whose memory is a Linear
    embedding of [N, 8, 16] inputs and whose target is one of their first
    4 tokens. Cross-attention splits its packed in_proj_weight and
    in_proj_bias by Slice nodes whose bounds are shape arithmetic over
    q.size(-1), even with constant folding. Each layer's weights are
    perturbed: the deep-copied clones would otherwise be identical and
    the exporter would merge them into one tensor."""

    def __init__(self):
        super().__init__()
        self.mem = nn.Linear(16, 32)
        self.tgt = nn.Linear(16, 32)
        layer = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, 2)
        with torch.no_grad():
            for p in self.decoder.parameters():
                p.add_(0.02 * torch.randn(p.shape))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        h = self.decoder(self.tgt(x[:, :4]), self.mem(x))
        return self.head(h.mean(dim=1))


class CrossAttention(nn.Module):
    """A bare nn.MultiheadAttention(query, key, value) with three distinct
    Linear embeddings of [N, 8, 16] inputs (the first 4 tokens as queries).
    Exported without constant folding, its packed in_proj_weight is split
    by Slice nodes at Shape(in_proj_weight)[0] / 3 * k."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(16, 32)
        self.k = nn.Linear(16, 32)
        self.v = nn.Linear(16, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        h, _ = self.attn(self.q(x[:, :4]), self.k(x), self.v(x))
        return self.head(h.mean(dim=1))


class Attention(nn.Module):
    """timm's ViT attention."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, out=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A 2-block ViT on 16x16 images in 4x4 patches: patch embedding by a
    strided Conv ("conv") or by Reshape/Transpose and a Linear ("linear")."""

    def __init__(self, embed, chans, img=16, patch=4, dim=32, depth=2, heads=4, hidden=64, classes=10):
        super().__init__()
        self.embed, self.chans, self.patch = embed, chans, patch
        self.grid = img // patch
        n = self.grid * self.grid
        if embed == "conv":
            self.patch_embed = nn.Conv2d(chans, dim, patch, stride=patch)
        else:
            self.patch_embed = nn.Linear(chans * patch * patch, dim)
        self.cls_token = nn.Parameter(0.5 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.5 * torch.randn(1, n + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        B = x.shape[0]
        if self.embed == "conv":
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
        else:
            g, p = self.grid, self.patch
            x = x.reshape(B, self.chans, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(B, g * g, p * p * self.chans)
            x = self.patch_embed(x)
        cls = self.cls_token.expand(B, -1, -1)
        x = torch.cat((cls, x), dim=1)
        x = x + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        return self.head(x[:, 0])


def patches(x, patch):
    """[B, C, H, W] -> [B, H/p * W/p, p*p*C]."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // patch, patch, W // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // patch) * (W // patch), patch * patch * C)


class Affine(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.alpha = nn.Parameter(1 + 0.2 * torch.randn(dim))
        self.beta = nn.Parameter(0.2 * torch.randn(dim))

    def forward(self, x):
        return self.alpha * x + self.beta


class ResMLPBlock(nn.Module):
    def __init__(self, dim, tokens, hidden):
        super().__init__()
        self.norm1 = Affine(dim)
        self.token_mix = nn.Linear(tokens, tokens)
        self.norm2 = Affine(dim)
        self.mlp = Mlp(dim, hidden)
        self.ls1 = nn.Parameter(0.5 + 0.2 * torch.randn(dim))
        self.ls2 = nn.Parameter(0.5 + 0.2 * torch.randn(dim))

    def forward(self, x):
        x = x + self.ls1 * self.token_mix(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ls2 * self.mlp(self.norm2(x))


class ResMLP(nn.Module):
    """ResMLP on 1x16x16 images: Linear patch embedding, Affine norms, a
    Linear over the token axis, GELU MLPs, layer scales, mean pooling."""

    def __init__(self, dim=32, depth=2, hidden=64):
        super().__init__()
        self.patch_embed = nn.Linear(16, dim)
        self.blocks = nn.Sequential(*[ResMLPBlock(dim, 16, hidden) for _ in range(depth)])
        self.norm = Affine(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(patches(x, 4))
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


class MixerBlock(nn.Module):
    def __init__(self, dim, tokens, tok_hidden, ch_hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = Mlp(tokens, tok_hidden)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = Mlp(dim, ch_hidden)

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nn.Module):
    """MLP-Mixer on 3x16x16 images: strided-Conv stem, token-mixing MLPs
    over the transposed token axis, channel MLPs, LayerNorm, mean pooling."""

    def __init__(self, dim=32, depth=2):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(*[MixerBlock(dim, 16, 16, 64) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


def swin_tiny():
    """torchvision's Swin Transformer at toy size: 3x16x16 inputs in 2x2
    patches (8x8 tokens), 4x4 windows, so the second block of stage 1 is
    shifted (torch.roll, and an attention mask the exporter writes with
    ScatterND); stage 2 starts with PatchMerging (a Linear without bias)
    and has a single window. Its attention calls F.dropout(p=0) without
    training=False: a training-mode Dropout of ratio 0 in the graph."""
    return SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[2, 1], num_heads=[2, 2], window_size=[4, 4],
                           stochastic_depth_prob=0.1, num_classes=10)


# ---------------------------------------------------------------- RNNs


class LSTMHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class GRUHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        _, h = self.rnn(x)
        return self.head(h[-1])


# ---------------------------------------------------------------- einsum


class EinsumDense(nn.Module):
    """Dense layers written as einsum with constant weights, stored [out, in]
    ('bi,oi->bo') and [in, out] ('bi,io->bo'), then an nn.Linear head."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(32, 16) / 4)
        self.b1 = nn.Parameter(0.1 * torch.randn(32))
        self.w2 = nn.Parameter(torch.randn(32, 16) / 5.7)
        self.b2 = nn.Parameter(0.1 * torch.randn(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = F.relu(torch.einsum("bi,oi->bo", x, self.w1) + self.b1)
        h = F.relu(torch.einsum("bi,io->bo", h, self.w2) + self.b2)
        return self.head(h)


class EinsumAttention(nn.Module):
    """Self-attention with einsum for the scores ('bhqd,bhkd->bhqk') and the
    weighted sum ('bhqk,bhkd->bhqd')."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.scale
        a = a.softmax(dim=-1)
        o = torch.einsum("bhqk,bhkd->bhqd", a, v)
        o = o.transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(o)
        return self.head(x.mean(dim=1))


# ---------------------------------------------------------------- tied weights


class TiedLM(nn.Module):
    """Embedding -> Linear hidden -> output Linear whose weight is the
    embedding's. "last" reads out the last token (2-D: Gemm with transB=1 on
    the very initializer Gather reads); "seq" every token (3-D: MatMul, and
    constant folding stores the transposed weight as a second initializer)."""

    def __init__(self, mode, vocab=64, dim=16):
        super().__init__()
        self.mode = mode
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab)
        self.out.weight = self.emb.weight

    def forward(self, x):
        h = torch.tanh(self.fc(self.emb(x)))
        if self.mode == "last":
            h = h[:, -1]
        return self.out(h)


# ---------------------------------------------------------------- the zoo

# base name, family, builder, per-sample input shape, opsets, options. A
# model's "linear" in the manifest is its number of distinct nn.Linear
# weights (MultiheadAttention's in_proj and out_proj included): the dense
# layers ecprune should find and prune; "tied" names those shared with
# another use (an embedding, a second call of the same module).
# Opsets: 11 (Unsqueeze/Squeeze axes as attributes, Softmax coerced to 2-D),
# 13 (axes as inputs, Softmax on one axis), 17 (LayerNormalization); 9 only
# for the old-style exports that list every initializer as an input.
SPECS = [
    dict(base="mlp_relu", family="mlp", build=MLPRelu, shape=[784], opsets=[13],
         notes="784-64-64-10: 784-256-256-10 would be a 1.07 MB file"),
    dict(base="mlp_batchnorm", family="mlp", build=MLPBatchNorm, shape=[32], opsets=[13]),
    dict(base="mlp_tanh_deep", family="mlp", build=MLPTanhDeep, shape=[8], opsets=[11, 13]),
    dict(base="mlp_relu", family="old", build=MLPRelu, shape=[784], opsets=[9], old=True),
    dict(base="lenet5", family="old", build=LeNet5, shape=[1, 28, 28], opsets=[9], old=True),
    dict(base="lenet5", family="cnn", build=LeNet5, shape=[1, 28, 28], opsets=[11, 13, 17]),
    dict(base="vgg_tiny", family="cnn", build=TinyVGG, shape=[3, 32, 32], opsets=[13]),
    dict(base="alexnet_tiny", family="cnn", build=TinyAlexNet, shape=[3, 32, 32], opsets=[13]),
    dict(base="mobilenet_v3_small", family="cnn", build=mobilenet_v3_small, shape=[3, 32, 32], opsets=[13, 17]),
    dict(base="resnet_tiny", family="cnn", build=TinyResNet, shape=[3, 16, 16], opsets=[11, 13]),
    dict(base="cnn_pads", family="cnn", build=CNNPads, shape=[3, 16, 16], opsets=[11, 13]),
    dict(base="transformer_post", family="transformer", build=lambda: Encoder(False), shape=[8, 16], opsets=[11, 13, 17]),
    dict(base="transformer_pre", family="transformer", build=lambda: Encoder(True), shape=[8, 16], opsets=[11, 13, 17]),
    dict(base="decoder", family="transformer", build=Decoder, shape=[8, 16], opsets=[13, 17],
         notes="cross-attention's in_proj_weight and in_proj_bias are read through Slice nodes (q and packed k/v rows)"),
    dict(base="xattn", family="transformer", build=CrossAttention, shape=[8, 16], opsets=[17], fold=False,
         notes="exported without constant folding: in_proj_weight and in_proj_bias are split by Slice nodes at "
               "Shape(in_proj_weight)[0] / 3 * k"),
    dict(base="vit_conv", family="vit", build=lambda: ViT("conv", 3), shape=[3, 16, 16], opsets=[13, 17]),
    dict(base="vit_linear", family="vit", build=lambda: ViT("linear", 1), shape=[1, 16, 16], opsets=[11, 13, 17]),
    dict(base="swin_tiny", family="vit", build=swin_tiny, shape=[3, 16, 16], opsets=[13]),
    dict(base="resmlp", family="resmlp", build=ResMLP, shape=[1, 16, 16], opsets=[13, 17]),
    dict(base="mixer", family="mixer", build=Mixer, shape=[3, 16, 16], opsets=[13, 17]),
    dict(base="lstm", family="rnn", build=LSTMHead, shape=[6, 8], opsets=[11, 13]),
    dict(base="gru", family="rnn", build=GRUHead, shape=[6, 8], opsets=[13]),
    dict(base="einsum_dense", family="einsum", build=EinsumDense, shape=[16], opsets=[12, 13],
         einsum=[("w1", "out,in"), ("w2", "in,out")],
         notes="w1 and w2 are einsum weights (einsum_weights), not nn.Linear: not counted in linear"),
    dict(base="einsum_attention", family="einsum", build=EinsumAttention, shape=[8, 16], opsets=[12, 13]),
    dict(base="tied_lm_last", family="tied", build=lambda: TiedLM("last"), shape=[8], opsets=[13],
         tokens=64, tied=["out.weight"],
         notes="int64 token input; Gather and Gemm(transB=1) read the same initializer emb.weight"),
    dict(base="tied_lm_seq", family="tied", build=lambda: TiedLM("seq"), shape=[8], opsets=[13],
         tokens=64, tied=["out.weight"],
         notes="int64 token input; constant folding stores the output weight transposed as a second "
               "initializer, so the file does not show the tie"),
    dict(base="mlp_shared", family="tied", build=MLPShared, shape=[16], opsets=[13], tied=["fc_mid.weight"]),
]


def build(spec):
    """The model with the weights of its seed: every opset of one base
    model holds the same weights."""
    seed = seed_of(spec["base"])
    torch.manual_seed(seed)
    model = spec["build"]()
    gen = torch.Generator().manual_seed(seed + 1)
    randomize(model, gen)
    return model.eval()


def calibration(spec):
    rng = np.random.RandomState(seed_of(spec["base"]) % (2 ** 32 - 1))
    shape = [SAMPLES] + spec["shape"]
    if "tokens" in spec:
        return rng.randint(0, spec["tokens"], size=shape).astype(np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def export(model, x, opset, old, fold=True):
    buf = io.BytesIO()
    # Not under torch.no_grad(): with gradients off, nn.TransformerEncoderLayer
    # takes its fused fast path, which has no ONNX export.
    torch.onnx.export(
        model, x, buf, opset_version=opset, do_constant_folding=fold,
        input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
        keep_initializers_as_inputs=old)
    return buf.getvalue()


def linear_weights(model):
    """Every nn.Linear weight (MultiheadAttention's packed in_proj too), a
    shared parameter once, in module order: name -> array [out, in]."""
    out, seen = collections.OrderedDict(), set()
    for name, m in model.named_modules():
        params = []
        if isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            params.append((name + ".in_proj_weight", m.in_proj_weight))
        if isinstance(m, nn.Linear):
            params.append((name + ".weight", m.weight))
        for pname, p in params:
            if id(p) not in seen:
                seen.add(id(p))
                out[pname] = p.detach().numpy()
    return out


def constants(mp):
    """Initializers and Constant-node tensors by name."""
    res = collections.OrderedDict()
    for t in mp.graph.initializer:
        res[t.name] = onnx.numpy_helper.to_array(t)
    for n in mp.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    res[n.output[0]] = onnx.numpy_helper.to_array(a.t)
    return res


def consumers(mp):
    """Tensor name -> sorted op types of the nodes reading it."""
    res = collections.defaultdict(set)
    for n in mp.graph.node:
        for i in n.input:
            res[i].add(n.op_type)
    return {k: sorted(v) for k, v in res.items()}


def find_weight(w, consts, readers):
    """The ONNX tensors holding w ([out, in]), stored [out, in] or
    [in, out], with the op types that read each."""
    found = []
    for name, a in consts.items():
        if a.dtype != np.float32 or a.ndim != 2:
            continue
        if a.shape == w.shape and np.array_equal(a, w):
            layout = "out,in"
        elif a.shape == w.T.shape and np.array_equal(a, w.T):
            layout = "in,out"
        else:
            continue
        found.append(collections.OrderedDict([("tensor", name), ("layout", layout), ("read_by", readers.get(name, []))]))
    return found


def main():
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[1:])
    unknown = only - {spec["base"] for spec in SPECS}
    if unknown:
        sys.exit("no such base model: %s" % ", ".join(sorted(unknown)))
    kept = {}
    if only:
        with open(os.path.join(OUT, "zoo.json")) as f:
            for e in json.load(f, object_pairs_hook=collections.OrderedDict)["models"]:
                kept.setdefault(e["name"].rsplit("_op", 1)[0] + "/" + e["family"], []).append(e)
    entries = []
    for spec in SPECS:
        if only and spec["base"] not in only:
            entries.extend(kept.get(spec["base"] + "/" + spec["family"], []))
            continue
        model = build(spec)
        x = calibration(spec)
        with torch.no_grad():
            y = model(torch.from_numpy(x)).numpy()
        weights = linear_weights(model)
        # Einsum weights as [out, in], whatever their equation.
        einsum = collections.OrderedDict()
        for n, layout in spec.get("einsum", []):
            w = getattr(model, n).detach().numpy()
            einsum[n] = w if layout == "out,in" else w.T
        for opset in spec["opsets"]:
            name = "%s_op%d" % (spec["base"], opset)
            data = export(model, torch.from_numpy(x[:2]), opset, spec.get("old", False), spec.get("fold", True))
            mp = onnx.load_from_string(data)
            onnx.checker.check_model(mp, full_check=True)
            consts, readers = constants(mp), consumers(mp)
            lin = []
            for wname, w in weights.items():
                found = find_weight(w, consts, readers)
                if not found:
                    sys.exit("%s: no tensor holds %s" % (name, wname))
                lin.append({"module": wname, "out": w.shape[0], "in": w.shape[1], "tensors": found})
            ein = []
            for wname, w in einsum.items():
                found = find_weight(w, consts, readers)
                if not found:
                    sys.exit("%s: no tensor holds %s" % (name, wname))
                ein.append({"module": wname, "out": w.shape[0], "in": w.shape[1], "tensors": found})
            with open(os.path.join(OUT, name + ".onnx"), "wb") as f:
                f.write(data)
            np.save(os.path.join(OUT, name + "_x.npy"), x)
            np.save(os.path.join(OUT, name + "_torch.npy"), y)
            ops = collections.Counter(n.op_type for n in mp.graph.node)
            entries.append(collections.OrderedDict([
                ("name", name),
                ("file", name + ".onnx"),
                ("calib", name + "_x.npy"),
                ("torch_output", name + "_torch.npy"),
                ("family", spec["family"]),
                ("opset", opset),
                ("initializers_as_inputs", bool(spec.get("old", False))),
                ("input_shape", spec["shape"]),
                ("input_type", str(x.dtype)),
                ("samples", SAMPLES),
                ("linear", len(lin)),
                ("tied", spec.get("tied", [])),
                ("weights", lin),
                ("einsum_weights", ein),
                ("ops", collections.OrderedDict(sorted(ops.items()))),
                ("notes", spec.get("notes", "")),
                ("bytes", len(data)),
            ]))
            print("%-26s %7d bytes  linear %2d  %s" % (name, len(data), len(lin), " ".join(sorted(ops))))
    manifest = collections.OrderedDict([
        ("generator", "testmodels/zoo/make_zoo.py"),
        ("torch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("onnx", onnx.__version__),
        ("models", entries),
    ])
    with open(os.path.join(OUT, "zoo.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
