#!/usr/bin/env python3
"""PyTorch peer of spark-tp's transformer benchmark: a BERT-base-shaped encoder in one process.

    /usr/bin/python3 tools/peer_transformer.py --threads 2 [--dtypes fp32,bf16] [--batch 4] [--seq 128]
        [--layers 12] [--hidden 768] [--heads 12] [--ffn 3072] [--vocab 30522] [--warmup 1] [--iters 5]
        [--impls eager,fastpath] [--json out.json]

The model is BERT's encoder as HF's modeling_bert.py runs it in eager mode: word + position + token-type
embeddings and LayerNorm, then per layer Q, K, V linears, softmax(Q K^T / sqrt(d)) V per head, the output
linear, residual + LayerNorm, GELU (erf) FFN, residual + LayerNorm. Random weights (std 0.02, LayerNorm
weights 1), `--batch` rows of `--seq` random token ids each (all rows the same length, so no padding and
no mask), inference mode, `torch.set_num_threads(--threads)`, one inter-op thread, and
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = --threads unless already set (Debian's torch runs fp32 GEMMs in
OpenBLAS, bf16 ones in oneDNN).

Implementations (`--impls`):
  eager     the modules above, written plainly (what a HF BertModel forward does)
  fastpath  torch.nn.TransformerEncoderLayer (batch_first, post-norm, gelu) in inference mode, which
            PyTorch runs through its fused "better transformer" kernel where it can
Dtypes (`--dtypes`): fp32, bf16 (weights and activations in bfloat16; fast only on CPUs with AVX-512 BF16
or AMX, through oneDNN).

Each (impl, dtype) runs `--warmup` forwards, then `--iters` timed forwards; tokens/s = batch * seq /
median time. `attention_s` is the median time of the attention core alone (QK^T, softmax, PV for every
layer on tensors of the same shapes), and `attention_fraction` its share of the forward.

Prints one JSON object on stdout (and writes it to `--json` when given):
  {"peer": "pytorch", "torch": version, "threads": N, "model": {...}, "results": [
     {"impl", "dtype", "tokens_per_s", "median_s", "runs_s": [...], "attention_s", "attention_fraction"}]}
and a table on stderr.
"""
import argparse
import json
import math
import os
import re
import statistics
import sys
import time


def _threads_from_argv():
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return None


# Debian's torch runs fp32 GEMMs in OpenBLAS (pthreads) and the rest on OpenMP: both get the thread count
# before torch loads them, unless the caller set them
if _threads_from_argv():
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_var, _threads_from_argv())

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Layer(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.inter = nn.Linear(hidden, ffn)
        self.down = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

    def split(self, x):
        b, n, h = x.shape
        return x.view(b, n, self.heads, h // self.heads).transpose(1, 2)

    def forward(self, x):
        b, n, h = x.shape
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(h // self.heads)
        ctx = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(b, n, h)
        x = self.ln1(self.out(ctx) + x)
        return self.ln2(self.down(F.gelu(self.inter(x))) + x)


class Encoder(nn.Module):
    def __init__(self, a, fastpath):
        super().__init__()
        self.word = nn.Embedding(a.vocab, a.hidden)
        self.pos = nn.Embedding(max(512, a.seq), a.hidden)
        self.token_type = nn.Embedding(2, a.hidden)
        self.ln = nn.LayerNorm(a.hidden, eps=1e-12)
        if fastpath:
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(a.hidden, a.heads, a.ffn, dropout=0.0, activation="gelu",
                                           layer_norm_eps=1e-12, batch_first=True, norm_first=False)
                for _ in range(a.layers))
        else:
            self.layers = nn.ModuleList(Layer(a.hidden, a.heads, a.ffn) for _ in range(a.layers))

    def forward(self, ids):
        n = ids.shape[1]
        x = self.word(ids) + self.pos.weight[:n] + self.token_type.weight[0]
        x = self.ln(x)
        for layer in self.layers:
            x = layer(x)
        return x


def init_weights(model, g):
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.data.zero_()
        elif p.dim() == 1:  # LayerNorm weights
            p.data.fill_(1.0)
        else:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.02)


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--impls", default="eager,fastpath")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.hidden % a.heads:
        p.error("--hidden must be a multiple of --heads")
    dtypes = [d.strip() for d in a.dtypes.split(",") if d.strip()]
    impls = [i.strip() for i in a.impls.split(",") if i.strip()]
    for d in dtypes:
        if d not in DTYPES:
            p.error("unknown dtype " + d + "; use " + ",".join(DTYPES))
    for i in impls:
        if i not in ("eager", "fastpath"):
            p.error("unknown impl " + i + "; use eager,fastpath")

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    tokens = a.batch * a.seq
    d = a.hidden // a.heads
    results = []
    with torch.inference_mode():
        for impl in impls:
            base = Encoder(a, fastpath=(impl == "fastpath")).eval()
            init_weights(base, g)
            for dn in dtypes:
                dt = DTYPES[dn]
                model = base.to(dt)
                median, runs = timed(lambda: model(ids), a.warmup, a.iters)
                q = torch.randn(a.batch, a.heads, a.seq, d, generator=g).to(dt)
                k = torch.randn(a.batch, a.heads, a.seq, d, generator=g).to(dt)
                v = torch.randn(a.batch, a.heads, a.seq, d, generator=g).to(dt)

                def attention_core():
                    for _ in range(a.layers):
                        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
                        torch.matmul(torch.softmax(s, dim=-1), v)

                att, _ = timed(attention_core, a.warmup, a.iters)
                results.append({"impl": impl, "dtype": dn, "tokens_per_s": tokens / median, "median_s": median,
                                "runs_s": runs, "attention_s": att, "attention_fraction": att / median})
                print(f"{impl:9s} {dn:5s} {tokens / median:10.1f} tokens/s  median {median:.3f} s  "
                      f"attention {100 * att / median:.0f}%", file=sys.stderr)
    blas = re.findall(r"BLAS_INFO=(\w+)", torch.__config__.show())
    out = {"peer": "pytorch", "torch": torch.__version__, "threads": a.threads,
           "blas": blas[0] if blas else None, "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
           "mkldnn": torch.backends.mkldnn.is_available(),
           "model": {"layers": a.layers, "hidden": a.hidden, "heads": a.heads, "ffn": a.ffn, "vocab": a.vocab,
                     "batch": a.batch, "seq": a.seq, "tokens": tokens},
           "warmup": a.warmup, "iters": a.iters, "results": results}
    text = json.dumps(out)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
