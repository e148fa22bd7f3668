#!/usr/bin/env python3
"""PyTorch peer of `spark-tp bench generate`: a greedy loop with a KV cache on the same Llama checkpoint.

    /usr/bin/python3 tools/peer_generate.py --model DIR --prompts FILE --new-tokens N [--threads 1] [--json out.json]
        [--dtype f32|bf16]

DIR is the Hugging Face llama directory the benchmark wrote (config.json, model.safetensors in float32,
read here with numpy: no `transformers`, no `safetensors` package). FILE has one prompt per line (token
ids separated by spaces; every prompt the same length, so the batch needs no padding or mask beyond the
causal one). The model is HF's LlamaForCausalLM written plainly (modeling_llama.py): RMSNorm, q/k/v/o
projections, RoPE (default, rotate_half), grouped-query attention (repeat_kv), SwiGLU MLP, final norm,
untied lm_head; float32 (`--dtype bf16`: weights, activations and KV cache in torch bfloat16, as
`model.to(torch.bfloat16)` runs it), inference mode, `torch.set_num_threads(--threads)`, one inter-op thread.

Greedy decoding with a KV cache, all rows in one batch: a prefill forward over the prompts, then one
forward per new token. As in the Java benchmark, the run is made twice: 1 new token (prefill) and N new
tokens; decode_s is the difference. Prints one JSON object on stdout (and writes it to --json):
  {"peer": "pytorch", "torch": ..., "threads": N, "prefill_s": ..., "decode_s": ..., "tokens": [[...], ...]}
"""
import argparse
import json
import math
import os
import struct
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--new-tokens", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    path = os.path.join(a.model, "model.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    w = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info["dtype"]
        s, e = info["data_offsets"]
        w[name] = torch.from_numpy(np.frombuffer(data[s:e], dtype=np.float32).reshape(info["shape"]).copy())
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    w = {k: v.to(dt) for k, v in w.items()}

    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = H // nh
    L = cfg["num_hidden_layers"]
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))

    def rms(x, g):
        v = x.pow(2).mean(-1, keepdim=True)
        return g * (x * torch.rsqrt(v + eps))

    def rot_half(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def rope(x, pos):  # x [B, h, T, hd], pos [T]
        f = pos.float()[:, None] * inv_freq[None, :]
        emb = torch.cat((f, f), dim=-1)
        return (x * emb.cos() + rot_half(x) * emb.sin()).to(x.dtype)

    def forward(ids, cache, past):
        B, T = ids.shape
        x = w["model.embed_tokens.weight"][ids]
        pos = torch.arange(past, past + T)
        for l in range(L):
            p = "model.layers.%d." % l
            h = rms(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, nh, hd).transpose(1, 2)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
            q = rope(q, pos)
            k = rope(k, pos)
            kc, vc = cache[l]
            kc[:, :, past:past + T] = k
            vc[:, :, past:past + T] = v
            K = kc[:, :, : past + T].repeat_interleave(nh // nkv, dim=1)
            V = vc[:, :, : past + T].repeat_interleave(nh // nkv, dim=1)
            s = (q @ K.transpose(-1, -2)) / math.sqrt(hd)
            if T > 1:
                mask = torch.full((T, past + T), float("-inf")).triu(past + 1)
                s = s + mask.to(s.dtype)
            o = (torch.softmax(s, dim=-1) @ V).transpose(1, 2).reshape(B, T, H)
            x = x + o @ w[p + "self_attn.o_proj.weight"].T
            h = rms(x, w[p + "post_attention_layernorm.weight"])
            g = h @ w[p + "mlp.gate_proj.weight"].T
            u = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
        x = rms(x[:, -1], w["model.norm.weight"])
        return x @ w["lm_head.weight"].T

    prompts = [[int(t) for t in line.split()] for line in open(a.prompts) if line.strip()]
    ids0 = torch.tensor(prompts, dtype=torch.long)
    B, P = ids0.shape

    def generate(new):
        cache = [(torch.zeros(B, nkv, P + new, hd, dtype=dt), torch.zeros(B, nkv, P + new, hd, dtype=dt))
                 for _ in range(L)]
        out = []
        with torch.inference_mode():
            logits = forward(ids0, cache, 0)
            nxt = logits.argmax(-1)
            out.append(nxt)
            past = P
            for _ in range(new - 1):
                logits = forward(nxt[:, None], cache, past)
                past += 1
                nxt = logits.argmax(-1)
                out.append(nxt)
        return torch.stack(out, dim=1).tolist()

    generate(1)  # warm-up, as in the Java benchmark
    t0 = time.perf_counter()
    generate(1)
    t1 = time.perf_counter()
    tokens = generate(a.new_tokens)
    t2 = time.perf_counter()
    prefill = t1 - t0
    res = {"peer": "pytorch", "torch": torch.__version__, "threads": a.threads, "dtype": a.dtype, "prefill_s": prefill,
           "decode_s": (t2 - t1) - prefill, "tokens": tokens}
    s = json.dumps(res)
    print(s)
    if a.json:
        with open(a.json, "w") as f:
            f.write(s + "\n")
    print("pytorch: prefill %.2f s, decode %.2f s" % (prefill, res["decode_s"]), file=sys.stderr)


if __name__ == "__main__":
    main()
