#!/usr/bin/python3
"""PyTorch peer of ecprune's `ec` analysis on whole ONNX graphs (CNN, ViT).

bench/torch_peer.py handles chains of Gemm layers; this one runs any graph
made of the ops below, as torch operations read off the ONNX graph itself
(the initializers by name, the nodes in graph order), so the network the
peer differentiates is the exported one, not a re-creation. Ops: Conv,
MaxPool, Relu, Gemm, MatMul, Add, Sub, Mul, Div, Pow, Sqrt, Erf, Softmax,
ReduceMean, Transpose, Reshape, Flatten, Unsqueeze, Squeeze, Concat,
Gather, Shape, Cast, Constant, ConstantOfShape, Equal, Where, Expand,
Identity.

Dense layers are found as ecprune finds them: a Gemm whose B is an
initializer, and a MatMul whose second operand is an initializer,
together with a following Add of an initializer bias. Their outputs z
(after the bias) are the values differentiated; their inputs a are the
activations. At rank 3 and above every position is a row of its own, as in
ecprune: for row r of sample n,

  g_i(r)   = sum_k (dy_k(n) / dz_i(r))^2      (exact: K one-hot cotangents)
  S0_i     = sum_r g_i(r)
  S1_ij    = sum_r g_i(r) (a_j(r) - shift_j)
  S2_ij    = sum_r g_i(r) (a_j(r) - shift_j)^2   (shift: the first batch's row mean)
  I_ij     = w_ij^2 / N * max(0, S2_ij - S1_ij^2 / S0_i)     (N samples)
  delta_ij = w_ij (S1_ij + shift_j S0_i) / S0_i

Derivatives by batched reverse mode (autograd.grad with
is_grads_batched=True and a [K, N, K] cotangent), or one reverse pass per
output with --batched no. --dtype float32 runs the network and its
derivatives in float32 and sums the batches' S1/S2 in float64, as
ecprune does; float64 runs everything in float64 (for --compare).

Prints one JSON line: seconds of the analysis (model and data loaded
before the clock starts), and with --compare the largest difference to
ecprune's `prune --scores` file, per layer, relative to the layer's
largest value.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper
import torch
import torch.nn.functional as F

ONNX_TYPES = {1: "float", 6: torch.int32, 7: torch.int64, 9: torch.bool, 11: "float"}


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class Graph:
    """An ONNX graph as a list of torch closures over named values."""

    def __init__(self, path, dt):
        m = onnx.load(path)
        self.dt = dt
        g = m.graph
        self.consts = {}
        for t in g.initializer:
            a = numpy_helper.to_array(t)
            self.consts[t.name] = self._tensor(a)
        self.raw = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        inits = set(self.consts)
        self.input = [i.name for i in g.input if i.name not in inits][0]
        self.input_shape = [d.dim_value or -1 for d in
                            [i for i in g.input if i.name == self.input][0].type.tensor_type.shape.dim]
        self.output = g.output[0].name
        self.nodes = list(g.node)
        consumers = {}
        for n in self.nodes:
            for x in n.input:
                consumers.setdefault(x, []).append(n)
        # Dense layers: (weight name, input value, z value, W [out,in] float64).
        self.layers = []
        self.z_of = {}
        for n in self.nodes:
            if n.op_type == "Gemm" and n.input[1] in inits:
                at = attrs(n)
                w = self.raw[n.input[1]].astype(np.float64)
                if not at.get("transB", 0):
                    w = w.T
                w = w * at.get("alpha", 1.0)
                self.layers.append((n.input[1], n.input[0], n.output[0], np.ascontiguousarray(w)))
            elif n.op_type == "MatMul" and n.input[1] in inits and self.raw[n.input[1]].ndim == 2:
                z = n.output[0]
                c = consumers.get(z, [])
                if len(c) == 1 and c[0].op_type == "Add":
                    other = [x for x in c[0].input if x != z]
                    if other and other[0] in inits:
                        z = c[0].output[0]
                w = np.ascontiguousarray(self.raw[n.input[1]].astype(np.float64).T)
                self.layers.append((n.input[1], n.input[0], z, w))
        self.zs = {z: i for i, (_, _, z, _) in enumerate(self.layers)}

    def _tensor(self, a):
        if a.dtype in (np.float32, np.float64):
            return torch.from_numpy(np.array(a, dtype=np.float64)).to(self.dt)
        return torch.from_numpy(np.array(a))

    def run(self, x):
        """Returns the output, the dense inputs a and outputs z by layer."""
        v = dict(self.consts)
        v[self.input] = x
        ins, zs = [None] * len(self.layers), [None] * len(self.layers)
        a_of = {}
        for i, (_, a, _, _) in enumerate(self.layers):
            a_of.setdefault(a, []).append(i)
        for n in self.nodes:
            outs = self.op(n, [v[i] if i else None for i in n.input])
            for name, t in zip(n.output, outs):
                if name in self.zs:
                    i = self.zs[name]
                    t.requires_grad_(True)
                    zs[i] = t
                v[name] = t
            for name in n.input:
                for i in a_of.get(name, []):
                    if ins[i] is None:
                        ins[i] = v[name]
        return v[self.output], ins, zs

    def op(self, n, x):
        t, at = n.op_type, attrs(n)
        if t == "Conv":
            p = at.get("pads", [0, 0, 0, 0])
            if p[:2] != p[2:]:
                raise SystemExit("torch_peer_graph: asymmetric Conv pads")
            return [F.conv2d(x[0], x[1], x[2] if len(x) > 2 else None, stride=at.get("strides", 1),
                             padding=p[:2], dilation=at.get("dilations", 1), groups=at.get("group", 1))]
        if t == "MaxPool":
            p = at.get("pads", [0, 0, 0, 0])
            return [F.max_pool2d(x[0], at["kernel_shape"], stride=at.get("strides", at["kernel_shape"]),
                                 padding=p[:2], dilation=at.get("dilations", 1), ceil_mode=bool(at.get("ceil_mode", 0)))]
        if t == "Relu":
            return [torch.relu(x[0])]
        if t == "Erf":
            return [torch.erf(x[0])]
        if t == "Sqrt":
            return [torch.sqrt(x[0])]
        if t == "Gemm":
            a = x[0].T if at.get("transA", 0) else x[0]
            b = x[1].T if at.get("transB", 0) else x[1]
            y = at.get("alpha", 1.0) * (a @ b)
            if len(x) > 2 and x[2] is not None:
                y = y + at.get("beta", 1.0) * x[2]
            return [y]
        if t == "MatMul":
            return [torch.matmul(x[0], x[1])]
        if t == "Add":
            return [x[0] + x[1]]
        if t == "Sub":
            return [x[0] - x[1]]
        if t == "Mul":
            return [x[0] * x[1]]
        if t == "Div":
            if not x[0].is_floating_point() and not x[1].is_floating_point():
                return [torch.div(x[0], x[1], rounding_mode="trunc")]
            return [x[0] / x[1]]
        if t == "Pow":
            e = x[1]
            if e.dim() == 0 and float(e) == 2.0:
                return [x[0] * x[0]]
            return [torch.pow(x[0], e)]
        if t == "Softmax":
            return [torch.softmax(x[0], at.get("axis", -1))]
        if t == "ReduceMean":
            return [x[0].mean(dim=tuple(at["axes"]), keepdim=bool(at.get("keepdims", 1)))]
        if t == "Transpose":
            perm = at.get("perm", list(range(x[0].dim()))[::-1])
            return [x[0].permute(*perm)]
        if t == "Reshape":
            shape = [int(s) for s in x[1].tolist()]
            shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return [x[0].reshape(shape)]
        if t == "Flatten":
            ax = at.get("axis", 1)
            return [x[0].reshape(int(np.prod(x[0].shape[:ax])), -1)]
        if t == "Unsqueeze":
            y = x[0]
            axes = sorted(int(a) for a in (x[1].tolist() if len(x) > 1 else at["axes"]))
            r = y.dim() + len(axes)
            for a in axes:
                y = y.unsqueeze(a % r)
            return [y]
        if t == "Squeeze":
            axes = x[1].tolist() if len(x) > 1 else at.get("axes")
            return [x[0].squeeze() if axes is None else x[0].squeeze(tuple(int(a) for a in axes))]
        if t == "Concat":
            return [torch.cat([a.reshape(1) if a.dim() == 0 else a for a in x], at.get("axis", 0))]
        if t == "Gather":
            ax, idx = at.get("axis", 0), x[1]
            d = x[0].shape[ax]
            if idx.dim() == 0:
                return [x[0].select(ax, int(idx) % d)]
            flat = torch.remainder(idx.reshape(-1), d)
            y = torch.index_select(x[0], ax, flat)
            return [y.reshape(x[0].shape[:ax] + idx.shape + x[0].shape[ax + 1:])]
        if t == "Shape":
            return [torch.tensor(list(x[0].shape), dtype=torch.int64)]
        if t == "Cast":
            to = ONNX_TYPES[at["to"]]
            return [x[0].to(self.dt if to == "float" else to)]
        if t == "Constant":
            return [self._tensor(numpy_helper.to_array(at["value"]))]
        if t == "ConstantOfShape":
            val = self._tensor(numpy_helper.to_array(at["value"])) if "value" in at else torch.zeros(1, dtype=self.dt)
            return [val.reshape(-1)[0].expand([int(s) for s in x[0].tolist()]).clone()]
        if t == "Equal":
            return [x[0] == x[1]]
        if t == "Where":
            return [torch.where(x[0], x[1], x[2])]
        if t == "Expand":
            shape = torch.broadcast_shapes(tuple(x[0].shape), tuple(int(s) for s in x[1].tolist()))
            return [x[0].expand(shape)]
        if t in ("Identity", "Dropout"):
            return [x[0]]
        raise SystemExit("torch_peer_graph: unsupported op %s" % t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("calib", help=".npy [N, ...] (reshaped to the model's input)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--batched", default="yes", choices=["yes", "no"],
                    help="yes: one autograd call with K batched cotangents; no: K reverse passes")
    ap.add_argument("--compare", help="ecprune --scores .npz to compare importances and deltas with")
    ap.add_argument("--rtol", type=float, default=1e-5)
    a = ap.parse_args()

    torch.set_num_threads(a.threads or os.cpu_count())
    dt = torch.float32 if a.dtype == "float32" else torch.float64
    f64 = torch.float64
    t0 = time.time()
    g = Graph(a.model, dt)
    x_all = np.load(a.calib, mmap_mode="r")
    if a.limit:
        x_all = x_all[: a.limit]
    n_total = x_all.shape[0]
    shape = [n_total] + [d for d in g.input_shape[1:]]
    nl = len(g.layers)
    t_load = time.time() - t0

    t1 = time.time()
    S0 = [torch.zeros(w.shape[0], dtype=f64) for _, _, _, w in g.layers]
    S1 = [torch.zeros(w.shape, dtype=f64) for _, _, _, w in g.layers]
    S2 = [torch.zeros(w.shape, dtype=f64) for _, _, _, w in g.layers]
    shift = [None] * nl
    K = None
    for s0 in range(0, n_total, a.batch):
        xb = np.array(x_all[s0: s0 + a.batch], dtype=np.float32)
        x = torch.from_numpy(xb.reshape([xb.shape[0]] + shape[1:])).to(dt)
        n = x.shape[0]
        y, ins, zs = g.run(x)
        y = y.reshape(n, -1)
        K = y.shape[1]
        gs = [torch.zeros_like(z, dtype=dt).detach() for z in zs]
        if a.batched == "yes":
            v = torch.zeros(K, n, K, dtype=dt)
            idx = torch.arange(K)
            v[idx, :, idx] = 1
            grads = torch.autograd.grad(y, zs, grad_outputs=v, is_grads_batched=True)
            for l in range(nl):
                gs[l] = (grads[l] * grads[l]).sum(0)
            del grads
        else:
            for k in range(K):
                v = torch.zeros(n, K, dtype=dt)
                v[:, k] = 1
                grads = torch.autograd.grad(y, zs, grad_outputs=v, retain_graph=k < K - 1)
                for l in range(nl):
                    gs[l] += grads[l] * grads[l]
                del grads
        with torch.no_grad():
            for l in range(nl):
                w = g.layers[l][3]
                al = ins[l].detach().reshape(-1, w.shape[1])
                gl = gs[l].reshape(-1, w.shape[0])
                if shift[l] is None:
                    shift[l] = al.mean(0)
                ac = al - shift[l]
                S0[l] += gl.sum(0).to(f64)
                S1[l] += (gl.T @ ac).to(f64)
                S2[l] += (gl.T @ (ac * ac)).to(f64)
        del zs, ins, y, gs
    imps, deltas = [], []
    with torch.no_grad():
        for l in range(nl):
            w = torch.from_numpy(g.layers[l][3])
            s0 = S0[l][:, None]
            ok = s0 > 0
            safe = torch.where(ok, s0, torch.ones_like(s0))
            v = torch.clamp(S2[l] - S1[l] * S1[l] / safe, min=0)
            imps.append(torch.where(ok, w * w / n_total * v, torch.zeros_like(v)))
            sh = shift[l].to(f64)[None, :]
            deltas.append(torch.where(ok, w * (S1[l] + sh * s0) / safe, torch.zeros_like(v)))
    secs = time.time() - t1

    res = {"model": a.model, "samples": n_total, "dtype": a.dtype, "mode": "reverse", "directions": K,
           "batched": a.batched, "layers": nl, "seconds": secs, "load_seconds": t_load,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "checksum": float(sum(float(i.sum()) for i in imps))}
    if a.compare:
        z = np.load(a.compare)
        worst, ok = {}, True
        for l in range(nl):
            name = g.layers[l][0]
            for kind, mine in (("importance", imps[l].numpy()), ("delta", deltas[l].numpy())):
                theirs = z[name + "." + kind].reshape(mine.shape)
                # Relative to the layer's largest value, as torch_peer.py.
                scale = max(np.abs(mine).max(), 1e-300)
                err = float(np.abs(theirs - mine).max() / scale)
                worst[name + "." + kind] = err
                ok = ok and err <= a.rtol
        res["compare"] = {"max_rel_err": worst, "worst": max(worst.values()), "rtol": a.rtol, "ok": ok}
    print(json.dumps(res))
    if a.compare and not res["compare"]["ok"]:
        sys.exit(3)


if __name__ == "__main__":
    main()
