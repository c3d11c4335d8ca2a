#!/usr/bin/env python3
"""Evaluates an fmnist-cnn checkpoint with NumPy alone: an independent check that the
HDF5 layouts are PyTorch's (conv weight (out, in, kh, kw), linear (out, in)) and that the
names map to state_dict keys.

    python3 scripts/numpy_eval.py runs/fmnist-cnn/checkpoints/step-00001874.h5 [N]
"""
import gzip
import sys

import h5py
import numpy as np

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000

# The README's snippet: /model/<layer>/<param> becomes the state_dict key <layer>.<param>.
state = {}
with h5py.File(path, "r") as f:
    f["model"].visititems(lambda k, d: state.__setitem__(k.replace("/", "."), np.array(d))
                          if isinstance(d, h5py.Dataset) else None)
print("keys:", sorted(state))

root = "/usr/share/datasets/fashion-mnist/"
with gzip.open(root + "t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
with gzip.open(root + "t10k-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
x = (images.astype(np.float32) / 255 - 0.2860) / 0.3530


def conv(x, w, b):  # cross-correlation, stride 1, padding 1, as torch.nn.Conv2d
    o, c, k, _ = w.shape
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2], x.shape[3]
    cols = np.stack([p[:, :, i:i + h, j:j + wd] for i in range(k) for j in range(k)], axis=2)  # N,C,k*k,H,W
    return np.einsum("nctyx,oct->noyx", cols, w.reshape(o, c, k * k)) + b[None, :, None, None]


def relu(x):
    return np.maximum(x, 0)


def pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


h = relu(conv(x, state["conv1.weight"], state["conv1.bias"]))
h = pool(relu(conv(h, state["conv2.weight"], state["conv2.bias"])))
h = relu(conv(h, state["conv3.weight"], state["conv3.bias"]))
h = pool(relu(conv(h, state["conv4.weight"], state["conv4.bias"])))
h = relu(h.reshape(len(h), -1) @ state["fc1.weight"].T + state["fc1.bias"])
logits = h @ state["fc2.weight"].T + state["fc2.bias"]
print(f"numpy accuracy on the first {n} test images: {100 * np.mean(logits.argmax(1) == labels):.2f}%")
