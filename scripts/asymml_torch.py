"""The shared core of scripts/to_torch.py and scripts/from_torch.py: asymml checkpoints
(docs/DESIGN.md §5) to and from PyTorch state_dicts.

The conversion works on plain dicts of NumPy arrays (`to_state_dict`, `from_state_dict`), so
it runs without PyTorch: a state_dict can also be stored as a .npz file (np.savez, one array
per state_dict key), which is what the Swift tests use. torch is imported only to read or write
a .pt file (`save_state`, `load_state`) and in `build_module`; numpy, h5py and yaml are needed
always.

Names. A checkpoint holds /model/<layer>/<param>, where <layer> is the config's layer name
and, inside a basic_block `b`, `b.conv1`, `b.bn1`, `b.conv2`, `b.bn2`, `b.shortcut.conv`,
`b.shortcut.bn`; BN's gamma and beta are `weight` and `bias`, its statistics `running_mean`,
`running_var` and `num_batches_tracked`. The state_dict key is `<layer>.<param>`, except for
the block shortcuts, which a key style names:

    torchvision     b.shortcut.conv -> b.downsample.0, b.shortcut.bn -> b.downsample.1 (default)
    pytorch-cifar   b.shortcut.conv -> b.shortcut.0,   b.shortcut.bn -> b.shortcut.1
    asymml          unchanged

configs/resnet18-cifar.yaml names its layers conv1, bn1, layer1.0 ... layer4.1, fc, so its
state_dict loads into torchvision's resnet18(num_classes=10) with conv1 a 3x3 stride-1
convolution without bias and maxpool an identity; configs/vgg16-cifar.yaml names them
features.N and classifier, as pytorch-cifar's VGG('VGG16') does. A rename A=B renames a layer
(and its parts). Reading a state_dict accepts all three shortcut namings and a `module.`
prefix (DataParallel).

What `write_checkpoint` assumes of the format (Sources/AsymTrain/Checkpoint.swift, version
1): root attributes format, format_version, step, epoch, samples_seen (int64 scalars),
config, world, software_version (variable-length UTF-8 strings); float32 datasets,
contiguous, and int64 scalars for num_batches_tracked and /state/*, each with an int64
`crc32` attribute, zlib's crc32 of its little-endian bytes; zero momentum buffers under
/optimizer/<layer>/<param> with /state/momentum_initialized 0; /state/step, samples_seen,
data_epoch and data_cursor 0, /state/seed the config's seed; no /state/warm_basis; world
{"trusted": 1, "untrusted": 0 (1 in asym mode), "mode": the config's}, as a one-process run
writes it. Objects are written in the HDF5 1.8 file format, which the HDF5 1.10 library that
asymml links reads.
"""
import collections
import json
import os
import sys
import zlib

FORMAT = "asymml-checkpoint"
FORMAT_VERSION = 1
SOFTWARE = "asymml-swift 0.1.0 (scripts/from_torch.py)"
KEY_STYLES = {
    "torchvision": {".shortcut.conv": ".downsample.0", ".shortcut.bn": ".downsample.1"},
    "pytorch-cifar": {".shortcut.conv": ".shortcut.0", ".shortcut.bn": ".shortcut.1"},
    "asymml": {},
}
STATE_FORMATS = ("pt", "npz")


class Failure(Exception):
    """A mistake that ends the script with one error line."""


def need(*modules):
    """Imports the modules a command needs, or fails with one line that says how to get them."""
    hints = {"torch": "pip install torch --index-url https://download.pytorch.org/whl/cpu (or use --format npz)",
             "h5py": "pip install h5py", "numpy": "pip install numpy", "yaml": "pip install pyyaml"}
    loaded = []
    for name in modules:
        try:
            loaded.append(__import__(name))
        except ImportError as e:
            raise Failure(f"the Python module '{name}' is missing ({e}); install it: {hints.get(name, 'pip install ' + name)}")
    return loaded


def main(prog, run, argv=None):
    """Runs `run(argv)` and turns every mistake into one `PROG: error: ...` line and status 1."""
    try:
        run(argv)
    except Failure as f:
        print(f"{prog}: error: {f}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError) as f:  # a config this script cannot read
        print(f"{prog}: error: the config's model cannot be read ({type(f).__name__}: {f})", file=sys.stderr)
        return 1
    return 0


def state_format(path, given):
    """The state_dict file format: `given`, else by the file name (.npz, anything else .pt)."""
    return given or ("npz" if path.endswith(".npz") else "pt")


# MARK: - The config's model: every tensor, with its shape

Tensor = collections.namedtuple("Tensor", "layer param shape dtype")  # dtype: "float32" or "int64"


def model_tensors(model):
    """The checkpoint tensors of a config's `model` section, in model order (Checkpoint.write):
    per layer with state (blocks expanded), its parameters, then its buffers."""
    try:
        shape = [int(v) for v in model["input"]]
        layers = model["layers"]
    except (KeyError, TypeError, ValueError):
        raise Failure("the config's model has no input [C, H, W] or no layers")
    if len(shape) != 3:
        raise Failure(f"model.input: expected [C, H, W], got {shape}")
    out = []

    def conv(name, o, c, k, bias):
        out.append(Tensor(name, "weight", (o, c, k, k), "float32"))
        if bias:
            out.append(Tensor(name, "bias", (o,), "float32"))

    def bn(name, c):
        out.extend(Tensor(name, p, (c,), "float32") for p in ("weight", "bias", "running_mean", "running_var"))
        out.append(Tensor(name, "num_batches_tracked", (), "int64"))

    for i, spec in enumerate(layers):
        kind = spec.get("type")
        name = str(spec.get("name", f"{kind}{i}"))
        c = shape[0]
        if kind == "conv":
            o, k, s, p = spec["out"], spec.get("kernel", 3), spec.get("stride", 1), spec.get("padding", 0)
            conv(name, o, c, k, spec.get("bias", True))
            shape = [o, (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
        elif kind == "batchnorm":
            bn(name, c)
        elif kind == "basic_block":
            o, s = spec["out"], spec.get("stride", 1)
            conv(f"{name}.conv1", o, c, 3, False)
            bn(f"{name}.bn1", o)
            conv(f"{name}.conv2", o, o, 3, False)
            bn(f"{name}.bn2", o)
            if s != 1 or c != o:
                conv(f"{name}.shortcut.conv", o, c, 1, False)
                bn(f"{name}.shortcut.bn", o)
            shape = [o, (shape[1] - 1) // s + 1, (shape[2] - 1) // s + 1]
        elif kind == "linear":
            features = 1
            for n in shape:
                features *= n
            out.append(Tensor(name, "weight", (spec["out"], features), "float32"))
            if spec.get("bias", True):
                out.append(Tensor(name, "bias", (spec["out"],), "float32"))
            shape = [spec["out"]]
        elif kind in ("maxpool", "avgpool"):
            k = spec.get("kernel", 2)
            s = spec.get("stride", k)
            shape = [c, (shape[1] - k) // s + 1, (shape[2] - k) // s + 1]
        elif kind == "global_avgpool":
            shape = [c, 1, 1]
        elif kind == "flatten":
            n = 1
            for d in shape:
                n *= d
            shape = [n]
        elif kind != "relu":
            raise Failure(f"model.layers.{i}: layer type '{kind}' is not known to this script")
    return out


def parse_renames(pairs):
    renames = []
    for pair in pairs or []:
        a, sep, b = pair.partition("=")
        if not sep or not a or not b:
            raise Failure(f"--rename {pair}: expected OLD=NEW")
        renames.append((a, b))
    return renames


def rename_prefix(name, renames):
    """`name` with the first matching layer prefix renamed (A matches A and A.*)."""
    for a, b in renames:
        if name == a or name.startswith(a + "."):
            return b + name[len(a):]
    return name


def torch_name(layer, style, renames):
    """The state_dict prefix of checkpoint layer `layer`."""
    for old, new in KEY_STYLES[style].items():
        if layer.endswith(old):
            layer = layer[: -len(old)] + new
    return rename_prefix(layer, renames)


# MARK: - A torch.nn.Module of the config's model

def build_module(model, keys="torchvision", renames=()):
    """The config's model as a torch.nn.Module whose state_dict keys are the export's (layer
    names with dots become nested modules: `layer1.0` is child `0` of `layer1`)."""
    torch, = need("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c, o, s):
            super().__init__()
            self.conv1 = nn.Conv2d(c, o, 3, s, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(o)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(o)
            self.skip = None
            if s != 1 or c != o:
                parts = [nn.Conv2d(c, o, 1, s, 0, bias=False), nn.BatchNorm2d(o)]
                if keys == "torchvision":
                    self.downsample = nn.Sequential(*parts)
                    self.skip = "downsample"
                elif keys == "pytorch-cifar":
                    self.shortcut = nn.Sequential(*parts)
                    self.skip = "shortcut"
                else:
                    self.shortcut = nn.Module()
                    self.shortcut.conv, self.shortcut.bn = parts
                    self.skip = "shortcut"

        def forward(self, x):
            y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            if self.skip is None:
                return self.relu(y + x)
            m = getattr(self, self.skip)
            s = m(x) if isinstance(m, nn.Sequential) else m.bn(m.conv(x))
            return self.relu(y + s)

    class ConfigNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.sequence = []
            shape = list(model["input"])
            for i, spec in enumerate(model["layers"]):
                kind = spec.get("type")
                name = rename_prefix(str(spec.get("name", f"{kind}{i}")), renames)
                c = shape[0]
                if kind == "conv":
                    o, k, s, p = spec["out"], spec.get("kernel", 3), spec.get("stride", 1), spec.get("padding", 0)
                    m = nn.Conv2d(c, o, k, s, p, bias=spec.get("bias", True))
                    shape = [o, (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
                elif kind == "batchnorm":
                    m = nn.BatchNorm2d(c)
                elif kind == "basic_block":
                    o, s = spec["out"], spec.get("stride", 1)
                    m = Block(c, o, s)
                    shape = [o, (shape[1] - 1) // s + 1, (shape[2] - 1) // s + 1]
                elif kind == "relu":
                    m = nn.ReLU()
                elif kind in ("maxpool", "avgpool"):
                    k = spec.get("kernel", 2)
                    s = spec.get("stride", k)
                    m = (nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(k, s)
                    shape = [c, (shape[1] - k) // s + 1, (shape[2] - k) // s + 1]
                elif kind == "global_avgpool":
                    m = nn.AdaptiveAvgPool2d(1)
                    shape = [c, 1, 1]
                elif kind == "flatten":
                    m = nn.Flatten()
                    shape = [shape[0] * shape[1] * shape[2]] if len(shape) == 3 else shape
                elif kind == "linear":
                    m = nn.Linear(shape[0], spec["out"], bias=spec.get("bias", True))
                    shape = [spec["out"]]
                else:
                    raise Failure(f"model.layers.{i}: layer type '{kind}' has no PyTorch module here")
                self.place(name, m)
                self.sequence.append(name)

        def place(self, dotted, m):
            parent = self
            *path, last = dotted.split(".")
            for part in path:
                if not hasattr(parent, part):
                    parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            parent.add_module(last, m)

        def forward(self, x):
            for name in self.sequence:
                x = self.get_submodule(name)(x)
            return x

    return ConfigNet()


# MARK: - HDF5

def read_checkpoint(path):
    """(config dict, config text, {"layer/param": numpy array}) of a checkpoint, every
    dataset's crc32 verified."""
    h5py, np, yaml = need("h5py", "numpy", "yaml")
    if not os.path.exists(path):
        raise Failure(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise Failure(f"{path}: not an HDF5 file")
    tensors = {}
    with h5py.File(path, "r") as f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != FORMAT:
            raise Failure(f"{path}: not an asymml checkpoint (no format = \"{FORMAT}\" attribute)")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise Failure(f"{path}: checkpoint format version {version}; this script reads version {FORMAT_VERSION}")
        text = f.attrs["config"]
        text = text.decode() if isinstance(text, bytes) else text
        if "model" not in f:
            raise Failure(f"{path}: no /model group")

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = np.array(obj)
                if "crc32" not in obj.attrs:
                    raise Failure(f"{path}: /model/{name} has no crc32 attribute")
                if zlib.crc32(np.array(data, order="C").astype(data.dtype.newbyteorder("<")).tobytes()) != int(obj.attrs["crc32"]):
                    raise Failure(f"{path}: /model/{name}: crc32 mismatch: the file is damaged")
                tensors[name] = data
        f["model"].visititems(visit)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise Failure(f"{path}: its config attribute does not parse: {str(e).splitlines()[0]}")
    return config, text, tensors


def write_checkpoint(path, config, text, values):
    """An asymml checkpoint at step 0 (see the module docstring for the layout) from
    {Tensor: numpy array} in model order, written atomically (temp file, rename)."""
    h5py, np = need("h5py", "numpy")

    def dataset(f, name, array):
        array = np.array(array, order="C")
        d = f.create_dataset(name, data=array)
        d.attrs.create("crc32", np.int64(zlib.crc32(array.astype(array.dtype.newbyteorder("<")).tobytes())), dtype="<i8")

    def int64(f, name, v):
        dataset(f, name, np.array(v, dtype="<i8"))

    mode = str((config.get("asym") or {}).get("mode", "plain"))
    world = json.dumps({"trusted": 1, "untrusted": 1 if mode == "asym" else 0, "mode": mode})
    temp = f"{path}.tmp-{os.getpid()}"
    try:
        # libver: objects in the 1.8 format, which asymml's HDF5 1.10 reads (a newer h5py's
        # library would otherwise be free to use newer ones).
        with h5py.File(temp, "w", libver=("earliest", "v108")) as f:
            string = h5py.string_dtype("utf-8")
            f.attrs.create("format", FORMAT, dtype=string)
            f.attrs.create("format_version", np.int64(FORMAT_VERSION), dtype="<i8")
            for key in ("step", "epoch", "samples_seen"):
                f.attrs.create(key, np.int64(0), dtype="<i8")
            f.attrs.create("config", text, dtype=string)
            f.attrs.create("world", world, dtype=string)
            f.attrs.create("software_version", SOFTWARE, dtype=string)
            for t, v in values.items():
                if t.dtype == "int64":
                    int64(f, f"/model/{t.layer}/{t.param}", v)
                    continue
                dataset(f, f"/model/{t.layer}/{t.param}", v.astype("<f4"))
                if t.param in ("weight", "bias"):  # parameters: a momentum buffer each
                    dataset(f, f"/optimizer/{t.layer}/{t.param}", np.zeros(v.shape, dtype="<f4"))
            int64(f, "/state/step", 0)
            int64(f, "/state/samples_seen", 0)
            int64(f, "/state/seed", int(config.get("seed", 0)))
            int64(f, "/state/data_epoch", 0)
            int64(f, "/state/data_cursor", 0)
            int64(f, "/state/momentum_initialized", 0)
        os.replace(temp, path)
    except OSError as e:
        raise Failure(f"{path}: cannot write it: {e}")
    finally:
        if os.path.exists(temp):
            os.remove(temp)


# MARK: - Configs

def read_config(path):
    """(config dict, config text) of a YAML file or of a checkpoint's `config` attribute."""
    h5py, yaml = need("h5py", "yaml")
    if not os.path.exists(path):
        raise Failure(f"{path}: no such file")
    if h5py.is_hdf5(path):
        config, text, _ = read_checkpoint(path)
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise Failure(f"{path}: invalid YAML: {str(e).splitlines()[0]}")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise Failure(f"{path}: no model section")
    return config, text


# MARK: - The conversion, on NumPy arrays

def to_state_dict(config, stored, source, keys="torchvision", renames=()):
    """The state_dict (OrderedDict key -> numpy array, in model order) of a checkpoint's
    tensors `stored` ({"layer/param": array}, as `read_checkpoint` returns them), each checked
    against the config's model (name, shape, type). The arrays are the stored ones, unchanged."""
    np, = need("numpy")
    expected = model_tensors(config.get("model") or {})
    names = {f"{t.layer}/{t.param}" for t in expected}
    extra = sorted(set(stored) - names)
    if extra:
        raise Failure(f"{source}: /model/{extra[0]} is not a tensor of the stored config's model"
                      + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    state = collections.OrderedDict()
    for t in expected:
        key = f"{t.layer}/{t.param}"
        if key not in stored:
            raise Failure(f"{source}: /model/{key} is missing")
        v = stored[key]
        if tuple(v.shape) != t.shape:
            raise Failure(f"{source}: /model/{key} has shape {list(v.shape)}, the config's model needs {list(t.shape)}")
        if v.dtype != (np.int64 if t.dtype == "int64" else np.float32):
            raise Failure(f"{source}: /model/{key} is {v.dtype}, not {t.dtype}")
        state[f"{torch_name(t.layer, keys, renames)}.{t.param}"] = v
    return state


def from_state_dict(config, state, source, renames=()):
    """The config's model tensors ({Tensor: numpy array} in model order, float32 and int64
    little-endian) from a state_dict of numpy arrays. Every tensor the model needs must be there
    with its exact shape (num_batches_tracked may be missing: 0), and no other key; float32
    arrays pass unchanged, other floating types are converted."""
    np, = need("numpy")
    expected = model_tensors(config["model"])
    by_name = {f"{t.layer}.{t.param}": t for t in expected}

    # Each key in the checkpoint's own naming: as it is, without DataParallel's `module.`,
    # renamed, and with a torchvision or pytorch-cifar shortcut.
    def asymml_name(key):
        k = rename_prefix(key[len("module."):] if key.startswith("module.") else key, renames)
        candidates = [k]
        for style in ("torchvision", "pytorch-cifar"):
            c = k
            for old, new in KEY_STYLES[style].items():
                c = c.replace(new + ".", old + ".")
            candidates.append(c)
        return next((c for c in candidates if c in by_name), None)

    values = {}
    for key, array in state.items():
        name = asymml_name(key)
        if name is None:
            raise Failure(f"{source}: key '{key}' is not a tensor of the config's model "
                          f"(its tensors: {', '.join(list(by_name)[:3])}, ...; --rename A=B maps a layer)")
        t = by_name[name]
        if t in values:
            raise Failure(f"{source}: two keys give {name} (the second: '{key}')")
        if tuple(array.shape) != t.shape:
            raise Failure(f"{source}: '{key}' has shape {list(array.shape)}, but {name} of the config's model needs {list(t.shape)}")
        want, kinds, what = ("<i8", "iu", "an integer count") if t.dtype == "int64" else ("<f4", "f", "a floating-point tensor")
        if array.dtype.kind not in kinds:
            raise Failure(f"{source}: '{key}' is {array.dtype}, not {what}")
        values[t] = np.array(array, dtype=want, order="C")  # a copy; ascontiguousarray would make a scalar 1-d
    for t in expected:
        if t not in values:
            if t.param == "num_batches_tracked":
                values[t] = np.array(0, dtype="<i8")
                continue
            tv = f"{torch_name(t.layer, 'torchvision', [])}.{t.param}"
            also = f" (torchvision's name: {tv})" if tv != f"{t.layer}.{t.param}" else ""
            raise Failure(f"{source}: no tensor for {t.layer}.{t.param}{also} of the config's model (shape {list(t.shape)})")
    return collections.OrderedDict((t, values[t]) for t in expected)


# MARK: - State_dict files

def save_state(state, path, fmt):
    """Writes a state_dict of numpy arrays: `pt` with torch.save (tensors sharing the arrays'
    bytes), `npz` with np.savez (one array per key, in order)."""
    np, = need("numpy")
    try:
        if fmt == "npz":
            with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **state)
        else:
            torch, = need("torch")
            torch.save(collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state.items()), path)
    except OSError as e:
        raise Failure(f"{path}: cannot write it: {e}")


def load_state(path, fmt):
    """A state_dict file as {key: numpy array}: `npz` as np.savez writes it; `pt` a torch.save
    of a dict of tensors, or of a dict holding one under `state_dict`, `net` or `model` (as
    pytorch-cifar saves them). Floating tensors come back as float32 (bfloat16 has no numpy type)."""
    np, = need("numpy")
    if not os.path.exists(path):
        raise Failure(f"{path}: no such file")
    if fmt == "npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                return collections.OrderedDict((k, f[k]) for k in f.files)
        except (OSError, ValueError) as e:
            raise Failure(f"{path}: not a .npz file of arrays ({e})")
    torch, = need("torch")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickled module, or not a torch file at all
        raise Failure(f"{path}: torch.load(weights_only=True) cannot load it ({type(e).__name__}): a pickled module "
                      "or other objects are not read here (they could run code); save model.state_dict() instead")
    if isinstance(obj, dict):
        for key in ("state_dict", "net", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise Failure(f"{path}: holds no state_dict (a dict of tensors, or one under 'state_dict', 'net' or 'model')")
    return collections.OrderedDict((k, (v.detach().float() if v.is_floating_point() else v.detach()).numpy())
                                   for k, v in obj.items())
