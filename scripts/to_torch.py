#!/usr/bin/env python3
"""An asymml checkpoint as a PyTorch state_dict.

    python3 scripts/to_torch.py CKPT.h5 OUT.pt  [--keys torchvision|pytorch-cifar|asymml] [--rename A=B ...] [--check]
    python3 scripts/to_torch.py CKPT.h5 OUT.npz [--format npz]

Writes the model of an asymml HDF5 checkpoint (docs/DESIGN.md §5) as a state_dict in the
model's order: OUT.pt with torch.save (an OrderedDict of tensors; needs PyTorch), or OUT.npz
(--format npz, the default for a .npz name) with np.savez, one array per state_dict key
(needs only numpy). The checkpoint's own config (its `config` attribute) gives the layers;
every tensor is checked against it (shape, type) and against its crc32 first, and is written
with the same bits.

For configs/resnet18-cifar.yaml the result loads with strict=True into torchvision's
resnet18(num_classes=10) with a 3x3 stride-1 conv1 and maxpool an identity; for
configs/vgg16-cifar.yaml into pytorch-cifar's VGG('VGG16'). --keys names the block shortcuts
(default torchvision: downsample.0/1); --rename A=B names config layer A (and its parts) B
(pytorch-cifar's ResNet18 calls fc `linear`: --keys pytorch-cifar --rename fc=linear).
--check also loads the state_dict, strict, into the config's model built in PyTorch
(asymml_torch.build_module).

PyTorch is never a dependency of asymml, its build or its tests: this script needs it for .pt
files only. Names and layout: scripts/asymml_torch.py. Every mistake ends with one
`to_torch.py: error: ...` line and exit status 1.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asymml_torch as core  # noqa: E402

PROG = "to_torch.py"


def run(argv):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Names, layout and assumptions: the header of scripts/asymml_torch.py.")
    ap.add_argument("checkpoint", help="the asymml checkpoint (.h5)")
    ap.add_argument("output", help="the state_dict file to write (.pt, or .npz)")
    ap.add_argument("--format", choices=core.STATE_FORMATS, help="pt (torch.save) or npz (np.savez); default: by OUT's name")
    ap.add_argument("--keys", choices=sorted(core.KEY_STYLES), default="torchvision", help="how block shortcuts are named (default torchvision)")
    ap.add_argument("--rename", action="append", metavar="A=B", help="name config layer A (and its parts) B (repeatable)")
    ap.add_argument("--check", action="store_true", help="also load the state_dict into the config's model in PyTorch (strict)")
    args = ap.parse_args(argv)
    renames = core.parse_renames(args.rename)
    config, _, stored = core.read_checkpoint(args.checkpoint)
    state = core.to_state_dict(config, stored, args.checkpoint, args.keys, renames)
    if args.check:
        torch, = core.need("torch")
        module = core.build_module(config["model"], args.keys, renames)
        try:
            module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        except RuntimeError as e:
            raise core.Failure(f"the state_dict does not load into the config's model: {' '.join(str(e).split())}")
    fmt = core.state_format(args.output, args.format)
    core.save_state(state, args.output, fmt)
    count = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    print(f"{args.output}: {len(state)} tensors ({count} parameters and statistics), {fmt}, keys {args.keys}"
          + (", loads into the config's model" if args.check else ""))


if __name__ == "__main__":
    sys.exit(core.main(PROG, run))
