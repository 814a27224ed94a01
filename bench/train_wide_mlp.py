"""Trains the wide 784-1024-1024-10 ReLU MLP of issue 15 on the MNIST train
split and exports it as the bundled models are exported (torch 1.13
TorchScript exporter, opset 13, do_constant_folding, input `input`, output
`output`, dynamic batch axis `N`).

    /usr/bin/python3 bench/train_wide_mlp.py DATA_DIR OUT.onnx

DATA_DIR holds train_x.npy, train_y.npy, test_x.npy, test_y.npy (../shared/
data/mnist). The result is about 7.3 MB; it is reproducible with the seed.
"""
import sys

import numpy as np
import torch
from torch import nn

torch.manual_seed(0)
torch.set_num_threads(1)
data, out = sys.argv[1], sys.argv[2]
x = torch.from_numpy(np.load(f"{data}/train_x.npy"))
y = torch.from_numpy(np.load(f"{data}/train_y.npy"))
xt = torch.from_numpy(np.load(f"{data}/test_x.npy"))
yt = torch.from_numpy(np.load(f"{data}/test_y.npy"))

net = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for epoch in range(12):
    perm = torch.randperm(len(x))
    net.train()
    for i in range(0, len(x), 128):
        idx = perm[i:i + 128]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        lt = net(xt)
        print(f"epoch {epoch}: test loss {nn.functional.cross_entropy(lt, yt).item():.4f} "
              f"accuracy {(lt.argmax(1) == yt).float().mean().item():.4f}", flush=True)

torch.onnx.export(net, x[:1], out, opset_version=13, do_constant_folding=True,
                  input_names=["input"], output_names=["output"],
                  dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
