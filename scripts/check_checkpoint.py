#!/usr/bin/env python3
"""Checks that a checkpoint written by ag loads in PyTorch and works there.

    scripts/check_checkpoint.py m.safetensors [--data DIR] [--expect-accuracy 0.8812]

1. Loads the file with safetensors.torch.load_file (PyTorch's own reader).
2. Checks names, dtypes and shapes: the model entries must be the seed's section P
   network as ag's Sequential names it, Linear(784, 512), GELU, Linear(512, 512), GELU,
   LayerNorm(512), Linear(512, 10) ("0.weight", "0.bias", "2.weight", ... float32), and
   every "optimizer.<name>" entry must be a float tensor.
3. Builds section P's torch module (fc1, fc2, norm, fc3) from those tensors with a strict
   load_state_dict.
4. With --data (a directory of MNIST-named IDX files, gzip or plain), runs it on the test
   split and prints the accuracy; --expect-accuracy compares with what ag printed.

Exits 0 with a notice when torch or safetensors cannot be imported (pip install
safetensors), 1 when a check fails.
"""
import argparse
import gzip
import pathlib
import re
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
    from safetensors.torch import load_file
except ImportError as e:  # the check needs PyTorch; without it there is nothing to check
    print(f"check_checkpoint: skipped, cannot import {e.name} (pip install torch safetensors)")
    sys.exit(0)


class Net(nn.Module):
    """The network of the seed's section P."""

    def __init__(self, d_in=784, d_h=512, d_out=10, gelu="none"):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_h)
        self.fc2 = nn.Linear(d_h, d_h)
        self.fc3 = nn.Linear(d_h, d_out)
        self.act = nn.GELU(approximate=gelu)
        self.norm = nn.LayerNorm(d_h)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = self.act(self.fc1(x))
        x = self.norm(self.act(self.fc2(x)))
        return self.fc3(x)


def fail(msg):
    print(f"check_checkpoint: FAILED: {msg}")
    sys.exit(1)


def model_layers(tensors):
    """The parameterised layers of ag's Sequential, in order: (index, weight, bias)."""
    layers = {}
    for name, t in tensors.items():
        if name.startswith("optimizer."):
            continue
        m = re.fullmatch(r"(\d+)\.(weight|bias)", name)
        if not m:
            fail(f"unexpected entry {name!r} (model entries are <index>.weight/.bias)")
        if t.dtype != torch.float32:
            fail(f"{name} is {t.dtype}, expected torch.float32")
        layers.setdefault(int(m.group(1)), {})[m.group(2)] = t
    out = []
    for index in sorted(layers):
        parts = layers[index]
        if set(parts) != {"weight", "bias"}:
            fail(f"layer {index} has {sorted(parts)}, expected weight and bias")
        out.append((index, parts["weight"], parts["bias"]))
    return out


def check_structure(tensors):
    """Checks the section P layout and returns the state dict of Net and its sizes."""
    layers = model_layers(tensors)
    kinds = ["Linear" if w.dim() == 2 else "LayerNorm" for _, w, _ in layers]
    if kinds != ["Linear", "Linear", "LayerNorm", "Linear"]:
        fail(f"layers {kinds}, expected Linear, Linear, LayerNorm, Linear (section P)")
    (_, w1, b1), (_, w2, b2), (_, g, beta), (_, w3, b3) = layers
    d_h, d_in = w1.shape
    d_out = w3.shape[0]
    expected = {
        "fc1.weight": (w1, (d_h, d_in)), "fc1.bias": (b1, (d_h,)),
        "fc2.weight": (w2, (d_h, d_h)), "fc2.bias": (b2, (d_h,)),
        "norm.weight": (g, (d_h,)), "norm.bias": (beta, (d_h,)),
        "fc3.weight": (w3, (d_out, d_h)), "fc3.bias": (b3, (d_out,)),
    }
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            fail(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    if (d_in, d_h, d_out) != (784, 512, 10):
        print(f"check_checkpoint: note: sizes {d_in}-{d_h}-{d_out}, section P has 784-512-10")
    for name, t in tensors.items():
        if name.startswith("optimizer.") and not t.is_floating_point():
            fail(f"{name} is {t.dtype}, optimizer state is float")
    names = [i for i, _, _ in layers]
    print(f"check_checkpoint: model layers at indices {names}: "
          f"Linear({d_in}, {d_h}), Linear({d_h}, {d_h}), LayerNorm({d_h}), Linear({d_h}, {d_out}); "
          f"{sum(n.startswith('optimizer.') for n in tensors)} optimizer entries")
    return {k: t for k, (t, _) in expected.items()}, (d_in, d_h, d_out)


def read_idx(path):
    """An IDX file (gzip or plain, told by content) as a numpy array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:2] != b"\0\0":
        fail(f"{path}: not an IDX file")
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(np.int64)
    return np.frombuffer(raw, dtype, int(np.prod(dims)), 4 + 4 * ndim).reshape(dims)


def find_idx(data_dir, base):
    for name in (base + ".gz", base):
        if (data_dir / name).exists():
            return data_dir / name
    fail(f"{base}[.gz] not found in {data_dir}")


def evaluate(model, data_dir):
    """Test-split accuracy of model, images scaled by 1/255 as ag does."""
    images = read_idx(find_idx(data_dir, "t10k-images-idx3-ubyte"))
    labels = read_idx(find_idx(data_dir, "t10k-labels-idx1-ubyte"))
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32)) / 255
    y = torch.from_numpy(labels.astype(np.int64))
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), 1000):
            pred = model(x[start:start + 1000]).argmax(1)
            correct += int((pred == y[start:start + 1000]).sum())
    return correct, len(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=pathlib.Path)
    parser.add_argument("--data", type=pathlib.Path, help="directory of MNIST-named IDX files")
    parser.add_argument("--expect-accuracy", type=float, help="accuracy ag printed")
    parser.add_argument("--tolerance", type=float, default=0.002,
                        help="allowed difference from --expect-accuracy (float rounding)")
    parser.add_argument("--gelu", choices=["none", "tanh"], default="none",
                        help="GELU approximation the model was trained with")
    args = parser.parse_args()

    tensors = load_file(str(args.checkpoint))
    print(f"check_checkpoint: {args.checkpoint}: {len(tensors)} tensors loaded by safetensors")
    state, sizes = check_structure(tensors)
    model = Net(*sizes, gelu=args.gelu)
    model.load_state_dict(state, strict=True)
    if args.data is None:
        print("check_checkpoint: OK (no --data: accuracy not measured)")
        return
    correct, total = evaluate(model, args.data)
    accuracy = correct / total
    print(f"check_checkpoint: test accuracy in PyTorch {accuracy:.4f} ({correct}/{total})")
    if args.expect_accuracy is not None and abs(accuracy - args.expect_accuracy) > args.tolerance:
        fail(f"accuracy {accuracy:.4f}, ag printed {args.expect_accuracy:.4f}")
    print("check_checkpoint: OK")


if __name__ == "__main__":
    main()
