#!/usr/bin/env python3
"""PyTorch peer of GemmBench's int8 row: one linear y = x W^T + b on the same shapes, single-threaded.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread \\
        /usr/bin/python3 tools/peer_linear_int8.py --m 512 --k 4096 --n 8192 --reps 5 [--json out.json]

Rows, each with its median time, GFLOP/s and the relative error max |y - ref| / max |ref| against a float64
reference of the unquantized weights (Gaussian x, W ~ N(0, 1/k), as in spark-tp's tests):
  fp32      F.linear in float32 (Debian's torch: OpenBLAS with the LD_LIBRARY_PATH above)
  bf16      F.linear with bf16 weights and inputs (oneDNN)
  dyn-int8  torch.ao.quantization.quantize_dynamic with per_channel_dynamic_qconfig: int8 weights with one
            scale per output channel (as spark-tp's int8) AND activations quantized to 8 bits per call
            (dynamic W8A8, fbgemm/onednn u8s8 GEMMs): PyTorch's int8 path on CPU, less accurate than
            weight-only
There is no weight-only int8 linear for CPU in torch 1.13.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def median_seconds(f, x, reps):
    f(x)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(x)
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--m", type=int, default=512)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    g = torch.Generator().manual_seed(7)
    m, k, n = a.m, a.k, a.n
    x = torch.randn(m, k, generator=g)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / k ** 0.5)
        lin.bias.copy_(torch.randn(n, generator=g) * 0.1)
    ref = (x.double() @ lin.weight.double().t() + lin.bias.double())
    wb, bb, xb = lin.weight.bfloat16(), lin.bias.bfloat16(), x.bfloat16()
    q = quantize_dynamic(nn.Sequential(lin), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    paths = [
        ("fp32", lambda t: F.linear(t, lin.weight, lin.bias), x),
        ("bf16", lambda t: F.linear(t, wb, bb), xb),
        ("dyn-int8", q, x),
    ]
    flops = 2.0 * m * k * n
    rows = []
    print(f"torch {torch.__version__}, {a.threads} thread(s), quantized engine {torch.backends.quantized.engine}; "
          f"X[{m} x {k}] W[{n} x {k}]^T, median of {a.reps}")
    print(f"{'path':<10} {'seconds':>10} {'GFLOP/s':>10} {'rel error':>10}")
    with torch.no_grad():
        for name, f, inp in paths:
            s = median_seconds(f, inp, a.reps)
            y = f(inp).double()
            err = float((y - ref).abs().max() / ref.abs().max())
            rows.append({"path": name, "m": m, "k": k, "n": n, "seconds": s, "gflops": flops / s / 1e9,
                         "rel_error": err, "torch": torch.__version__})
            print(f"{name:<10} {s:>10.4f} {flops / s / 1e9:>10.1f} {err:>10.2e}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
