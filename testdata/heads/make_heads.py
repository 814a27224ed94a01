"""Writes mha_post_op13.onnx: a tiny post-norm nn.TransformerEncoder (2
layers, d=16, 4 heads, FFN 32; nn.MultiheadAttention's fused in-projection,
sequence-first [T, N, C] inside) on an input [N, 6, 16], mean pooled into a
Linear head, with seeded random weights that differ between the layers
(a freshly built encoder's layers are copies, which the exporter would
store once). The structured-pruning tests remove its heads.

    /usr/bin/python3 testdata/heads/make_heads.py
"""
import os

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.encoder(x.transpose(0, 1)).mean(0))


def main():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    net.eval()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mha_post_op13.onnx")
    torch.onnx.export(net, torch.randn(2, 6, 16), out, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=13, do_constant_folding=True)


if __name__ == "__main__":
    main()
