#!/usr/bin/env python3
"""PyTorch peer of spark-tp's engine benchmark: the same Megatron MLP, tensor-parallel over processes.

y = gelu(x W1^T + b1) W2^T + b2, W1 [ffn, d] split by rows (column-parallel), W2 [d, ffn] split by columns
(row-parallel); each rank computes its partial sum of the second linear, the partials are all-reduced in
fp32 (torch.distributed, gloo), then the bias is added. Weights in [out, in] (F.linear), stored in the
given dtype (int8: PyTorch's only int8 linear on CPU, `quantize_dynamic` with per-channel int8 weights,
which also quantizes the activations to 8 bits per call, so it is faster and less accurate than spark-tp's
weight-only int8); every step runs `rows_per_step` rows (the same rows on every rank, as spark-tp's group step
after its all-gather). Each process uses one thread (torch.set_num_threads).

  python3 torch_mlp_peer.py --dtype bf16 --d 4096 --ffn 16384 --rows 4096 --rows-per-step 512 --tp 2

Prints one JSON line: {"dtype", "tp", "rows", "seconds", "rows_per_s", "torch", "max_abs_check"}.
For fp32 timings run with LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread and OPENBLAS_NUM_THREADS=1 (Debian's torch
then uses OpenBLAS, as spark-tp does).
"""
import argparse
import json
import os
import sys
import time


def worker(rank, args, port, out_q):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=args.tp)
    int8 = args.dtype == "int8"
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16, "int8": torch.float32}[args.dtype]
    g = torch.Generator().manual_seed(42)
    d, ffn, tp = args.d, args.ffn, args.tp
    # balanced shards, as spark-tp's Split.balanced
    lens = [ffn // tp + (1 if r < ffn % tp else 0) for r in range(tp)]
    off = sum(lens[:rank])
    w1 = ((torch.rand(ffn, d, generator=g) * 2 - 1) / d ** 0.5)[off:off + lens[rank]].to(dtype).contiguous()
    b1 = ((torch.rand(ffn, generator=g) * 2 - 1) / d ** 0.5)[off:off + lens[rank]].to(dtype)
    w2 = ((torch.rand(d, ffn, generator=g) * 2 - 1) / ffn ** 0.5)[:, off:off + lens[rank]].to(dtype).contiguous()
    b2 = (torch.rand(d, generator=g) * 2 - 1) / ffn ** 0.5
    x_all = torch.randn(args.rows_per_step, d, generator=g).to(dtype)

    if int8:
        lin1 = torch.nn.Linear(d, lens[rank])
        lin2 = torch.nn.Linear(lens[rank], d, bias=False)
        with torch.no_grad():
            lin1.weight.copy_(w1)
            lin1.bias.copy_(b1)
            lin2.weight.copy_(w2)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        mods = quantize_dynamic(torch.nn.Sequential(lin1, lin2), {torch.nn.Linear: per_channel_dynamic_qconfig})
        first, second = mods[0], mods[1]
    else:
        first = lambda x: F.linear(x, w1, b1)
        second = lambda h: F.linear(h, w2)

    def step(x):
        h = F.gelu(first(x))
        partial = second(h).float()
        dist.all_reduce(partial)  # fp32 partial sums
        return partial + b2

    with torch.no_grad():
        step(x_all)  # warm-up
        dist.barrier()
        steps = max(1, args.rows // args.rows_per_step)
        t0 = time.perf_counter()
        for _ in range(steps):
            y = step(x_all)
        dist.barrier()
        sec = time.perf_counter() - t0
    if rank == 0:
        out_q.put({"dtype": args.dtype, "tp": tp, "rows": steps * args.rows_per_step, "seconds": sec,
                   "rows_per_s": steps * args.rows_per_step / sec, "torch": torch.__version__,
                   "threads_per_process": args.threads, "max_abs_check": float(y.abs().max())})
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f32", "f16", "int8"])
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--ffn", type=int, default=16384)
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--rows-per-step", type=int, default=512)
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    import socket
    import torch.multiprocessing as mp
    port = args.port
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args, port, q)) for r in range(args.tp)]
    for pr in procs:
        pr.start()
    result = q.get(timeout=3600)
    for pr in procs:
        pr.join()
        if pr.exitcode != 0:
            print("rank process failed with exit code %s" % pr.exitcode, file=sys.stderr)
            sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
