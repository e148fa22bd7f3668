#!/usr/bin/env python3
"""ONNX models for the ONNX Runtime peer of spark-tp's benchmarks (bench module, PeerBench and TransformerBench).

    /usr/bin/python3 tools/export_onnx_peers.py --model mlp --d 4096 --ffn 16384 --out DIR
    /usr/bin/python3 tools/export_onnx_peers.py --model bert [--layers 12 --hidden 768 --heads 12 --ffn 3072
        --vocab 30522 --seq 128] --out DIR

Writes DIR/<name>_f32.onnx and DIR/<name>_int8.onnx (name: mlp_<d>_<ffn> or bert_<layers>_<hidden>) and prints
one JSON line {"f32": path, "int8": path, "linears": n}.

- f32: `torch.onnx.export` (opset 14) of the PyTorch model: the Megatron MLP `gelu(x W1^T + b1) W2^T + b2`
  (nn.Linear, erf GELU; input `x [rows, d]`, rows dynamic), or the BERT-base-shaped encoder of
  tools/peer_transformer.py (eager, HF BertModel math; input `ids [batch, seq]` int64, batch dynamic); random
  weights as those peers draw them (uniform +-1/sqrt(in) for the MLP, N(0, 0.02) for BERT).
- int8: ONNX Runtime's dynamic quantization written out with python3-onnx, as `quantize_dynamic` would: every
  MatMul/Gemm whose weight is a constant 2-D initializer becomes
  `DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q, x_zero_point, 0) -> Cast(float) -> Mul(x_scale * w_scale)
  (-> Add(bias) for a Gemm)`: activations u8 with one scale and zero point per call (the whole tensor), weights
  s8 symmetric with one scale per output column. ONNX Runtime fuses the chain into its MatMulIntegerToFloat /
  DynamicQuantizeMatMul kernels (MLAS, VNNI where the CPU has it).

Needs Debian's python3-torch and python3-onnx (no onnxruntime Python package: the bench runs ONNX Runtime from
Java, com.microsoft.onnxruntime:onnxruntime from Maven Central).
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def mlp(d, ffn, seed):
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d)).eval()
    with torch.no_grad():
        for lin, fan_in in ((m[0], d), (m[2], ffn)):
            lin.weight.copy_((torch.rand(lin.weight.shape, generator=g) * 2 - 1) / fan_in ** 0.5)
            lin.bias.copy_((torch.rand(lin.bias.shape, generator=g) * 2 - 1) / fan_in ** 0.5)
    return m, torch.randn(8, d, generator=g), ["x"], {"x": {0: "rows"}, "y": {0: "rows"}}


def bert(a, seed):
    import peer_transformer as pt  # tools/peer_transformer.py: the same encoder the PyTorch peer runs

    g = torch.Generator().manual_seed(seed)
    m = pt.Encoder(a, fastpath=False).eval()
    pt.init_weights(m, g)
    ids = torch.randint(0, a.vocab, (2, a.seq), generator=g)
    return m, ids, ["ids"], {"ids": {0: "batch"}, "y": {0: "batch"}}


def quantize_dynamic(model):
    """Rewrites every MatMul/Gemm with a constant 2-D weight into DynamicQuantizeLinear + MatMulInteger."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    out_nodes = []
    count = 0
    drop = set()
    for node in g.node:
        w_name = node.input[1] if len(node.input) > 1 else None
        if node.op_type not in ("MatMul", "Gemm") or w_name not in inits or len(inits[w_name].dims) != 2:
            out_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                                       or attrs.get("beta", 1.0) != 1.0):
            out_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        if node.op_type == "Gemm" and attrs.get("transB", 0):
            w = w.T  # [K, N]
        scale = np.abs(w).max(axis=0) / 127.0
        scale[scale == 0] = 1.0
        wq = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        p = f"{node.name or 'linear'}_{count}"
        g.initializer.extend([numpy_helper.from_array(wq, p + "_Wq"),
                              numpy_helper.from_array(scale.astype(np.float32), p + "_Wscale"),
                              numpy_helper.from_array(np.array(0, dtype=np.int8), p + "_Wzp")])
        drop.add(w_name)
        x = node.input[0]
        out_nodes += [
            helper.make_node("DynamicQuantizeLinear", [x], [p + "_xq", p + "_xs", p + "_xzp"], name=p + "_dql"),
            helper.make_node("MatMulInteger", [p + "_xq", p + "_Wq", p + "_xzp", p + "_Wzp"], [p + "_acc"],
                             name=p + "_mmi"),
            helper.make_node("Cast", [p + "_acc"], [p + "_accf"], to=TensorProto.FLOAT, name=p + "_cast"),
            helper.make_node("Mul", [p + "_xs", p + "_Wscale"], [p + "_scale"], name=p + "_scale_mul"),
        ]
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            out_nodes += [helper.make_node("Mul", [p + "_accf", p + "_scale"], [p + "_y"], name=p + "_deq"),
                          helper.make_node("Add", [p + "_y", node.input[2]], [node.output[0]], name=p + "_bias")]
        else:
            out_nodes.append(helper.make_node("Mul", [p + "_accf", p + "_scale"], [node.output[0]], name=p + "_deq"))
        count += 1
    still = {i for n in out_nodes for i in n.input}
    keep = [t for t in g.initializer if t.name not in drop or t.name in still]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(out_nodes)
    return model, count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["mlp", "bert"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=16384)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--bert-ffn", type=int, default=3072)
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.model == "mlp":
        name = f"mlp_{a.d}_{a.ffn}"
        model, example, inputs, axes = mlp(a.d, a.ffn, a.seed)
    else:
        name = f"bert_{a.layers}_{a.hidden}"
        a.ffn = a.bert_ffn
        model, example, inputs, axes = bert(a, a.seed)
    f32 = os.path.join(a.out, name + "_f32.onnx")
    int8 = os.path.join(a.out, name + "_int8.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (example,), f32, input_names=inputs, output_names=["y"], dynamic_axes=axes,
                          opset_version=14, do_constant_folding=True)
    q, n = quantize_dynamic(onnx.load(f32))
    onnx.checker.check_model(q)
    onnx.save(q, int8)
    print(json.dumps({"f32": f32, "int8": int8, "linears": n, "model": a.model}))


if __name__ == "__main__":
    main()
