#!/usr/bin/env python3
"""Makes the Hugging Face checkpoint fixtures of spark-tp's tests (run with Debian's python3-torch):

    /usr/bin/python3 tools/make_hf_fixtures.py [spark-tp/src/test/resources/hf]

Writes one folder per model, in the layout Hugging Face's save_pretrained writes:
  bert/    config.json, model.safetensors (F32, "bert." prefix, pooler and pre-training heads),
           tokenizer.json (WordPiece), tokenizer_config.json, special_tokens_map.json, vocab.txt,
           reference.json
  llama/   config.json, model-00001-of-00002.safetensors, model-00002-of-00002.safetensors,
           model.safetensors.index.json (BF16, GQA 8/2, rope_scaling llama3, untied lm_head),
           generation_config.json, reference.json
  qwen2/   config.json, model.safetensors (F16, GQA 6/2, q/k/v biases, tied head), generation_config.json,
           reference.json
  qwen3/   config.json, model.safetensors (BF16, per-head q_norm/k_norm, head_dim 12 with hidden 40 and 6 heads,
           GQA 6/3, tied head), generation_config.json, reference.json
  gpt2/    config.json, model.safetensors (F32, Conv1D [in, out] weights, tied head),
           tokenizer.json (byte-level BPE), tokenizer_config.json, special_tokens_map.json, vocab.json,
           merges.txt, generation_config.json, reference.json
  roberta/ config.json, model.safetensors (F32, RobertaModel without prefix as sentence-transformers saves
           it, 5 heads of 8, positions offset by pad_token_id + 1), reference.json
  mistral/ config.json, model.safetensors (F32, head_dim 16 with hidden 48 and 4 heads, GQA 4/2,
           sliding_window null, untied head), tokenizer.json (SentencePiece-style BPE with byte fallback
           and a <s> template, as Llama-2 / Mistral), tokenizer_config.json, special_tokens_map.json,
           generation_config.json, reference.json
  rope_reference.json   rotary embeddings alone (no rope_scaling, linear, llama3): inv_freq, and vectors
           rotated at positions up to 20000

No `transformers`, `safetensors` or `tokenizers` package is used (Debian ships none of them): the models
are written plainly in torch following HF's modeling_bert.py, modeling_roberta.py, modeling_llama.py,
modeling_mistral.py, modeling_qwen2.py, modeling_qwen3.py and modeling_gpt2.py, the safetensors files with the format's own
rules (8-byte little-endian header length, JSON header padded with spaces to a multiple of 8, raw
little-endian data), and the tokenizer.json files by hand in the `tokenizers` serialization format. The token ids of reference.json's `texts` come from a
plain Python implementation of the same tokenization algorithms below (BertNormalizer + BertPreTokenizer
+ WordPiece + TemplateProcessing; GPT-2's pre-tokenization pattern + byte-level BPE; Prepend/Replace
normalizer + BPE with byte fallback + TemplateProcessing), not from the Java code under test.

Every reference value is computed in float64 from the weights as stored (BF16/F16 widened exactly).
reference.json holds:
  model, dtype, hidden, vocab
  inputs                    token id lists (different lengths, one of length 1, one of the maximum length)
  token_type_ids            (bert, roberta) zeros like inputs
  rows[i].last_hidden       [len][hidden]: the final hidden state (after the final norm for decoders,
                            after the last layer for BERT)
  rows[i].embed_mean / embed_cls / embed_last / embed_mean_normalized   [hidden]
  rows[i].pooler            (bert, roberta) tanh(pooler.dense(h[0]))
  rows[i].logits_last       (decoders) [vocab] logits at the last position
  rows[i].score             (decoders) sum over t = 2..n of log p(x_t | x_<t); 0.0 for a length-1 row
  greedy                    (llama, qwen3, gpt2) [{prompt, tokens (6 greedy tokens, whole prefix recomputed each
                            step), margins (top-1 minus top-2 logit at each step)}]
  texts, text_ids           (bert, gpt2, mistral) the tokenizer's ids with special tokens as the
                            post-processor adds
  truncate_max_length, text_ids_truncated   the same with truncation to that many ids (specials kept)
"""
import json
import math
import os
import struct
import sys
import unicodedata

import torch

torch.set_grad_enabled(False)

TRANSFORMERS_VERSION = "4.46.0"


# ---------------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------------

ST_DTYPES = {torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2)}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.float16:
        return t.numpy().astype("<f2").tobytes()
    return t.numpy().astype("<f4").tobytes()


def write_safetensors(path, tensors):
    """tensors: name -> torch tensor (its dtype is the stored dtype), written in name order."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        data = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype][0], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return offset


def write_json(path, obj, indent=2, sort_keys=True):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------------
# random weights of a realistic scale
# ---------------------------------------------------------------------------------------------------

class Init:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape, std):
        return torch.randn(*shape, generator=self.g, dtype=torch.float64) * std

    def linear(self, out_dim, in_dim):
        # std ~ 1/sqrt(in): keeps activations O(1), attention not uniform
        return self.normal(out_dim, in_dim, std=1.0 / math.sqrt(in_dim))

    def bias(self, n, std=0.05):
        return self.normal(n, std=std)

    def norm_weight(self, n):
        return 1.0 + self.normal(n, std=0.1)


def stored(tensors, dtype):
    """Rounds every float64 tensor to the stored dtype; returns (stored tensors, their float64 widening)."""
    s = {k: v.to(dtype).contiguous() for k, v in tensors.items()}
    w = {k: v.to(torch.float64) for k, v in s.items()}
    return s, w


# ---------------------------------------------------------------------------------------------------
# float64 reference math, as HF's modeling code
# ---------------------------------------------------------------------------------------------------

def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):  # HF "gelu_new"
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x * torch.sigmoid(x)


def attention(q, k, v, n_heads, n_kv, causal):
    """q [n, H*d], k/v [n, KV*d] -> [n, H*d]; query head h uses KV head h // (H / KV) (HF repeat_kv)."""
    n = q.shape[0]
    d = q.shape[1] // n_heads
    q = q.view(n, n_heads, d).transpose(0, 1)
    k = k.view(n, n_kv, d).transpose(0, 1)
    v = v.view(n, n_kv, d).transpose(0, 1)
    group = n_heads // n_kv
    k = k.repeat_interleave(group, dim=0)
    v = v.repeat_interleave(group, dim=0)
    s = q @ k.transpose(1, 2) / math.sqrt(d)
    if causal:
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        s = s.masked_fill(mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return (p @ v).transpose(0, 1).reshape(n, n_heads * d)


def rope_inv_freq(head_dim, theta, scaling):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is None:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":  # HF modeling_rope_utils._compute_llama3_parameters
        factor = scaling["factor"]
        low = scaling["low_freq_factor"]
        high = scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        low_wavelen = old / low
        high_wavelen = old / high
        wavelen = 2 * math.pi / inv_freq
        out = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, out)
    raise ValueError("rope_scaling " + str(scaling))


def apply_rope(x, n_heads, inv_freq):
    """x [n, heads*d]; HF rotate_half convention: pairs (i, i + d/2)."""
    n = x.shape[0]
    d = x.shape[1] // n_heads
    pos = torch.arange(n, dtype=torch.float64)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    x = x.view(n, n_heads, d)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rot = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rot * sin).reshape(n, n_heads * d)


def pooled(h):
    mean = h.mean(0)
    return {
        "last_hidden": h.tolist(),
        "embed_mean": mean.tolist(),
        "embed_cls": h[0].tolist(),
        "embed_last": h[-1].tolist(),
        "embed_mean_normalized": (mean / mean.norm()).tolist(),
    }


def causal_outputs(ids, hidden_fn, logits_fn):
    h = hidden_fn(ids)
    logits = logits_fn(h)
    logp = torch.log_softmax(logits, dim=-1)
    score = sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)))
    row = pooled(h)
    row["logits_last"] = logits[-1].tolist()
    row["score"] = float(score)
    return row


def greedy(prompts, hidden_fn, logits_fn, steps=6):
    out = []
    for p in prompts:
        seq = list(p)
        toks, margins = [], []
        for _ in range(steps):
            last = logits_fn(hidden_fn(seq))[-1]
            top = torch.topk(last, 2).values
            nxt = int(torch.argmax(last))
            toks.append(nxt)
            margins.append(float(top[0] - top[1]))
            seq.append(nxt)
        out.append({"prompt": list(p), "tokens": toks, "margins": margins})
    return out


# ---------------------------------------------------------------------------------------------------
# BERT (modeling_bert.py: BertEmbeddings, BertSelfAttention, BertSelfOutput, BertIntermediate,
# BertOutput, BertPooler)
# ---------------------------------------------------------------------------------------------------

def encoder_weights(init, prefix, L, D, F, V, P, T):
    """BertModel / RobertaModel tensors (embeddings, layers, pooler) under `prefix`."""
    w = {
        prefix + "embeddings.word_embeddings.weight": init.normal(V, D, std=0.3),
        prefix + "embeddings.position_embeddings.weight": init.normal(P, D, std=0.3),
        prefix + "embeddings.token_type_embeddings.weight": init.normal(T, D, std=0.3),
        prefix + "embeddings.LayerNorm.weight": init.norm_weight(D),
        prefix + "embeddings.LayerNorm.bias": init.bias(D),
    }
    for i in range(L):
        p = f"{prefix}encoder.layer.{i}."
        for part in ("query", "key", "value"):
            w[p + f"attention.self.{part}.weight"] = init.linear(D, D)
            w[p + f"attention.self.{part}.bias"] = init.bias(D)
        w[p + "attention.output.dense.weight"] = init.linear(D, D)
        w[p + "attention.output.dense.bias"] = init.bias(D)
        w[p + "attention.output.LayerNorm.weight"] = init.norm_weight(D)
        w[p + "attention.output.LayerNorm.bias"] = init.bias(D)
        w[p + "intermediate.dense.weight"] = init.linear(F, D)
        w[p + "intermediate.dense.bias"] = init.bias(F)
        w[p + "output.dense.weight"] = init.linear(D, F)
        w[p + "output.dense.bias"] = init.bias(D)
        w[p + "output.LayerNorm.weight"] = init.norm_weight(D)
        w[p + "output.LayerNorm.bias"] = init.bias(D)
    w[prefix + "pooler.dense.weight"] = init.linear(D, D)
    w[prefix + "pooler.dense.bias"] = init.bias(D)
    return w


def encoder_forward(w, prefix, L, H, eps):
    """hidden(ids, positions): BertModel's last hidden state; pooler(h)."""
    def lin(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    def hidden(ids, positions, types=None):
        n = len(ids)
        types = types or [0] * n
        x = (w[prefix + "embeddings.word_embeddings.weight"][ids]
             + w[prefix + "embeddings.position_embeddings.weight"][positions]
             + w[prefix + "embeddings.token_type_embeddings.weight"][types])
        x = layer_norm(x, w[prefix + "embeddings.LayerNorm.weight"], w[prefix + "embeddings.LayerNorm.bias"], eps)
        for i in range(L):
            p = f"{prefix}encoder.layer.{i}."
            q = lin(x, p + "attention.self.query")
            k = lin(x, p + "attention.self.key")
            v = lin(x, p + "attention.self.value")
            a = lin(attention(q, k, v, H, H, causal=False), p + "attention.output.dense")
            x = layer_norm(a + x, w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], eps)
            m = lin(gelu_erf(lin(x, p + "intermediate.dense")), p + "output.dense")
            x = layer_norm(m + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        return x

    def pooler(h):
        return torch.tanh(lin(h[0], prefix + "pooler.dense"))

    return hidden, pooler


def make_bert(out_dir, vocab_size):
    L, D, H, F, P, T = 2, 36, 6, 74, 32, 2
    eps = 1e-12
    init = Init(1001)
    w = encoder_weights(init, "bert.", L, D, F, vocab_size, P, T)
    # BertForPreTraining heads (as bert-base-uncased carries them); the decoder is tied to the word
    # embeddings and, as save_pretrained does for tied weights, not written
    w["cls.predictions.bias"] = init.bias(vocab_size)
    w["cls.predictions.transform.dense.weight"] = init.linear(D, D)
    w["cls.predictions.transform.dense.bias"] = init.bias(D)
    w["cls.predictions.transform.LayerNorm.weight"] = init.norm_weight(D)
    w["cls.predictions.transform.LayerNorm.bias"] = init.bias(D)
    w["cls.seq_relationship.weight"] = init.linear(2, D)
    w["cls.seq_relationship.bias"] = init.bias(2)
    s, w = stored(w, torch.float32)
    hidden, pooler = encoder_forward(w, "bert.", L, H, eps)

    config = {
        "architectures": ["BertForPreTraining"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": F,
        "layer_norm_eps": eps,
        "max_position_embeddings": P,
        "model_type": "bert",
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "type_vocab_size": T,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), s)

    g = torch.Generator().manual_seed(2001)
    cls_id, sep_id = BERT_SPECIAL.index("[CLS]"), BERT_SPECIAL.index("[SEP]")
    inputs = []
    for n in (1, 2, 5, 9, 17, P):
        if n == 1:
            inputs.append([cls_id])
            continue
        body = torch.randint(len(BERT_SPECIAL), vocab_size, (n - 2,), generator=g).tolist()
        inputs.append([cls_id] + body + [sep_id])
    rows = []
    for ids in inputs:
        h = hidden(ids, list(range(len(ids))))
        row = pooled(h)
        row["pooler"] = pooler(h).tolist()
        rows.append(row)
    return {"model": "bert", "dtype": "F32", "hidden": D, "vocab": vocab_size, "inputs": inputs,
            "token_type_ids": [[0] * len(ids) for ids in inputs], "rows": rows}


def make_roberta(out_dir):
    """RobertaModel as sentence-transformers saves it: no "roberta." prefix, pooler present, positions
    offset by padding_idx + 1 (HF create_position_ids_from_input_ids; no padding inside a row)."""
    L, D, H, F, V, T = 2, 40, 5, 64, 90, 1
    pad = 1
    P = 32 + pad + 1  # as roberta-base's 514 = 512 + 2: rows of up to 32 tokens
    eps = 1e-5
    init = Init(1005)
    s, w = stored(encoder_weights(init, "", L, D, F, V, P, T), torch.float32)
    hidden, pooler = encoder_forward(w, "", L, H, eps)
    config = {
        "architectures": ["RobertaModel"],
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": 0,
        "classifier_dropout": None,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": F,
        "layer_norm_eps": eps,
        "max_position_embeddings": P,
        "model_type": "roberta",
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "pad_token_id": pad,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "type_vocab_size": T,
        "use_cache": True,
        "vocab_size": V,
    }
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), s)
    g = torch.Generator().manual_seed(2005)
    inputs = []
    for n in (1, 2, 6, 10, 19, P - pad - 1):
        if n == 1:
            inputs.append([0])
            continue
        body = torch.randint(3, V, (n - 2,), generator=g).tolist()  # no <s>, <pad>, </s> inside
        inputs.append([0] + body + [2])
    rows = []
    for ids in inputs:
        h = hidden(ids, [pad + 1 + i for i in range(len(ids))])
        row = pooled(h)
        row["pooler"] = pooler(h).tolist()
        rows.append(row)
    return {"model": "roberta", "dtype": "F32", "hidden": D, "vocab": V, "inputs": inputs,
            "token_type_ids": [[0] * len(ids) for ids in inputs], "rows": rows}


# ---------------------------------------------------------------------------------------------------
# Llama / Qwen2 (modeling_llama.py, modeling_qwen2.py: RMSNorm, rotary embeddings with rotate_half,
# repeat_kv for GQA, SwiGLU MLP)
# ---------------------------------------------------------------------------------------------------

def llama_like(init, L, D, H, KV, F, V, qkv_bias, tied, head_dim=None, qk_norm=False):
    d = head_dim or D // H
    w = {"model.embed_tokens.weight": init.normal(V, D, std=0.3)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = init.norm_weight(D)
        w[p + "self_attn.q_proj.weight"] = init.linear(H * d, D)
        w[p + "self_attn.k_proj.weight"] = init.linear(KV * d, D)
        w[p + "self_attn.v_proj.weight"] = init.linear(KV * d, D)
        if qkv_bias:
            w[p + "self_attn.q_proj.bias"] = init.bias(H * d, std=0.2)
            w[p + "self_attn.k_proj.bias"] = init.bias(KV * d, std=0.2)
            w[p + "self_attn.v_proj.bias"] = init.bias(KV * d, std=0.2)
        w[p + "self_attn.o_proj.weight"] = init.linear(D, H * d)
        if qk_norm:  # Qwen3: Qwen3RMSNorm(head_dim) on every query and key head
            w[p + "self_attn.q_norm.weight"] = init.norm_weight(d)
            w[p + "self_attn.k_norm.weight"] = init.norm_weight(d)
        w[p + "post_attention_layernorm.weight"] = init.norm_weight(D)
        w[p + "mlp.gate_proj.weight"] = init.linear(F, D)
        w[p + "mlp.up_proj.weight"] = init.linear(F, D)
        w[p + "mlp.down_proj.weight"] = init.linear(D, F)
    w["model.norm.weight"] = init.norm_weight(D)
    if not tied:
        w["lm_head.weight"] = init.normal(V, D, std=0.3)
    return w


def head_rms_norm(x, n_heads, w, eps):
    """x [n, heads*d]: RMSNorm of each head's d values with weight w [d] (modeling_qwen3.py's q_norm / k_norm)."""
    n = x.shape[0]
    return rms_norm(x.view(n, n_heads, -1), w, eps).reshape(n, -1)


def llama_forward(w, L, H, KV, eps, inv_freq, qkv_bias, qk_norm=False):
    def proj(x, name):
        y = x @ w[name + ".weight"].T
        if qkv_bias and name + ".bias" in w:
            y = y + w[name + ".bias"]
        return y

    def hidden(ids):
        x = w["model.embed_tokens.weight"][ids]
        for i in range(L):
            p = f"model.layers.{i}."
            h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
            q = proj(h, p + "self_attn.q_proj")
            k = proj(h, p + "self_attn.k_proj")
            if qk_norm:  # before RoPE, as Qwen3Attention.forward
                q = head_rms_norm(q, H, w[p + "self_attn.q_norm.weight"], eps)
                k = head_rms_norm(k, KV, w[p + "self_attn.k_norm.weight"], eps)
            q = apply_rope(q, H, inv_freq)
            k = apply_rope(k, KV, inv_freq)
            v = proj(h, p + "self_attn.v_proj")
            x = x + proj(attention(q, k, v, H, KV, causal=True), p + "self_attn.o_proj")
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
            m = silu(proj(h, p + "mlp.gate_proj")) * proj(h, p + "mlp.up_proj")
            x = x + proj(m, p + "mlp.down_proj")
        return rms_norm(x, w["model.norm.weight"], eps)

    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]

    def logits(h):
        return h @ head.T

    return hidden, logits


def decoder_inputs(seed, vocab, lengths, bos=None):
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for j, n in enumerate(lengths):
        ids = torch.randint(0, vocab, (n,), generator=g).tolist()
        if bos is not None and j % 2 == 1:
            ids[0] = bos
        inputs.append(ids)
    return inputs


def make_llama(out_dir):
    L, D, H, KV, F, V, P = 2, 64, 8, 2, 100, 96, 48
    eps, theta = 1e-5, 10000.0
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    init = Init(1002)
    s, w = stored(llama_like(init, L, D, H, KV, F, V, qkv_bias=False, tied=False), torch.bfloat16)
    inv_freq = rope_inv_freq(D // H, theta, scaling)
    hidden, logits = llama_forward(w, L, H, KV, eps, inv_freq, qkv_bias=False)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": D // H,
        "hidden_act": "silu",
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": F,
        "max_position_embeddings": P,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "num_key_value_heads": KV,
        "pretraining_tp": 1,
        "rms_norm_eps": eps,
        "rope_scaling": scaling,
        "rope_theta": theta,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": V,
    }
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), config)
    # sharded as save_pretrained(max_shard_size=...) writes it: embeddings and layer 0 in the first
    # file, layer 1, the final norm and the head in the second, and an index of tensor -> file
    shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    shards = [{}, {}]
    for k, v in s.items():
        first = k.startswith("model.embed_tokens.") or k.startswith("model.layers.0.")
        shards[0 if first else 1][k] = v
    total = 0
    weight_map = {}
    for name, tensors in zip(shard_names, shards):
        total += write_safetensors(os.path.join(out_dir, name), tensors)
        for k in tensors:
            weight_map[k] = name
    write_json(os.path.join(out_dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    inputs = decoder_inputs(2002, V, (1, 3, 7, 12, 20, P), bos=1)
    rows = [causal_outputs(ids, hidden, logits) for ids in inputs]
    prompts = [[1], [1, 17, 42, 5], [1, 60, 61, 62, 63, 64, 9]]
    return {"model": "llama", "dtype": "BF16", "hidden": D, "vocab": V, "inputs": inputs, "rows": rows,
            "greedy": greedy(prompts, hidden, logits)}


def make_qwen2(out_dir):
    L, D, H, KV, F, V, P = 2, 48, 6, 2, 80, 80, 40
    eps, theta = 1e-6, 1000000.0
    init = Init(1003)
    s, w = stored(llama_like(init, L, D, H, KV, F, V, qkv_bias=True, tied=True), torch.float16)
    inv_freq = rope_inv_freq(D // H, theta, None)
    hidden, logits = llama_forward(w, L, H, KV, eps, inv_freq, qkv_bias=True)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 78,
        "eos_token_id": 79,
        "hidden_act": "silu",
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": F,
        "max_position_embeddings": P,
        "max_window_layers": L,
        "model_type": "qwen2",
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "num_key_value_heads": KV,
        "rms_norm_eps": eps,
        "rope_scaling": None,
        "rope_theta": theta,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": V,
    }
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), s)
    inputs = decoder_inputs(2003, V, (1, 2, 6, 11, 23, P))
    rows = [causal_outputs(ids, hidden, logits) for ids in inputs]
    return {"model": "qwen2", "dtype": "F16", "hidden": D, "vocab": V, "inputs": inputs, "rows": rows}


def make_qwen3(out_dir):
    """Qwen3 (modeling_qwen3.py): per-head q_norm / k_norm before RoPE, head_dim 12 with hidden 40 and 6 heads
    (6 x 12 = 72 != 40), GQA 6/3, no biases, tied head, BF16 as Qwen3's checkpoints. The config is Qwen2's keys
    (make_qwen2's fixture, same writer) plus attention_bias and head_dim."""
    L, D, H, KV, HD, F, V, P = 2, 40, 6, 3, 12, 72, 88, 40
    eps, theta = 1e-6, 1000000.0
    init = Init(1007)
    s, w = stored(llama_like(init, L, D, H, KV, F, V, qkv_bias=False, tied=True, head_dim=HD, qk_norm=True),
                  torch.bfloat16)
    inv_freq = rope_inv_freq(HD, theta, None)
    hidden, logits = llama_forward(w, L, H, KV, eps, inv_freq, qkv_bias=False, qk_norm=True)
    with open(os.path.join(os.path.dirname(out_dir), "qwen2", "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config.update({
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "bos_token_id": 86, "eos_token_id": 87,
        "head_dim": HD, "hidden_size": D, "intermediate_size": F, "max_position_embeddings": P,
        "max_window_layers": L, "model_type": "qwen3", "num_attention_heads": H, "num_hidden_layers": L,
        "num_key_value_heads": KV, "rms_norm_eps": eps, "rope_theta": theta, "torch_dtype": "bfloat16",
        "vocab_size": V})
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), s)
    inputs = decoder_inputs(2007, V, (1, 4, 9, 16, 27, P))
    rows = [causal_outputs(ids, hidden, logits) for ids in inputs]
    prompts = [[86], [86, 5, 40, 77], [86, 10, 11, 12, 13, 14, 60]]
    return {"model": "qwen3", "dtype": "BF16", "hidden": D, "vocab": V, "inputs": inputs, "rows": rows,
            "greedy": greedy(prompts, hidden, logits)}


def make_mistral(out_dir, V):
    """Mistral without a sliding window, with head_dim decoupled from hidden / heads (as Mistral-Nemo:
    4 heads x 16 = 64 != hidden 48), F32, untied head; V = its tokenizer's vocabulary."""
    L, D, H, KV, HD, F, P = 2, 48, 4, 2, 16, 96, 64
    eps, theta = 1e-5, 1000000.0
    init = Init(1006)
    s, w = stored(llama_like(init, L, D, H, KV, F, V, qkv_bias=False, tied=False, head_dim=HD), torch.float32)
    inv_freq = rope_inv_freq(HD, theta, None)
    hidden, logits = llama_forward(w, L, H, KV, eps, inv_freq, qkv_bias=False)
    config = {
        "architectures": ["MistralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": HD,
        "hidden_act": "silu",
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": F,
        "max_position_embeddings": P,
        "model_type": "mistral",
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "num_key_value_heads": KV,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": V,
    }
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), s)
    inputs = decoder_inputs(2006, V, (1, 3, 8, 15, 30, P), bos=1)
    rows = [causal_outputs(ids, hidden, logits) for ids in inputs]
    return {"model": "mistral", "dtype": "F32", "hidden": D, "vocab": V, "inputs": inputs, "rows": rows}


# ---------------------------------------------------------------------------------------------------
# GPT-2 (modeling_gpt2.py: Conv1D weights [in, out], fused c_attn = [q | k | v], gelu_new, tied head)
# ---------------------------------------------------------------------------------------------------

def make_gpt2(out_dir, vocab_size, eot_id):
    L, D, H, P = 2, 48, 6, 32
    F = 4 * D
    eps = 1e-5
    init = Init(1004)
    w = {
        "transformer.wte.weight": init.normal(vocab_size, D, std=0.3),
        "transformer.wpe.weight": init.normal(P, D, std=0.1),
    }
    for i in range(L):
        p = f"transformer.h.{i}."
        w[p + "ln_1.weight"] = init.norm_weight(D)
        w[p + "ln_1.bias"] = init.bias(D)
        w[p + "attn.c_attn.weight"] = init.linear(3 * D, D).T.contiguous()  # Conv1D: [in, out]
        w[p + "attn.c_attn.bias"] = init.bias(3 * D, std=0.2)
        w[p + "attn.c_proj.weight"] = init.linear(D, D).T.contiguous()
        w[p + "attn.c_proj.bias"] = init.bias(D)
        w[p + "ln_2.weight"] = init.norm_weight(D)
        w[p + "ln_2.bias"] = init.bias(D)
        w[p + "mlp.c_fc.weight"] = init.linear(F, D).T.contiguous()
        w[p + "mlp.c_fc.bias"] = init.bias(F)
        w[p + "mlp.c_proj.weight"] = init.linear(D, F).T.contiguous()
        w[p + "mlp.c_proj.bias"] = init.bias(D)
    w["transformer.ln_f.weight"] = init.norm_weight(D)
    w["transformer.ln_f.bias"] = init.bias(D)
    s, w = stored(w, torch.float32)

    def conv1d(x, name):
        return x @ w[name + ".weight"] + w[name + ".bias"]

    def hidden(ids):
        n = len(ids)
        x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][torch.arange(n)]
        for i in range(L):
            p = f"transformer.h.{i}."
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            q, k, v = conv1d(h, p + "attn.c_attn").split(D, dim=-1)
            x = x + conv1d(attention(q, k, v, H, H, causal=True), p + "attn.c_proj")
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            x = x + conv1d(gelu_tanh(conv1d(h, p + "mlp.c_fc")), p + "mlp.c_proj")
        return layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)

    def logits(h):
        return h @ w["transformer.wte.weight"].T

    # GPT-2's config.json (as save_pretrained writes it) has no tie_word_embeddings key: it is the
    # default (true) of PretrainedConfig, and to_json_file writes only values that differ from defaults
    config = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": eot_id,
        "embd_pdrop": 0.1,
        "eos_token_id": eot_id,
        "initializer_range": 0.02,
        "layer_norm_epsilon": eps,
        "model_type": "gpt2",
        "n_ctx": P,
        "n_embd": D,
        "n_head": H,
        "n_inner": None,
        "n_layer": L,
        "n_positions": P,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), s)
    inputs = decoder_inputs(2004, vocab_size, (1, 4, 8, 13, 21, P))
    rows = [causal_outputs(ids, hidden, logits) for ids in inputs]
    prompts = [[eot_id], [40, 41, 42, 43], [100, 7, 250, 33, 12, 299, 5]]
    return {"model": "gpt2", "dtype": "F32", "hidden": D, "vocab": vocab_size, "inputs": inputs,
            "rows": rows, "greedy": greedy(prompts, hidden, logits)}


# ---------------------------------------------------------------------------------------------------
# WordPiece tokenizer (tokenizers: BertNormalizer, BertPreTokenizer, WordPiece, TemplateProcessing)
# ---------------------------------------------------------------------------------------------------

BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_WORDS = [
    "the", "quick", "brown", "fox", "jump", "over", "lazy", "dog", "hello", "world", "spark", "run",
    "tensor", "parallel", "inference", "model", "data", "frame", "hug", "face", "token", "cafe", "deja",
    "vu", "un", "on", "in", "is", "a", "of", "and", "to", "it", "we", "text", "word", "piece", "embed",
    "##s", "##ed", "##ing", "##er", "##ly", "##aff", "##able", "##izer", "##frame", "##ging", "##ding",
    "##ize", "##tion", "##al", "##ment",
]


def bert_vocab():
    vocab = list(BERT_SPECIAL)
    vocab += list(".,!?-'()")
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [str(i) for i in range(10)]
    vocab += [w for w in BERT_WORDS if w not in vocab]
    assert len(set(vocab)) == len(vocab)
    return vocab


def bert_tokenizer_json(vocab):
    ids = {t: i for i, t in enumerate(vocab)}
    added = [{"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in BERT_SPECIAL]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [ids["[CLS]"]], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [ids["[SEP]"]], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": ids},
    }


def _is_bert_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _is_bert_control(c):
    if c in "\t\n\r":
        return False
    return unicodedata.category(c).startswith("C")


def _is_chinese(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_bert_punct(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def bert_encode(text, vocab, max_length=None):
    ids = {t: i for i, t in enumerate(vocab)}
    # BertNormalizer: clean_text, handle_chinese_chars, strip_accents (follows lowercase), lowercase
    s = "".join(" " if _is_bert_whitespace(c) else c for c in text
                if not (ord(c) == 0 or ord(c) == 0xFFFD or _is_bert_control(c)))
    s = "".join(" " + c + " " if _is_chinese(ord(c)) else c for c in s)
    s = "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")
    s = s.lower()
    # BertPreTokenizer: split on whitespace, each punctuation character its own word
    words, cur = [], ""
    for c in s:
        if c.isspace():
            if cur:
                words.append(cur)
            cur = ""
        elif _is_bert_punct(c):
            if cur:
                words.append(cur)
            words.append(c)
            cur = ""
        else:
            cur += c
    if cur:
        words.append(cur)
    # WordPiece: greedy longest match first; a word with a piece not in the vocabulary is [UNK]
    out = []
    for word in words:
        if len(word) > 100:
            out.append(ids["[UNK]"])
            continue
        pieces, start, bad = [], 0, False
        while start < len(word):
            end, found = len(word), None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in ids:
                    found = ids[sub]
                    break
                end -= 1
            if found is None:
                bad = True
                break
            pieces.append(found)
            start = end
        out.extend([ids["[UNK]"]] if bad else pieces)
    if max_length is not None:
        out = out[: max(0, max_length - 2)]
    return [ids["[CLS]"]] + out + [ids["[SEP]"]]


BERT_TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Spark runs tensor-parallel inference on data frames.",
    "Café déjà vu: HUGGING face tokenizers",
    "unaffable xyzzy ζeta 中文",
    "",
    "  Embedding\twords\nand pieces (wordpiece)  ",
]


# ---------------------------------------------------------------------------------------------------
# Byte-level BPE tokenizer (GPT-2: pre-tokenization pattern, bytes_to_unicode, BPE merges)
# ---------------------------------------------------------------------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


def _cat(c):
    return unicodedata.category(c)


def gpt2_split(text):
    """GPT-2's pattern 's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+,
    matched by hand (Python's re has no \\p{L})."""
    def is_l(c):
        return _cat(c).startswith("L")

    def is_n(c):
        return _cat(c).startswith("N")

    def is_s(c):
        return c.isspace()

    def is_other(c):
        return not (is_s(c) or is_l(c) or is_n(c))

    out, i, n = [], 0, len(text)
    while i < n:
        matched = None
        for c in ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d"):
            if text.startswith(c, i):
                matched = len(c)
                break
        if matched is None:
            for cls in (is_l, is_n, is_other):
                j = i + 1 if text[i] == " " and i + 1 < n and cls(text[i + 1]) else i
                if j < n and cls(text[j]):
                    k = j
                    while k < n and cls(text[k]):
                        k += 1
                    matched = k - i
                    break
        if matched is None:  # whitespace
            k = i
            while k < n and is_s(text[k]):
                k += 1
            if k < n and k - i >= 2:
                matched = k - i - 1  # \s+(?!\S): leave the last space to prefix the next word
            else:
                matched = k - i
        out.append(text[i:i + matched])
        i += matched
    return out


GPT2_CORPUS = [
    "Hello world, hello Spark. The quick brown fox jumps over the lazy dog.",
    "Tensor parallel inference runs transformers on Spark data frames; it is the thing we want.",
    "Hugging Face checkpoints hold the weights, the tokenizer and the config of the model.",
    "the the the and and and in in on on it is it's that this then there",
]
GPT2_MERGES = 70


def gpt2_train(byte_enc):
    words = []
    for line in GPT2_CORPUS:
        for piece in gpt2_split(line):
            words.append([byte_enc[b] for b in piece.encode("utf-8")])
    merges = []
    for _ in range(GPT2_MERGES):
        counts = {}
        for wsym in words:
            for a, b in zip(wsym, wsym[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, ties by the symbols
        merges.append(best)
        new_words = []
        for wsym in words:
            out, i = [], 0
            while i < len(wsym):
                if i + 1 < len(wsym) and (wsym[i], wsym[i + 1]) == best:
                    out.append(wsym[i] + wsym[i + 1])
                    i += 2
                else:
                    out.append(wsym[i])
                    i += 1
            new_words.append(out)
        words = new_words
    return merges


def gpt2_vocab():
    bs, chars = bytes_to_unicode()
    byte_enc = dict(zip(bs, chars))
    vocab = list(chars)  # ids 0..255 in bytes_to_unicode order, as GPT-2's encoder.json
    merges = gpt2_train(byte_enc)
    for a, b in merges:
        if a + b not in vocab:
            vocab.append(a + b)
    vocab.append("<|endoftext|>")
    return vocab, merges, byte_enc


def gpt2_tokenizer_json(vocab, merges):
    ids = {t: i for i, t in enumerate(vocab)}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": ids["<|endoftext|>"], "content": "<|endoftext|>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": dict(byte_level),
        "decoder": dict(byte_level),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": ids, "merges": [a + " " + b for a, b in merges]},
    }


def gpt2_encode(text, vocab, merges, byte_enc, max_length=None):
    ids = {t: i for i, t in enumerate(vocab)}
    ranks = {m: r for r, m in enumerate(merges)}
    out = []
    segments = text.split("<|endoftext|>")
    for si, seg in enumerate(segments):
        if si > 0:
            out.append(ids["<|endoftext|>"])
        for piece in gpt2_split(seg):
            sym = [byte_enc[b] for b in piece.encode("utf-8")]
            while len(sym) > 1:
                pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(sym, sym[1:]))]
                r, i = min(pairs)
                if r == math.inf:
                    break
                sym = sym[:i] + [sym[i] + sym[i + 1]] + sym[i + 2:]
            out.extend(ids[s] for s in sym)
    if max_length is not None:
        out = out[:max_length]
    return out


GPT2_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Spark runs transformers on Hugging Face checkpoints.",
    "  leading spaces,\ttabs and\nnew lines  ",
    "It's 2026; don't panic!",
    "naïve café 東京 ✓",
    "a<|endoftext|>b",
]


# ---------------------------------------------------------------------------------------------------

def self_check():
    """The plain math above against torch's own implementations, on random float64 data."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 12, generator=g, dtype=torch.float64)
    w, b = torch.randn(12, generator=g, dtype=torch.float64), torch.randn(12, generator=g, dtype=torch.float64)
    F = torch.nn.functional
    assert torch.allclose(layer_norm(x, w, b, 1e-5), F.layer_norm(x, (12,), w, b, 1e-5), atol=1e-12)
    assert torch.allclose(gelu_erf(x), F.gelu(x), atol=1e-12)
    assert torch.allclose(gelu_tanh(x), F.gelu(x, approximate="tanh"), atol=1e-12)
    assert torch.allclose(silu(x), F.silu(x), atol=1e-12)
    # attention with 3 heads, no GQA, against torch.nn.MultiheadAttention's functional form
    q, k, v = (torch.randn(5, 12, generator=g, dtype=torch.float64) for _ in range(3))
    eye = torch.eye(12, dtype=torch.float64)
    for causal in (False, True):
        mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1) if causal else None
        ref, _ = F.multi_head_attention_forward(
            q[:, None], k[:, None], v[:, None], 12, 3, None, None, None, None, False, 0.0, eye, None,
            use_separate_proj_weight=True, q_proj_weight=eye, k_proj_weight=eye, v_proj_weight=eye,
            attn_mask=mask, need_weights=False)
        assert torch.allclose(attention(q, k, v, 3, 3, causal), ref[:, 0], atol=1e-12)
    # GQA: 4 query heads on 2 KV heads = MHA with each KV head repeated for its 2 query heads
    kv = torch.randn(5, 6, generator=g, dtype=torch.float64)
    rep = kv.view(5, 2, 3).repeat_interleave(2, dim=1).reshape(5, 12)
    assert torch.allclose(attention(q, kv, kv, 4, 2, True), attention(q, rep, rep, 4, 4, True), atol=1e-12)
    # rotary: rotating position t by angle t * f is a complex multiplication of (x_i, x_{i+d/2})
    inv = rope_inv_freq(4, 10000.0, None)
    y = apply_rope(x[:, :4], 1, inv)
    z = torch.complex(x[:, :2], x[:, 2:4]) * torch.exp(1j * torch.outer(torch.arange(5.0, dtype=torch.float64), inv))
    assert torch.allclose(y, torch.cat([z.real, z.imag], dim=-1), atol=1e-12)


def make_rope_reference():
    """Rotary embeddings alone: inv_freq and rotated vectors for default, linear and llama3 scaling (the
    last with Llama 3.1's values, so that its three frequency bands all occur)."""
    cases = [
        {"head_dim": 8, "rope_theta": 10000.0, "rope_scaling": None},
        {"head_dim": 16, "rope_theta": 1000000.0, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
        {"head_dim": 8, "rope_theta": 10000.0,
         "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 16}},
        {"head_dim": 64, "rope_theta": 500000.0,
         "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192}},
    ]
    positions = [0, 1, 2, 7, 47, 1000, 20000]
    g = torch.Generator().manual_seed(3001)
    for c in cases:
        inv = rope_inv_freq(c["head_dim"], c["rope_theta"], c["rope_scaling"])
        x = torch.randn(len(positions), c["head_dim"], generator=g, dtype=torch.float64)
        pos = torch.tensor(positions, dtype=torch.float64)
        freqs = torch.outer(pos, inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        x1, x2 = x[:, : c["head_dim"] // 2], x[:, c["head_dim"] // 2:]
        rotated = x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()
        c["inv_freq"] = inv.tolist()
        c["positions"] = positions
        c["x"] = x.tolist()
        c["rotated"] = rotated.tolist()
    return {"convention": "rotate_half: out = x * cos(p * f) + rotate_half(x) * sin(p * f), "
                          "rotate_half(x) = [-x[d/2:], x[:d/2]], f = inv_freq repeated twice",
            "cases": cases}


# ---------------------------------------------------------------------------------------------------
# SentencePiece-style BPE with byte fallback (the Llama-2 / Mistral tokenizer.json: normalizer
# Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, BPE with byte_fallback, TemplateProcessing "<s> $A")
# ---------------------------------------------------------------------------------------------------

SP_SPECIAL = ["<unk>", "<s>", "</s>"]
SP = "\u2581"
SP_CORPUS = GPT2_CORPUS + [
    "Mistral and Llama models read text as pieces; rare characters fall back to their bytes.",
]
SP_MERGES = 80
SP_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Spark runs transformers on Hugging Face checkpoints.",
    "  two  spaces",
    "naïve café 東京 ✓",
    "",
    "It's 2026!",
]


def sp_vocab():
    """Ids: the specials, the 256 byte tokens <0x00>..<0xFF>, the corpus's characters, then BPE merges
    trained on its words (each with its leading ▁; merges never cross a word start)."""
    words = []
    for line in SP_CORPUS:
        for piece in line.split(" "):
            words.append(list(SP + piece))
    chars = sorted({c for w in words for c in w})
    merges = []
    for _ in range(SP_MERGES):
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, ties by the symbols
        merges.append(best)
        new_words = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words.append(out)
        words = new_words
    vocab = list(SP_SPECIAL) + ["<0x%02X>" % b for b in range(256)] + chars
    for a, b in merges:
        if a + b not in vocab:
            vocab.append(a + b)
    return vocab, merges


def sp_tokenizer_json(vocab, merges):
    ids = {t: i for i, t in enumerate(vocab)}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t in SP_SPECIAL],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SP},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [ids["<s>"]], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SP}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": ids, "merges": [a + " " + b for a, b in merges]},
    }


def sp_encode(text, vocab, merges, max_length=None):
    ids = {t: i for i, t in enumerate(vocab)}
    ranks = {m: r for r, m in enumerate(merges)}
    norm = (SP + text if text else text).replace(" ", SP)  # Prepend applies to a non-empty text only
    sym = []
    for c in norm:
        if c in ids:
            sym.append(c)
        else:  # byte fallback: one <0xXX> token per UTF-8 byte
            sym.extend("<0x%02X>" % b for b in c.encode("utf-8"))
    while len(sym) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(sym, sym[1:]))]
        r, i = min(pairs)
        if r == math.inf:
            break
        sym = sym[:i] + [sym[i] + sym[i + 1]] + sym[i + 2:]
    out = [ids[t] for t in sym]
    if max_length is not None:
        out = out[: max(0, max_length - 1)]
    return [ids["<s>"]] + out


def write_tokenizer_side_files(out_dir, vocab, merges, config, special_map, special_tokens):
    """The other files a tokenizer's save_pretrained writes next to tokenizer.json: tokenizer_config.json,
    special_tokens_map.json, and the slow tokenizer's vocabulary (vocab.txt; or vocab.json + merges.txt)."""
    ids = {t: i for i, t in enumerate(vocab)}
    config = dict(config)
    config["added_tokens_decoder"] = {
        str(ids[t]): {"content": t, "lstrip": False, "normalized": merges is not None, "rstrip": False,
                      "single_word": False, "special": True} for t in special_tokens}
    write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    write_json(os.path.join(out_dir, "special_tokens_map.json"), special_map)
    if merges is None:
        with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in vocab))
    else:
        write_json(os.path.join(out_dir, "vocab.json"), ids, indent=None, sort_keys=False)
        with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(a + " " + b + "\n" for a, b in merges))


def write_generation_config(out_dir, bos, eos):
    """generation_config.json, as a causal LM's save_pretrained writes it."""
    write_json(os.path.join(out_dir, "generation_config.json"),
               {"_from_model_config": True, "bos_token_id": bos, "eos_token_id": eos,
                "transformers_version": TRANSFORMERS_VERSION})


def main(root):
    self_check()
    write_json(os.path.join(root, "rope_reference.json"), make_rope_reference(), indent=None, sort_keys=False)
    truncate = 8

    vocab = bert_vocab()
    ref = make_bert(os.path.join(root, "bert"), len(vocab))
    write_json(os.path.join(root, "bert", "tokenizer.json"), bert_tokenizer_json(vocab), sort_keys=False)
    write_tokenizer_side_files(os.path.join(root, "bert"), vocab, None, {
        "clean_up_tokenization_spaces": False, "cls_token": "[CLS]", "do_lower_case": True, "mask_token": "[MASK]",
        "model_max_length": 32, "pad_token": "[PAD]", "sep_token": "[SEP]", "strip_accents": None,
        "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]"},
        {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
         "unk_token": "[UNK]"}, BERT_SPECIAL)
    ref["texts"] = BERT_TEXTS
    ref["text_ids"] = [bert_encode(t, vocab) for t in BERT_TEXTS]
    ref["truncate_max_length"] = truncate
    ref["text_ids_truncated"] = [bert_encode(t, vocab, truncate) for t in BERT_TEXTS]
    write_json(os.path.join(root, "bert", "reference.json"), ref, indent=None, sort_keys=False)

    ref = make_roberta(os.path.join(root, "roberta"))
    write_json(os.path.join(root, "roberta", "reference.json"), ref, indent=None, sort_keys=False)

    vocab, merges = sp_vocab()
    ref = make_mistral(os.path.join(root, "mistral"), len(vocab))
    write_generation_config(os.path.join(root, "mistral"), 1, 2)
    write_json(os.path.join(root, "mistral", "tokenizer.json"), sp_tokenizer_json(vocab, merges), sort_keys=False)
    write_json(os.path.join(root, "mistral", "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "clean_up_tokenization_spaces": False,
        "eos_token": "</s>", "legacy": True, "model_max_length": 64, "pad_token": None,
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
        "use_default_system_prompt": False,
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for i, t in enumerate(SP_SPECIAL)}})
    write_json(os.path.join(root, "mistral", "special_tokens_map.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    ref["texts"] = SP_TEXTS
    ref["text_ids"] = [sp_encode(t, vocab, merges) for t in SP_TEXTS]
    ref["truncate_max_length"] = truncate
    ref["text_ids_truncated"] = [sp_encode(t, vocab, merges, truncate) for t in SP_TEXTS]
    write_json(os.path.join(root, "mistral", "reference.json"), ref, indent=None, sort_keys=False)

    ref = make_llama(os.path.join(root, "llama"))
    write_generation_config(os.path.join(root, "llama"), 1, 2)
    write_json(os.path.join(root, "llama", "reference.json"), ref, indent=None, sort_keys=False)

    ref = make_qwen2(os.path.join(root, "qwen2"))
    write_generation_config(os.path.join(root, "qwen2"), 78, 79)
    write_json(os.path.join(root, "qwen2", "reference.json"), ref, indent=None, sort_keys=False)

    ref = make_qwen3(os.path.join(root, "qwen3"))
    write_generation_config(os.path.join(root, "qwen3"), 86, 87)
    write_json(os.path.join(root, "qwen3", "reference.json"), ref, indent=None, sort_keys=False)

    vocab, merges, byte_enc = gpt2_vocab()
    ref = make_gpt2(os.path.join(root, "gpt2"), len(vocab), len(vocab) - 1)
    write_json(os.path.join(root, "gpt2", "tokenizer.json"), gpt2_tokenizer_json(vocab, merges), sort_keys=False)
    write_tokenizer_side_files(os.path.join(root, "gpt2"), vocab, merges, {
        "add_prefix_space": False, "bos_token": "<|endoftext|>", "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 32,
        "tokenizer_class": "GPT2Tokenizer", "unk_token": "<|endoftext|>"},
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
        ["<|endoftext|>"])
    write_generation_config(os.path.join(root, "gpt2"), len(vocab) - 1, len(vocab) - 1)
    ref["texts"] = GPT2_TEXTS
    ref["text_ids"] = [gpt2_encode(t, vocab, merges, byte_enc) for t in GPT2_TEXTS]
    ref["truncate_max_length"] = truncate
    ref["text_ids_truncated"] = [gpt2_encode(t, vocab, merges, byte_enc, truncate) for t in GPT2_TEXTS]
    write_json(os.path.join(root, "gpt2", "reference.json"), ref, indent=None, sort_keys=False)

    for name in ("bert", "roberta", "llama", "mistral", "qwen2", "qwen3", "gpt2"):
        d = os.path.join(root, name)
        sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
        print(name, sizes)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "spark-tp", "src", "test", "resources", "hf"))
