#!/usr/bin/env python3
"""Makes the PyTorch interop fixture of spark-tp's tests (run with Debian's python3-torch):

    /usr/bin/python3 tools/make_interop.py [spark-tp/src/test/resources/interop]

Writes, in the target folder:
  model/config.json          spark-tp's layer list, written by hand for this module
  model/model.safetensors    the module's state_dict, float32, in the safetensors format
  inputs.json                one JSON object per line: {"id": i, "features": [...]} (float32 values)
  expected.json              one JSON object per line: {"id": i, "prediction": [...]}: PyTorch's forward
                             pass of the same module in float64 (weights and inputs are the float32 values)

The safetensors file is written with the format's own rules (8-byte little-endian header length, JSON
header with dtype, shape and data_offsets, then the raw little-endian data), because Debian's PyTorch
ships without the safetensors package; the layout is exactly what safetensors.torch.save_file writes.
"""
import json
import os
import struct
import sys

import torch
from torch import nn


class Net(nn.Module):
    """fc1 -> gelu -> fc2 -> layer_norm -> x + down(silu(up(x))) -> head"""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(50, 203)
        self.fc2 = nn.Linear(203, 64)
        self.ln = nn.LayerNorm(64)
        self.up = nn.Linear(64, 96)
        self.down = nn.Linear(96, 64, bias=False)
        self.head = nn.Linear(64, 37)

    def forward(self, x):
        h = self.ln(self.fc2(nn.functional.gelu(self.fc1(x))))
        h = h + self.down(nn.functional.silu(self.up(h)))
        return self.head(h)


CONFIG = {
    "spark_tp": 1,
    "input_dim": 50,
    "layers": [
        {"type": "linear", "weight": "fc1.weight", "bias": "fc1.bias"},
        {"type": "gelu"},
        {"type": "linear", "weight": "fc2.weight", "bias": "fc2.bias"},
        {"type": "layer_norm", "weight": "ln.weight", "bias": "ln.bias", "eps": 1e-5},
        {"type": "residual", "layers": [
            {"type": "linear", "weight": "up.weight", "bias": "up.bias"},
            {"type": "silu"},
            {"type": "linear", "weight": "down.weight"},
        ]},
        {"type": "linear", "weight": "head.weight", "bias": "head.bias"},
    ],
}


def save_safetensors(tensors, path):
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().to(torch.float32)
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main(out):
    torch.manual_seed(20261129)
    net = Net()
    with torch.no_grad():
        # non-trivial layer-norm parameters (PyTorch initialises them to ones and zeros)
        net.ln.weight.uniform_(0.5, 1.5)
        net.ln.bias.uniform_(-0.5, 0.5)
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    save_safetensors(net.state_dict(), os.path.join(out, "model", "model.safetensors"))
    with open(os.path.join(out, "model", "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    x = (torch.rand(41, 50) * 4 - 2).to(torch.float32)
    with torch.no_grad():
        y = net.double()(x.double())
    with open(os.path.join(out, "inputs.json"), "w") as f:
        for i, row in enumerate(x.tolist()):
            f.write(json.dumps({"id": i, "features": [float(v) for v in row]}) + "\n")
    with open(os.path.join(out, "expected.json"), "w") as f:
        for i, row in enumerate(y.tolist()):
            f.write(json.dumps({"id": i, "prediction": row}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "spark-tp", "src", "test", "resources", "interop"))
