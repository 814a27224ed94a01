"""Trains the models that bench/structured.sh prunes to hidden units and
heads: a wide tanh MLP (784-1024-1024-10), a deep tanh MLP
(784-256x6-10), a BatchNorm MLP (784-512-BN-ReLU-512-BN-ReLU-10) and a
post-norm transformer encoder (nn.TransformerEncoder, 2 layers, d=32, 4
heads, FFN 64, the 28 image rows as tokens, mean pooled) and a bigger one
(`transformer_big`: 3 layers, d=64, 4 heads, FFN 256, batch_first,
opset 17), on the MNIST training split, and exports them like the bundled
models (torch.onnx, opset 13 unless said, dynamic batch, input `input`
[N,784], output `output`).

    python3 bench/structured_models.py DATA_DIR OUT_DIR [KIND...]
"""
import sys

import numpy as np
import torch
from torch import nn


def mlp(kind):
    if kind == "wide_tanh":
        return nn.Sequential(nn.Linear(784, 1024), nn.Tanh(), nn.Linear(1024, 1024), nn.Tanh(), nn.Linear(1024, 10))
    if kind == "deep_tanh":
        layers, width = [], 784
        for _ in range(6):
            layers += [nn.Linear(width, 256), nn.Tanh()]
            width = 256
        return nn.Sequential(*layers, nn.Linear(256, 10))
    if kind == "bn":
        return nn.Sequential(nn.Linear(784, 512), nn.BatchNorm1d(512), nn.ReLU(),
                             nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 10))
    if kind == "transformer":
        return RowTransformer()
    if kind == "transformer_big":
        return RowTransformer(64, 4, 256, 3, batch_first=True)
    raise ValueError(kind)


class RowTransformer(nn.Module):
    """The 28 rows of an MNIST digit as tokens through a post-norm
    nn.TransformerEncoder (nn.MultiheadAttention's fused in-projection)."""

    def __init__(self, d=32, heads=4, ffn=64, layers=2, batch_first=False):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(28, d)
        self.pos = nn.Parameter(torch.zeros(1, 28, d) if batch_first else torch.zeros(28, 1, d))
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=ffn, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        if self.batch_first:
            t = self.embed(x.reshape(-1, 28, 28)) + self.pos
            return self.head(self.encoder(t).mean(1))
        t = self.embed(x.reshape(-1, 28, 28).transpose(0, 1)) + self.pos
        return self.head(self.encoder(t).mean(0))


def main(data, out, kinds):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.from_numpy(np.load(f"{data}/train_x.npy"))
    y = torch.from_numpy(np.load(f"{data}/train_y.npy")).long()
    for kind in kinds:
        if kind.startswith("transformer"):
            torch.manual_seed(0)  # the MLPs' weights do not depend on it
        net = mlp(kind)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for epoch in range(6):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 128):
                idx = perm[i:i + 128]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                loss.backward()
                opt.step()
        net.eval()
        torch.onnx.export(net, x[:2], f"{out}/mnist_{kind}.onnx", input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=17 if kind == "transformer_big" else 13,
                          do_constant_folding=True)
        print(kind, "final batch loss", float(loss), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:] or ["wide_tanh", "deep_tanh", "bn"])
