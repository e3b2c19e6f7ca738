#!/usr/bin/env python3
"""Writes tests/fixtures/torch_model.safetensors with PyTorch's safetensors library.

tests/test_data_io.c reads the file and checks every value below exactly, so ag is known
to read what PyTorch writes: F32, F64 and I64 tensors, 0-dim and empty ones, and
__metadata__. Run from the repository root:

    /usr/bin/python3 tests/reference/safetensors_fixture.py

Needs torch and safetensors (pip install safetensors). Written with torch 1.13.1 and
safetensors 0.8.0.
"""
import pathlib

import torch
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "torch_model.safetensors"

TENSORS = {
    # A linear layer's state dict, as load_state_dict names it.
    "0.weight": torch.tensor([[1.5, -2.25, 3.0], [0.1, 1e-30, -0.0]], dtype=torch.float32),
    "0.bias": torch.tensor([0.5, -1.0, 2.0**-20], dtype=torch.float32),
    "scale": torch.tensor(3.141592653589793, dtype=torch.float64),  # 0-dim
    "moments": torch.tensor([1 / 3, -1e300, 5e-324, 2.5], dtype=torch.float64),
    "counts": torch.tensor([[0, -1], [2**62, -(2**53) - 1]], dtype=torch.int64),
    "step": torch.tensor(7, dtype=torch.int64),  # 0-dim
    "empty": torch.zeros(0, 4, dtype=torch.float32),
}


def main():
    save_file(TENSORS, str(OUT), metadata={"format": "pt", "writer": "safetensors_fixture.py"})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
