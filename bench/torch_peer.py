#!/usr/bin/python3
"""PyTorch peer of ecprune's `ec` analysis (see bench/README.md).

Computes, for every prunable dense layer of an MLP exported to ONNX
(Gemm [+ Relu/Tanh/Sigmoid] chain; every Gemm's weights are prunable), the
same quantities as ecprune (METHOD.md):

  g_i(n) = ||dy(n)/dz_i||^2     (exact: K one-hot cotangents; probes: P random signs, /P)
  S0_i   = sum_n g_i(n)
  S1_ij  = sum_n g_i(n) (a_j(n) - shift_j)
  S2_ij  = sum_n g_i(n) (a_j(n) - shift_j)^2     (shift: the first batch's feature mean)
  I_ij   = w_ij^2 / N * max(0, S2_ij - S1_ij^2 / S0_i)
  delta_ij = w_ij (S1_ij + shift_j S0_i) / S0_i  (0 where S0_i == 0)

Derivatives by batched reverse mode: one autograd.grad call per batch with
is_grads_batched=True and a [D, N, K] cotangent (D = K or P directions),
which torch turns into D*N-row matrix products. --dtype float32 runs the
network and its derivatives in float32 and adds each batch's S1/S2 product
into float64 sums, as ecprune does; float64 runs everything in float64.

Prints one JSON line: seconds of the analysis (model and data loaded before
the clock starts), load seconds, and optionally writes/compares scores.
"""
import argparse
import json
import os
import sys
import time

t_start = time.time()
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402
import torch  # noqa: E402

t_import = time.time() - t_start


def load_mlp(path):
    """Returns [(name, W [out,in] float64, b [out] float64, act)] in graph order."""
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    layers = []
    for node in m.graph.node:
        if node.op_type == "Gemm":
            at = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if at.get("transA", 0):
                raise SystemExit("torch_peer: Gemm with transA is not supported")
            w = inits[node.input[1]]
            if not at.get("transB", 0):
                w = w.T
            w = w * at.get("alpha", 1.0)
            b = None
            if len(node.input) > 2 and node.input[2]:
                b = inits[node.input[2]].reshape(-1) * at.get("beta", 1.0)
            layers.append([node.input[1], np.ascontiguousarray(w), b, None])
        elif node.op_type in ("Relu", "Tanh", "Sigmoid"):
            if not layers or layers[-1][3] is not None:
                raise SystemExit("torch_peer: activation without a Gemm before it")
            layers[-1][3] = node.op_type
        elif node.op_type in ("Identity", "Flatten"):
            continue
        else:
            raise SystemExit("torch_peer: unsupported op %s (MLP chains of Gemm only)" % node.op_type)
    return layers


ACT = {"Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, None: lambda z: z}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("calib", help=".npy [N, in]")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--probes", type=int, default=0, help="random-sign probes (0: exact, one direction per output)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--max-tangent", type=int, default=1 << 24,
                    help="bound on D x batch x width floats per autograd call, as ecprune's MaxTangent")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scores", help="write NAME.importance / NAME.delta to this .npz")
    ap.add_argument("--compare", help="ecprune --scores .npz to compare importances and deltas with")
    ap.add_argument("--rtol", type=float, default=1e-6)
    a = ap.parse_args()

    torch.set_num_threads(a.threads or os.cpu_count())
    dt = torch.float32 if a.dtype == "float32" else torch.float64
    torch.manual_seed(a.seed)
    t0 = time.time()
    layers = load_mlp(a.model)
    x_all = np.load(a.calib, mmap_mode="r")
    if a.limit:
        x_all = x_all[: a.limit]
    n_total = x_all.shape[0]
    x_all = x_all.reshape(n_total, -1)
    Ws = [torch.from_numpy(w).to(dt) for _, w, _, _ in layers]
    Bs = [None if b is None else torch.from_numpy(b).to(dt) for _, _, b, _ in layers]
    acts = [ACT[act] for _, _, _, act in layers]
    npr = len(layers)  # prunable: every dense layer of the chain, as ecprune's extractor says
    K = layers[-1][1].shape[0]
    t_load = time.time() - t0

    t1 = time.time()
    f64 = torch.float64
    S0 = [torch.zeros(Ws[l].shape[0], dtype=f64) for l in range(npr)]
    S1 = [torch.zeros(Ws[l].shape, dtype=f64) for l in range(npr)]
    S2 = [torch.zeros(Ws[l].shape, dtype=f64) for l in range(npr)]
    shift = [None] * npr
    if 0 < a.probes < K:  # as ecprune: probes only when they are fewer than K
        D, probes, mode = a.probes, True, "probes(%d)" % a.probes
    else:
        D, probes, mode = K, False, "reverse"
    width = max(max(w.shape) for w in Ws)
    for s0 in range(0, n_total, a.batch):
        x = torch.from_numpy(np.ascontiguousarray(x_all[s0: s0 + a.batch], dtype=np.float64)).to(dt)
        n = x.shape[0]
        ins, zs = [], []
        h = x
        for l in range(len(layers)):
            if l < npr:
                ins.append(h)
            z = h @ Ws[l].T
            if Bs[l] is not None:
                z = z + Bs[l]
            if l < npr:
                z.requires_grad_(True)
                zs.append(z)
            h = acts[l](z)
        y = h
        g = [torch.zeros(n, Ws[l].shape[0], dtype=dt) for l in range(npr)]
        chunk = max(1, a.max_tangent // max(1, n * width))
        for p0 in range(0, D, chunk):
            p1 = min(D, p0 + chunk)
            if probes:
                v = torch.randint(0, 2, (p1 - p0, n, K), dtype=dt) * 2 - 1
            else:
                v = torch.zeros(p1 - p0, n, K, dtype=dt)
                idx = torch.arange(p0, p1)
                v[idx - p0, :, idx] = 1
            grads = torch.autograd.grad(y, zs, grad_outputs=v, is_grads_batched=True,
                                        retain_graph=p1 < D)
            for l in range(npr):
                g[l] += (grads[l] * grads[l]).sum(0)
            del grads
        with torch.no_grad():
            for l in range(npr):
                gl = g[l] / D if probes else g[l]
                al = ins[l].detach()
                if shift[l] is None:
                    shift[l] = al.mean(0)
                ac = al - shift[l]
                S0[l] += gl.sum(0).to(f64)
                S1[l] += (gl.T @ ac).to(f64)
                S2[l] += (gl.T @ (ac * ac)).to(f64)
        del zs, ins, y, h
    imps, deltas = [], []
    with torch.no_grad():
        for l in range(npr):
            w = torch.from_numpy(layers[l][1])
            s0 = S0[l][:, None]
            ok = s0 > 0
            safe = torch.where(ok, s0, torch.ones_like(s0))
            v = torch.clamp(S2[l] - S1[l] * S1[l] / safe, min=0)
            imp = torch.where(ok, w * w / n_total * v, torch.zeros_like(v))
            sh = shift[l].to(f64)[None, :]
            delta = torch.where(ok, w * (S1[l] + sh * s0) / safe, torch.zeros_like(v))
            imps.append(imp)
            deltas.append(delta)
    secs = time.time() - t1

    res = {"model": a.model, "samples": n_total, "dtype": a.dtype, "mode": mode, "directions": D,
           "seconds": secs, "load_seconds": t_load, "import_seconds": t_import,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "checksum": float(sum(float(i.sum()) for i in imps))}
    if a.scores:
        arrays = {}
        for l in range(npr):
            arrays[layers[l][0] + ".importance"] = imps[l].numpy()
            arrays[layers[l][0] + ".delta"] = deltas[l].numpy()
        np.savez(a.scores, **arrays)
    if a.compare:
        z = np.load(a.compare)
        worst = {}
        ok = True
        for l in range(npr):
            name = layers[l][0]
            for kind, mine in (("importance", imps[l].numpy()), ("delta", deltas[l].numpy())):
                theirs = z[name + "." + kind].reshape(mine.shape)
                # Relative to the layer's largest value: entries far below
                # it are sums of cancelling terms whose relative error
                # means nothing; a wrong entry is off by O(1) of the scale.
                scale = max(np.abs(mine).max(), 1e-300)
                err = float(np.abs(theirs - mine).max() / scale)
                worst[name + "." + kind] = err
                ok = ok and err <= a.rtol
        res["compare"] = {"max_rel_err": worst, "rtol": a.rtol, "ok": ok}
    print(json.dumps(res))
    if a.compare and not res["compare"]["ok"]:
        sys.exit(3)


if __name__ == "__main__":
    main()
