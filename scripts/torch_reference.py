#!/usr/bin/env python3
"""asymml against PyTorch, side by side on this machine (design §10; `make bench` runs it).

Builds each config's model in PyTorch from the same YAML layer list, and times, with the same
batch and threads, one SGD training step (forward, loss, backward, update: the config's lr,
momentum and weight decay) and one inference batch, on random data. `asymml bench
--plain-only --json` times the same in plain mode. The two alternate, round after round, so
that both see the same load on a shared machine; the medians over rounds give the ratios.
Not part of `make test`.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# asymml runs oneDNN's OpenMP threads with OMP_WAIT_POLICY=passive (Sources/asymml/main.swift:
# spinning idle workers starve the other threads on a shared machine); PyTorch gets the same
# policy unless the caller set one. libgomp reads it once, as torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("torch_reference.py: PyTorch is not installed; "
             "pip install torch --index-url https://download.pytorch.org/whl/cpu")
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The config's model as a torch module: the same builder the checkpoint scripts use.
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from asymml_torch import build_module  # noqa: E402


def time_torch(config, steps):
    """Median seconds of a training step and of an inference batch."""
    model = build_module(config["model"])
    classes = next(spec["out"] for spec in reversed(config["model"]["layers"]) if spec.get("type") == "linear")
    batch = config["data"]["batch_size"]
    opt = config.get("optimizer", {})
    sgd = torch.optim.SGD(model.parameters(), lr=opt.get("lr", 0.01), momentum=opt.get("momentum", 0),
                          weight_decay=opt.get("weight_decay", 0))
    x = torch.randn([batch] + config["model"]["input"])
    labels = torch.randint(0, classes, (batch,))
    model.train()
    train = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        sgd.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), labels).backward()
        sgd.step()
        if i >= 2:
            train.append(time.perf_counter() - t0)
    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(steps + 2):
            t0 = time.perf_counter()
            model(x)
            if i >= 2:
                infer.append(time.perf_counter() - t0)
    return statistics.median(train), statistics.median(infer)


def run_asymml(binary, path, threads, steps, batch):
    out = subprocess.run([binary, "bench", "--config", path, "--plain-only", "--json", "--steps", str(steps),
                          "--set", f"train.threads={threads}", "--set", f"data.batch_size={batch}"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def vector_unit():
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l for l in f if l.startswith("flags")), "")
    except OSError:
        pass
    return "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["configs/fmnist-cnn.yaml", "configs/vgg-cifar.yaml",
                                                    "configs/resnet18-cifar.yaml", "configs/vgg16-cifar.yaml"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round (after two warm-up steps)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of PyTorch and asymml")
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build/release/asymml"))
    ap.add_argument("--batch", type=int, help="batch size for both (default: each config's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"PyTorch {torch.__version__} (oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}) against "
          f"asymml, {vector_unit()} CPU, {args.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"medians of {args.rounds} alternating rounds of {args.steps} steps")
    print(f"{'model':<12} {'':<10} {'asymml':>10} {'PyTorch':>10} {'ratio':>7}   asymml GFLOP/s (of sgemm peak)")
    for path in args.configs:
        with open(os.path.join(ROOT, path)) as f:
            config = yaml.safe_load(f)
        if args.batch:
            config["data"]["batch_size"] = args.batch
        batch = config["data"]["batch_size"]
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(time_torch(config, args.steps))
            ours.append(run_asymml(args.binary, os.path.join(ROOT, path), args.threads, args.steps, batch))
        for what, key, index in [("training", "train", 0), ("inference", "infer", 1)]:
            mine = statistics.median(r[f"{key}_samples_per_s"] for r in ours)
            torch_rate = batch / statistics.median(t[index] for t in theirs)
            gflops = statistics.median(r[f"{key}_gflops"] for r in ours)
            peak = statistics.median(max(r["sgemm_gflops"].values()) for r in ours)
            print(f"{config['name']:<12} {what:<10} {mine:10.1f} {torch_rate:10.1f} {mine / torch_rate:6.2f}x   "
                  f"{gflops:.1f} ({100 * gflops / peak:.0f}% of {peak:.1f})")
        print(f"{'':<12} samples/s; conv on {ours[0]['conv_kernels']} (oneDNN isa {ours[0]['dnnl_isa']}), batch {batch}")


if __name__ == "__main__":
    main()
