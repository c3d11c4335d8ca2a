#!/usr/bin/env python3
"""Reference numbers for Tests/AsymModelTests/AdamWTorchReferenceTests.swift: what
torch.optim.AdamW computes, in float32, on a few small tensors.

    python3 scripts/adamw_reference.py > /tmp/reference.swift

The test has no PyTorch: it holds this script's output (the `torchAdamW` table) and runs the
same steps through asymml's Optimizer. Rerun this script only when the setup below changes,
and paste its output over the table.

Setup (the test builds the same from the same formulas):
* four parameter tensors, the smoke config's layers flatten -> linear a (2 of 6) -> linear b
  (5 of 2): a.weight (2, 6), a.bias (2), b.weight (5, 2), b.bias (5); tensor k, element i
  (flat, row-major) starts at ((37 i + 11 k) mod 17 - 8) / 10;
* gradients at step t (1-based): ((13 i + 7 t + 5 k) mod 23 - 11) / 16 * 8^(k mod 3 - 1),
  each rounded to float32 (scales 1/8, 1, 8 as real layers' gradients differ);
* torch.optim.AdamW(betas=(0.9, 0.999), eps=1e-8, weight_decay=WD, foreach=False) for WD in
  0.01 and 0, lr 1e-3 for steps 1-5, then 3e-4 for steps 6-10 (a schedule step mid-way,
  set in param_groups as a scheduler does);
* after step 10: every parameter and its exp_avg and exp_avg_sq, printed as float32 bit
  patterns (hex), so the table holds torch's values exactly.
"""
import numpy as np
import torch

SHAPES = [(2, 6), (2,), (5, 2), (5,)]
STEPS = 10


def lr_at(step):
    return 1e-3 if step <= 5 else 3e-4


def start(k, shape):
    n = int(np.prod(shape))
    return torch.tensor([((37 * i + 11 * k) % 17 - 8) / 10 for i in range(n)], dtype=torch.float32).reshape(shape)


def gradient(k, shape, t):
    n = int(np.prod(shape))
    scale = 8.0 ** (k % 3 - 1)
    return torch.tensor([((13 * i + 7 * t + 5 * k) % 23 - 11) / 16 * scale for i in range(n)], dtype=torch.float32).reshape(shape)


def run(weight_decay):
    params = [torch.nn.Parameter(start(k, s)) for k, s in enumerate(SHAPES)]
    opt = torch.optim.AdamW(params, lr=lr_at(1), betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay, foreach=False)
    for t in range(1, STEPS + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(t)
        for k, (p, s) in enumerate(zip(params, SHAPES)):
            p.grad = gradient(k, s, t)
        opt.step()
    return [(p.detach().reshape(-1), opt.state[p]["exp_avg"].reshape(-1), opt.state[p]["exp_avg_sq"].reshape(-1)) for p in params]


def hex_list(t):
    return "[" + ", ".join(f"0x{int(b):08x}" for b in t.numpy().view(np.uint32)) + "]"


print(f"    // scripts/adamw_reference.py, torch {torch.__version__}: [weight decay: [tensor: (param, exp_avg, exp_avg_sq)]]")
print("    static let torchAdamW: [Double: [(param: [UInt32], expAvg: [UInt32], expAvgSq: [UInt32])]] = [")
for wd in (0.01, 0.0):
    print(f"        {wd}: [")
    for p, m, v in run(wd):
        print(f"            ({hex_list(p)},\n             {hex_list(m)},\n             {hex_list(v)}),")
    print("        ],")
print("    ]")
