#!/usr/bin/env python3
"""A PyTorch state_dict as an asymml checkpoint, to fine-tune or evaluate.

    python3 scripts/from_torch.py STATE.pt  OUT.h5 --config CONFIG.yaml|CKPT.h5 [--rename A=B ...]
    python3 scripts/from_torch.py STATE.npz OUT.h5 --config CONFIG.yaml|CKPT.h5

Reads a state_dict (STATE.pt: torch.save of a dict of tensors, or of a dict holding one under
`state_dict`, `net` or `model`, as pytorch-cifar saves them; needs PyTorch. STATE.npz, or
--format npz: np.savez of one array per key, as `to_torch.py --format npz` writes it; needs
only numpy) and writes the config's model as an asymml checkpoint at step 0 (the config is
stored in it), which

    asymml train --config CONFIG.yaml --init OUT.h5     starts a new run from (fine-tuning),
    asymml evaluate --checkpoint OUT.h5                 evaluates (--set data.path=... for the data),
    asymml inspect OUT.h5                               verifies.

Every tensor the model needs must be there with its exact shape, and a key that the model does
not have is an error too; num_batches_tracked may be missing (0). Keys may use torchvision's
or pytorch-cifar's shortcut names and DataParallel's `module.` prefix; --rename A=B reads the
state_dict's layer A as the config's B (--rename linear=fc for pytorch-cifar's ResNet18).
float32 tensors are written with the same bits; other floating types are converted to float32.

PyTorch is never a dependency of asymml, its build or its tests: this script needs it for .pt
files only. Names and layout: scripts/asymml_torch.py. Every mistake ends with one
`from_torch.py: error: ...` line and exit status 1.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asymml_torch as core  # noqa: E402

PROG = "from_torch.py"


def run(argv):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Names, layout and assumptions: the header of scripts/asymml_torch.py.")
    ap.add_argument("state", help="the state_dict file (.pt, or .npz)")
    ap.add_argument("output", help="the checkpoint to write (.h5)")
    ap.add_argument("--config", required=True, help="the YAML config of the model, or a checkpoint whose config to use; stored in the new checkpoint")
    ap.add_argument("--format", choices=core.STATE_FORMATS, help="pt (torch.load) or npz (np.load); default: by STATE's name")
    ap.add_argument("--rename", action="append", metavar="A=B", help="the state_dict's layer A is the config's B (repeatable)")
    args = ap.parse_args(argv)
    renames = core.parse_renames(args.rename)
    config, text = core.read_config(args.config)
    state = core.load_state(args.state, core.state_format(args.state, args.format))
    values = core.from_state_dict(config, state, args.state, renames)
    core.write_checkpoint(args.output, config, text, values)
    count = sum(v.size for t, v in values.items() if t.dtype == "float32")
    print(f"{args.output}: {len(values)} tensors ({count} values) of {config.get('name', 'the config')}'s model, step 0")


if __name__ == "__main__":
    sys.exit(core.main(PROG, run))
