import AsymSplit
import Foundation
import Yams

/// A closed set of names in the config: printed as the name the config uses.
package protocol ConfigName: RawRepresentable, CaseIterable, CustomStringConvertible where RawValue == String {}
extension ConfigName {
    package var description: String { rawValue }
}

/// How a run uses its ranks (docs/DESIGN.md §3).
package enum Mode: String, ConfigName {
    /// Every rank a data-parallel worker; no privacy (the baseline).
    case plain
    /// Only trusted ranks compute (the paper's baseline).
    case teeOnly = "tee-only"
    /// The split: residual convolutions on untrusted ranks.
    case asym
}

/// How each split layer's rank is chosen (docs/DESIGN.md §2).
package enum RankPolicy: String, ConfigName { case fixed, schedule, energy }

/// The learning-rate schedule.
package enum ScheduleType: String, ConfigName { case constant, step, cosine }

/// The layer types of `model.layers`; the raw values are the config's names.
package enum LayerType: String, ConfigName {
    case conv, linear, relu, maxpool, avgpool, globalAvgpool = "global_avgpool", flatten, batchnorm
    case basicBlock = "basic_block"

    /// Types that need `out:` (output channels or features).
    var needsOut: Bool { self == .conv || self == .linear || self == .basicBlock }
    var isWindowPool: Bool { self == .maxpool || self == .avgpool }
}

/// The data sets a run can train on (docs/DESIGN.md §7).
package enum DatasetKind: String, ConfigName {
    case fashionMNIST = "fashion-mnist", cifar10, synthetic
    /// NumPy .npz: `path/train.npz` and `path/test.npz` with `x` and `y`, or one file with
    /// `x_train`, `y_train`, `x_test`, `y_test`.
    case npz
    /// `path/train/<class>/*` and `path/test/<class>/*`, PNG or JPEG.
    case imageFolder = "image_folder"
}

/// The order of an npz set's image dimensions (`data.layout`).
package enum DataLayout: String, ConfigName {
    /// (N, C, H, W), PyTorch's order.
    case nchw
    /// (N, H, W, C), Keras's and most image libraries' order.
    case nhwc
}

/// The optimizers of `optimizer.type`.
package enum OptimizerType: String, ConfigName {
    /// torch.optim.SGD: momentum, dampening, Nesterov, weight decay added to the gradient.
    case sgd
    /// torch.optim.AdamW: Adam with weight decay decoupled from the gradient (Loshchilov & Hutter).
    case adamw
}

/// Weight initialisation (`model.init`).
package enum InitScheme: String, ConfigName {
    /// PyTorch's default for Conv2d and Linear.
    case kaimingUniform = "kaiming_uniform"
    /// He et al.'s N(0, 2 / fan_in), zero biases.
    case kaimingNormal = "kaiming_normal"
}

/// What a failed integrity check does (docs/DESIGN.md §8).
package enum VerifyFailurePolicy: String, ConfigName {
    /// End the job, naming the rank, layer, kind and step.
    case abort
    /// Compute the result on the trusted side, exclude the rank for the rest of the run, go on.
    case recompute
}

/// One basis per sample, or one for the whole batch (docs/DESIGN.md §2).
package typealias Basis = SplitSettings.Basis
extension Basis: ConfigName {}

/// The resolved configuration of a run: the YAML file, then `--set` overrides, then defaults.
/// `yaml` writes it back out in full, so a run folder records exactly what ran.
package struct Config: Equatable {
    package var name = "run"
    package var seed = 0
    package var data = DataConfig()
    package var model = ModelConfig()
    package var optimizer = OptimizerConfig()
    package var train = TrainConfig()
    package var asym = AsymConfig()
    package var cluster = ClusterConfig()

    package init() {}
}

package struct DataConfig: Equatable {
    package var dataset = DatasetKind.synthetic
    /// Folder of the data files; nil means the dataset's default location.
    package var path: String?
    /// The dimension order of npz images.
    package var layout = DataLayout.nchw
    /// The global batch size (summed over all trusted ranks).
    package var batchSize = 64
    package var shuffle = true
    /// Train on the first N samples of the training split only (quick runs and tests); nil: all.
    package var trainSamples: Int?
    /// [mean, std] for all channels, or [[means...], [stds...]] per channel; nil: pixel/255.
    package var normalizeMean: [Double]?
    package var normalizeStd: [Double]?
    /// Random crop and flip of training batches.
    package var augment = AugmentConfig()
    /// Sizes of the synthetic set.
    package var syntheticTrain = 4096
    package var syntheticTest = 1024
    package var classes = 10
}

/// `data.augment`: torchvision's RandomCrop(size, padding) then RandomHorizontalFlip(0.5),
/// on training batches only.
package struct AugmentConfig: Equatable {
    /// Zero padding on each side before the random crop back to the input size; 0 is no crop.
    package var randomCrop = 0
    package var horizontalFlip = false
    package var isOff: Bool { randomCrop == 0 && !horizontalFlip }

    package init(randomCrop: Int = 0, horizontalFlip: Bool = false) {
        self.randomCrop = randomCrop
        self.horizontalFlip = horizontalFlip
    }
}
extension AugmentConfig: CustomStringConvertible {
    package var description: String { "{random_crop: \(randomCrop), horizontal_flip: \(horizontalFlip)}" }
}

package struct ModelConfig: Equatable {
    /// Per-sample input shape [C, H, W].
    package var input = [1, 28, 28]
    package var layers: [LayerSpec] = []
    /// Weight initialisation: `kaiming_uniform` (PyTorch's default) or `kaiming_normal`.
    package var initScheme = InitScheme.kaimingUniform
}

/// One entry of `model.layers`.
package struct LayerSpec: Equatable {
    package var name: String
    package var type: LayerType
    /// Output channels (conv, basic_block) or features (linear).
    package var out = 0
    /// Declared input features of a linear layer (checked against the shape that flows in).
    package var inFeatures: Int?
    package var kernel = 3
    package var stride = 1
    package var padding = 0
    package var bias = true
    /// `trusted` or `split`: overrides the placement rule (asym mode).
    package var placement: LayerPlacement.Side?
    /// Per-layer rank override for split convolutions.
    package var rank: Int?

    package init(name: String, type: LayerType, out: Int = 0, kernel: Int = 3, stride: Int = 1, padding: Int = 0) {
        self.name = name; self.type = type; self.out = out
        self.kernel = kernel; self.stride = stride; self.padding = padding
    }
}

package struct OptimizerConfig: Equatable {
    package var type = OptimizerType.sgd
    package var lr = 0.01
    /// SGD only.
    package var momentum = 0.0
    package var dampening = 0.0
    package var nesterov = false
    /// SGD: L2 added to the gradient; AdamW: decoupled, p *= 1 - lr * weight_decay.
    package var weightDecay = 0.0
    /// AdamW only: the decay rates of the first and second moment, and the denominator's epsilon.
    package var beta1 = 0.9
    package var beta2 = 0.999
    package var eps = 1e-8
    package var schedule = ScheduleConfig()

    package init() {}
}

package struct ScheduleConfig: Equatable {
    package var type = ScheduleType.constant
    /// Step schedule: multiply the rate by `gamma` every `stepEpochs` epochs.
    package var stepEpochs = 1
    package var gamma = 0.1
    /// Cosine schedule: the rate at the last step.
    package var minLR = 0.0

    package init() {}
}

package struct TrainConfig: Equatable {
    package var epochs = 1
    /// Stop after this many steps (nil: run all epochs). 0 writes the initial checkpoint only.
    package var maxSteps: Int?
    /// Write a checkpoint every N steps (0: only when training ends).
    package var checkpointEvery = 0
    /// Write a checkpoint at the end of every epoch (as well as every `checkpointEvery` steps
    /// and when training ends).
    package var checkpointEpochs = true
    /// How many checkpoint files to keep.
    package var keep = 3
    /// Print and log a training line every N steps.
    package var logEvery = 50
    /// Evaluate on the test set every N steps (0: at the end of each epoch).
    package var evalEvery = 0
    /// OpenBLAS and kernel threads per rank (0: all cores of the machine).
    package var threads = 0
}

package struct AsymConfig: Equatable {
    package var mode = Mode.plain
    package var rank = RankConfig()
    package var svdIterations = 2
    package var basis = Basis.sample
    /// Masked offload (docs/DESIGN.md §9): groups of K samples cross as noisy mixtures; 0 is
    /// off (`asym.mask: off`, the unprotected split). The default is the private setting:
    /// spread masking of single samples at `AsymConfig.privateNoise`, with the checks on.
    package var maskGroup = 1
    /// The mixtures' noise, relative to the RMS of the group's residuals (or dY).
    package var maskNoise = AsymConfig.privateNoise
    /// Spread masking: K noise vectors per side, 3K combinations per group, at most K of them
    /// on any untrusted rank (needs 3 untrusted ranks per trusted rank; docs/DESIGN.md §9).
    package var maskSpread = true
    /// The default noise scale of spread masking: the smallest at which every label probe of
    /// `asymml attack` on one rank's view, the denoising one included, stays near chance on
    /// fmnist-cnn (docs/PRIVACY.md), and at which the decode stays within 1e-5 of plain.
    package static let privateNoise = 30.0
    /// Residual noise after 3LegRace (not exact): clip each residual to `noiseClip` and add
    /// N(0, (noiseStd * noiseClip)^2); std 0 is off.
    package var noiseStd = 0.0
    package var noiseClip = 1.0
    /// Check every result an untrusted rank returns (Freivalds-style, docs/DESIGN.md §8).
    package var verify = true
    package var onVerifyFailure = VerifyFailurePolicy.abort
    /// Untrusted ranks log every buffer they receive to `auditDir/audit-rank-N.jsonl`, inside the run folder unless absolute.
    package var audit = false
    package var auditDir = "audit"
    /// Micro-batches per split-layer pass: each crosses on its own, so both sides overlap
    /// (docs/DESIGN.md §4.3); 1 sends whole batches.
    package var microbatches = 1
}

package struct RankConfig: Equatable {
    package var policy = RankPolicy.schedule
    /// fixed: r; schedule: the first split layer's rank, doubled at each split layer.
    package var value = 2
    package var max = 32
    /// energy: the largest residual energy ratio allowed.
    package var tau = 0.1
}

package struct ClusterConfig: Equatable {
    package var trusted = 1
    /// Every wait on another rank ends the job after this many seconds.
    package var timeoutSeconds = 300.0
    /// Gradient sums among trusted ranks travel as AES-GCM with the key in `keyFile`.
    package var encrypt = false
    package var keyFile: String?
}

extension Config {
    /// Reads a config file, applies `key.path=value` overrides, and validates every key.
    package static func load(path: String, overrides: [String] = []) throws -> Config {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw FileError("config \(path): cannot read the file; check the path (configs/ has examples)")
        }
        return try parse(yaml: text, source: path, overrides: overrides)
    }

    package static func parse(yaml text: String, source: String = "config", overrides: [String] = []) throws -> Config {
        var root: Node
        do {
            root = try Yams.compose(yaml: text) ?? Node([(Node, Node)]())
        } catch let error as YamlError {
            throw ConfigError("\(source): invalid YAML: \(error.description.split(separator: "\n").first ?? "")")
        } catch {
            throw ConfigError("\(source): invalid YAML")
        }
        for o in overrides { try applyOverride(o, to: &root) }
        return try Config(reading: ConfigReader(root, path: ""))
    }

    /// Reads the whole config (each accessor names its key, default and meaning: the key
    /// reference docs/CONFIG.md is generated from these calls, `ConfigReference.swift`).
    init(reading r: ConfigReader) throws {
        self = try Config.read(r)
        try validate()
    }

    /// Reads every key, without `validate()`.
    static func read(_ r: ConfigReader) throws -> Config {
        var r = r
        var c = Config()
        c.name = try r.string("name", c.name, "Run name: the run folder is `runs/<name>/` (unless `--run-dir`).")
        c.seed = try r.int("seed", c.seed, "Seeds the weight initialisation, the shuffle order and the synthetic set.")

        var d = try r.child("data", "The data set and its batches.")
        c.data.dataset = try d.choice("dataset", c.data.dataset,
            "The data set to train on (docs/DESIGN.md §7). `npz`: NumPy arrays, `x` and `y` in `train.npz` and `test.npz` (or `x_train`, `y_train`, `x_test`, `y_test` in one file): images uint8, float32 or float64 in the order `data.layout` says, integer labels. Images saved with `np.savez` are read from the file a batch at a time; `np.savez_compressed` ones are inflated whole into memory, so use `np.savez` for data larger than memory. `image_folder`: PNG or JPEG images of `model.input`'s size in `train/<class>/` and `test/<class>/`, classes numbered in name order, decoded a batch at a time (libpng, libjpeg-turbo).")
        c.data.path = try d.string("path", KeyDoc("Where the data is (npz: the folder holding `train.npz` and `test.npz`, or one .npz file; image_folder: the folder holding `train/` and `test/`).",
                                                  shown: "the dataset's default location"))
        c.data.layout = try d.choice("layout", c.data.layout,
            "npz only: the order of the image dimensions, `nchw` (N, C, H, W) or `nhwc` (N, H, W, C); (N, H, W) is one channel in either.")
        c.data.batchSize = try d.int("batch_size", c.data.batchSize, "The global batch size (summed over all trusted ranks).")
        c.data.shuffle = try d.bool("shuffle", c.data.shuffle, "Shuffle the training set each epoch (the order depends only on the seed and the epoch).")
        c.data.trainSamples = try d.int("train_samples", KeyDoc(
            "Train on the first N samples of the training split only (quick runs and tests).", shown: "none (all)"))
        if let n = d.raw("normalize", type: "[mean, std] or [[means...], [stds...]]", KeyDoc(
            "[mean, std] for all channels, or [[means...], [stds...]] per channel, of pixel/255 (8-bit images) or of the values as stored (float npz images).", shown: "none (pixel/255)")) {
            (c.data.normalizeMean, c.data.normalizeStd) = try Config.normalization(n)
        }
        let augment = d.map("augment", "Augmentation of training batches (never of evaluation): each sample's crop and flip depend only on the seed, the epoch and the sample's index.")
        var ar = try d.nested(augment ?? Node([(Node, Node)]()), "augment")
        c.data.augment.randomCrop = try ar.int("random_crop", c.data.augment.randomCrop,
            "Pad each side with this many pixels of value 0 (black, before normalisation), then crop back to the input size at a random offset (torchvision's RandomCrop(size, padding)); 0 is off.")
        c.data.augment.horizontalFlip = try ar.bool("horizontal_flip", c.data.augment.horizontalFlip,
            "Mirror left-right with probability 0.5, after the crop (torchvision's RandomHorizontalFlip).")
        try ar.finish()
        c.data.syntheticTrain = try d.int("synthetic_train", c.data.syntheticTrain, "Training samples of the synthetic set.")
        c.data.syntheticTest = try d.int("synthetic_test", c.data.syntheticTest, "Test samples of the synthetic set.")
        c.data.classes = try d.int("classes", c.data.classes, "Classes of the synthetic set (the last layer's outputs must match).")
        try d.finish()

        var m = try r.child("model", "The network.")
        c.model.input = try m.ints("input", c.model.input, "Per-sample input shape [C, H, W].")
        c.model.initScheme = try m.choice("init", c.model.initScheme,
            "Weight initialisation: `kaiming_uniform` (PyTorch's default for Conv2d and Linear) or `kaiming_normal` (He et al.'s N(0, 2 / fan_in), zero biases).")
        c.model.layers = try m.list("layers", KeyDoc("The layers, in order; each entry's keys are under `model.layers[]`.",
                                                     shown: "none (at least one layer is required)"))
            .enumerated().map { i, l in try LayerSpec(reading: l, index: i) }
        try m.finish()

        var o = try r.child("optimizer", "The optimizer and the learning-rate schedule.")
        c.optimizer.type = try o.choice("type", c.optimizer.type,
                                        "The optimizer: `sgd` (`torch.optim.SGD`'s update) or `adamw` (`torch.optim.AdamW`'s).")
        c.optimizer.lr = try o.float("lr", c.optimizer.lr, "The learning rate (the schedule's starting rate).")
        c.optimizer.momentum = try o.float("momentum", c.optimizer.momentum, "SGD momentum (as in PyTorch).")
        c.optimizer.dampening = try o.float("dampening", c.optimizer.dampening, "SGD dampening (as in PyTorch).")
        c.optimizer.weightDecay = try o.float("weight_decay", c.optimizer.weightDecay,
            "Weight decay as in PyTorch: `sgd` adds weight_decay * p to the gradient; `adamw` decouples it, p *= 1 - lr * weight_decay, before the Adam step.")
        c.optimizer.nesterov = try o.bool("nesterov", c.optimizer.nesterov,
                                          "Nesterov momentum (as in PyTorch: needs momentum > 0 and dampening 0).")
        let betas = try o.floats("betas", [c.optimizer.beta1, c.optimizer.beta2],
                                 "AdamW: [beta1, beta2], the decay rates of the running mean of the gradient and of its square.")
        guard betas.count == 2 else { throw ConfigError("optimizer.betas: expected two numbers [beta1, beta2], got \(betas.count)") }
        (c.optimizer.beta1, c.optimizer.beta2) = (betas[0], betas[1])
        c.optimizer.eps = try o.float("eps", c.optimizer.eps, "AdamW: added to the denominator sqrt(v) for numerical stability.")
        if let s = o.map("schedule", KeyDoc("The learning-rate schedule.",
                                            shortForm: "a name alone is short for `{type: NAME}`")) {
            var sr = try o.nested(s.string.map { Node([(Node("type"), Node($0))]) } ?? s, "schedule")
            c.optimizer.schedule = try ScheduleConfig(reading: &sr)
        }
        try o.finish()

        var t = try r.child("train", "The training loop, checkpoints and logs.")
        c.train.epochs = try t.int("epochs", c.train.epochs, "Epochs to train.")
        c.train.maxSteps = try t.int("max_steps", KeyDoc(
            "Stop after this many steps. 0 writes the initial checkpoint only.", shown: "none (run all epochs)"))
        c.train.checkpointEvery = try t.int("checkpoint_every", c.train.checkpointEvery,
                                            "Write a checkpoint every N steps (0: only when training ends).")
        c.train.checkpointEpochs = try t.bool("checkpoint_epochs", c.train.checkpointEpochs,
            "Write a checkpoint at the end of every epoch (as well as every `train.checkpoint_every` steps and when training ends).")
        c.train.keep = try t.int("keep", c.train.keep, "How many checkpoint files to keep.")
        c.train.logEvery = try t.int("log_every", c.train.logEvery, "Print and log a training line every N steps.")
        c.train.evalEvery = try t.int("eval_every", c.train.evalEvery, "Evaluate on the test set every N steps (0: at the end of each epoch).")
        c.train.threads = try t.int("threads", c.train.threads, "OpenBLAS and kernel threads per rank (0: all cores of the machine).")
        try t.finish()

        var a = try r.child("asym", "The asymmetric split and what protects it (docs/DESIGN.md §2, §8, §9).")
        c.asym.mode = try a.choice("mode", c.asym.mode,
            "How a run uses its ranks: `plain` (every rank a data-parallel worker; no privacy), `tee-only` (only trusted ranks compute), `asym` (residual convolutions on untrusted ranks).")
        c.asym.svdIterations = try a.int("svd_iterations", c.asym.svdIterations,
                                         "Power iterations q of the light SVD that finds each split layer's low-rank part.")
        c.asym.basis = try a.choice("basis", c.asym.basis, "One basis per sample, or one for the whole batch (docs/DESIGN.md §2).")
        if let mn = a.map("mask", KeyDoc("Masked offload (docs/DESIGN.md §9): samples cross as noisy mixtures spread over three untrusted ranks. `off` sends residuals and output gradients in the clear, which gives an untrusted rank the labels (docs/PRIVACY.md).",
                                         shortForm: "`off` (or `false`) is the unprotected split")) {
            if mn.string == "off" || mn.bool == false {
                c.asym.maskGroup = 0
                c.asym.maskSpread = false
            } else {
                var mr = try a.nested(mn, "mask")
                c.asym.maskGroup = try mr.int("inputs_per_group", c.asym.maskGroup,
                                              "K samples cross as 3K noisy mixtures with spread (K+2 without); 0 is off.")
                c.asym.maskNoise = try mr.float("noise_scale", c.asym.maskNoise,
                                                "The mixtures' noise, relative to the RMS of the group's residuals (or dY).")
                c.asym.maskSpread = try mr.bool("spread", c.asym.maskGroup > 0 && c.asym.maskSpread,
                    "Spread masking: K noise vectors per side, 3K combinations per group, at most K of them on any untrusted rank (needs 3 untrusted ranks per trusted rank; docs/DESIGN.md §9). `false` sends a whole group to one rank, which blind source separation unmixes.")
                try mr.finish()
            }
        }
        if let nn = a.map("residual_noise", "Residual noise after 3LegRace (not exact): clip each residual, then add Gaussian noise.") {
            var nr = try a.nested(nn, "residual_noise")
            c.asym.noiseStd = try nr.float("std", c.asym.noiseStd, "Add N(0, (std * clip)^2) to each clipped residual; 0 is off.")
            c.asym.noiseClip = try nr.float("clip", c.asym.noiseClip, "Clip each sample's residual to this L2 norm.")
            try nr.finish()
        }
        c.asym.verify = try a.bool("verify", c.asym.verify,
                                   "Check every result an untrusted rank returns (Freivalds-style, docs/DESIGN.md §8).")
        c.asym.microbatches = try a.int("microbatches", c.asym.microbatches,
            "Micro-batches per split-layer pass: each crosses on its own, so both sides overlap (docs/DESIGN.md §4.3); 1 sends whole batches.")
        c.asym.onVerifyFailure = try a.choice("on_verify_failure", c.asym.onVerifyFailure,
            "What a failed check does: `abort` ends the job, naming the rank, layer, kind and step; `recompute` computes the result on the trusted side, excludes the rank for the rest of the run and goes on.")
        c.asym.audit = try a.bool("audit", c.asym.audit, "Untrusted ranks log every buffer they receive to `audit_dir/audit-rank-N.jsonl`.")
        c.asym.auditDir = try a.string("audit_dir", c.asym.auditDir, "The folder of the audit logs (`asym.audit`), relative to the run folder unless absolute; each rank writes its own file there.")
        if let rn = a.map("rank", KeyDoc("How each split layer's rank is chosen (docs/DESIGN.md §2).",
            shortForm: "an integer N is short for `{policy: fixed, value: N}`, with `max` raised to N")) {
            if let v = rn.int {
                c.asym.rank.policy = .fixed; c.asym.rank.value = v; c.asym.rank.max = max(c.asym.rank.max, v)
            } else {
                var rr = try a.nested(rn, "rank")
                c.asym.rank.policy = try rr.choice("policy", c.asym.rank.policy,
                    "`fixed` (every split layer gets `value`), `schedule` (`value`, doubled at each split layer, up to `max`) or `energy` (up to `max`, stopping once the residual energy ratio is <= `tau`).")
                c.asym.rank.value = try rr.int("value", c.asym.rank.value,
                                               "fixed: r; schedule: the first split layer's rank, doubled at each split layer.")
                c.asym.rank.max = try rr.int("max", c.asym.rank.max, "The largest rank (schedule and energy).")
                c.asym.rank.tau = try rr.float("tau", c.asym.rank.tau, "energy: the largest residual energy ratio allowed.")
                try rr.finish()
            }
        }
        try a.finish()

        var cl = try r.child("cluster", "The ranks of an MPI job.")
        c.cluster.trusted = try cl.int("trusted", c.cluster.trusted,
                                       "How many ranks are trusted: the first ones (unless ranks are given `--role`).")
        c.cluster.timeoutSeconds = try cl.float("timeout_s", c.cluster.timeoutSeconds,
                                                "Every wait on another rank ends the job after this many seconds.")
        c.cluster.encrypt = try cl.bool("encrypt", c.cluster.encrypt,
                                        "Gradient sums among trusted ranks travel as AES-GCM with the key in `key_file`.")
        c.cluster.keyFile = try cl.string("key_file", KeyDoc(
            "The key for `encrypt`: a file of 32 random bytes (or 64 hex digits) that every trusted rank can read."))
        try cl.finish()
        try r.finish()
        return c
    }

    /// `[mean, std]` or `[[means], [stds]]`.
    private static func normalization(_ n: Node) throws -> ([Double], [Double]) {
        let bad = ConfigError("data.normalize: expected [mean, std] or [[means...], [stds...]]")
        guard let seq = n.sequence, seq.count == 2 else { throw bad }
        func values(_ x: Node) throws -> [Double] {
            if let v = x.float { guard v.isFinite else { throw bad }; return [v] }
            guard let s = x.sequence else { throw bad }
            return try s.map { guard let v = $0.float, v.isFinite else { throw bad }; return v }
        }
        return (try values(seq[0]), try values(seq[1]))
    }

    /// Checks that do not need the model's shapes (those are checked when it is built).
    func validate() throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw ConfigError(message) } }
        try check(data.batchSize > 0, "data.batch_size: must be positive, got \(data.batchSize)")
        try check(data.syntheticTrain > 0 && data.syntheticTest > 0, "data.synthetic_train/synthetic_test: must be positive")
        try check(data.trainSamples.map { $0 > 0 } ?? true, "data.train_samples: must be positive")
        try check(data.classes > 1, "data.classes: need at least 2 classes")
        try check(data.augment.randomCrop >= 0 && data.augment.randomCrop <= ConfigLimits.dimension,
                  "data.augment.random_crop: the padding must lie in 0...\(ConfigLimits.dimension) (0: no crop), got \(data.augment.randomCrop)")
        try check(model.input.count == 3 && model.input.allSatisfy { $0 > 0 },
                  "model.input: expected [channels, height, width], got \(model.input)")
        try checkLimits()
        if let m = data.normalizeMean, let s = data.normalizeStd {
            try check(m.count == s.count && (m.count == 1 || m.count == model.input[0]),
                      "data.normalize: give one mean and std, or one per input channel (\(model.input[0]))")
            try check(s.allSatisfy { $0 > 0 }, "data.normalize: every std must be positive")
        }
        try check(!model.layers.isEmpty, "model.layers: the model has no layers")
        try check(optimizer.lr > 0, "optimizer.lr: must be positive, got \(optimizer.lr)")
        try check(optimizer.momentum >= 0, "optimizer.momentum: must be >= 0")
        try check(optimizer.weightDecay >= 0, "optimizer.weight_decay: must be >= 0")
        try check([optimizer.beta1, optimizer.beta2].allSatisfy { $0 >= 0 && $0 < 1 },
                  "optimizer.betas: each must lie in [0, 1), got [\(optimizer.beta1), \(optimizer.beta2)]")
        try check(optimizer.eps > 0, "optimizer.eps: must be positive, got \(optimizer.eps)")
        let defaults = OptimizerConfig()
        switch optimizer.type {
        case .sgd:
            try check(optimizer.beta1 == defaults.beta1 && optimizer.beta2 == defaults.beta2 && optimizer.eps == defaults.eps,
                      "optimizer.betas, optimizer.eps: only adamw uses them, and optimizer.type is sgd")
        case .adamw:
            try check(optimizer.momentum == 0 && optimizer.dampening == 0 && !optimizer.nesterov,
                      "optimizer.momentum, dampening, nesterov: only sgd uses them; adamw's moments decay by optimizer.betas")
        }
        try check(!optimizer.nesterov || (optimizer.momentum > 0 && optimizer.dampening == 0),
                  "optimizer.nesterov: needs momentum > 0 and dampening 0 (as in PyTorch)")
        try check(optimizer.schedule.stepEpochs > 0, "optimizer.schedule.step_epochs: must be positive")
        try check(train.epochs > 0, "train.epochs: must be positive, got \(train.epochs)")
        try check((train.maxSteps ?? 0) >= 0, "train.max_steps: must be >= 0")
        try check(train.checkpointEvery >= 0, "train.checkpoint_every: must be >= 0")
        try check(train.keep > 0, "train.keep: must keep at least 1 checkpoint")
        try check(train.logEvery > 0, "train.log_every: must be positive")
        try check(train.evalEvery >= 0, "train.eval_every: must be >= 0")
        try check(train.threads >= 0 && train.threads <= ConfigLimits.threads,
                  "train.threads: must lie in 0...\(ConfigLimits.threads) (0: all cores), got \(train.threads)")
        try check(asym.svdIterations >= 1 && asym.svdIterations <= ConfigLimits.svdIterations,
                  "asym.svd_iterations: must lie in 1...\(ConfigLimits.svdIterations), got \(asym.svdIterations)")
        try check(asym.rank.value >= 1 && asym.rank.max >= asym.rank.value, "asym.rank: need 1 <= value <= max")
        try check(asym.rank.tau > 0 && asym.rank.tau < 1, "asym.rank.tau: must lie in (0, 1)")
        try check(cluster.trusted >= 1, "cluster.trusted: need at least one trusted rank")
        try check(asym.maskGroup >= 0, "asym.mask.inputs_per_group: must be >= 0 (0 turns masking off)")
        try check(asym.microbatches >= 1, "asym.microbatches: must be at least 1 (1: whole batches)")
        try check(asym.microbatches <= data.batchSize,
                  "asym.microbatches: \(asym.microbatches) is more than data.batch_size (\(data.batchSize)); each micro-batch needs a sample")
        try check(asym.maskNoise > 0, "asym.mask.noise_scale: must be positive")
        try check(asym.noiseStd >= 0 && asym.noiseClip > 0, "asym.residual_noise: needs std >= 0 and clip > 0")
        try check(cluster.timeoutSeconds > 0, "cluster.timeout_s: must be positive, got \(cluster.timeoutSeconds)")
        try check(!cluster.encrypt || cluster.keyFile != nil,
                  "cluster.encrypt: needs cluster.key_file, a file of 32 random bytes (or 64 hex digits) that every trusted rank can read")
        var names = Set<String>()
        for l in model.layers {
            try check(names.insert(l.name).inserted, "model.layers: the name '\(l.name)' is used twice")
        }
        try FeatureRules.check(self, launch: nil)
    }
}

/// Bounds on the sizes a config can ask for: far above any model this trainer is meant for,
/// and far below what would overflow an `Int` or exhaust memory before the first step, so that
/// a slip (`out: 1e9`, `synthetic_train: 2000000000`) is a config error naming the key, not a
/// failed allocation or an arithmetic trap.
package enum ConfigLimits {
    /// Input channels, height and width; a layer's `out`, `kernel`, `stride`, `padding`.
    package static let dimension = 1 << 16
    /// `data.classes`.
    package static let classes = 1 << 16
    /// `data.batch_size`.
    package static let batchSize = 1 << 20
    /// `train.epochs`.
    package static let epochs = 1 << 20
    /// `train.threads`.
    package static let threads = 1024
    /// `asym.svd_iterations`.
    package static let svdIterations = 100
    /// Parameters of the whole model (1 GiB of float32 each for the weights, the momentum and
    /// the gradients).
    package static let parameters = 1 << 28
    /// Floats of one layer's output (or the input) for a whole batch: 8 GiB.
    package static let batchActivations = 1 << 31
    /// Floats of each split of the synthetic set (its images, or its class prototypes): 4 GiB.
    package static let syntheticFloats = 1 << 30
}

extension Config {
    /// The key ranges of `ConfigLimits`, then the sizes the layers ask for, layer by layer.
    /// A shape that does not fit (a kernel larger than its input, ...) ends the walk quietly:
    /// building the model reports it with the layer's name.
    func checkLimits() throws {
        typealias L = ConfigLimits
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws { if !ok { throw ConfigError(message()) } }
        /// a * b, or Int.max when that overflows (every operand here is >= 0).
        func times(_ a: Int, _ b: Int) -> Int {
            let (p, overflow) = a.multipliedReportingOverflow(by: b)
            return overflow ? .max : p
        }
        func plus(_ a: Int, _ b: Int) -> Int {
            let (s, overflow) = a.addingReportingOverflow(b)
            return overflow ? .max : s
        }
        func product(_ shape: [Int]) -> Int { shape.reduce(1, times) }

        try check(data.batchSize <= L.batchSize, "data.batch_size: must lie in 1...\(L.batchSize), got \(data.batchSize)")
        try check(data.classes <= L.classes, "data.classes: must lie in 2...\(L.classes), got \(data.classes)")
        try check(train.epochs <= L.epochs, "train.epochs: must lie in 1...\(L.epochs), got \(train.epochs)")
        try check(model.input.allSatisfy { $0 <= L.dimension },
                  "model.input: each of channels, height and width must lie in 1...\(L.dimension), got \(model.input)")
        let sample = product(model.input)
        if data.dataset == .synthetic {
            // The images of each split, and one prototype per class.
            for (key, count, what) in [("synthetic_train", data.syntheticTrain, "samples"), ("synthetic_test", data.syntheticTest, "samples"),
                                       ("classes", data.classes, "class prototypes")] {
                let floats = times(count, sample)
                try check(floats <= L.syntheticFloats,
                          "data.\(key): \(count) \(what) of \(model.input) are \(floats == .max ? "too many" : "\(floats)") floats; the synthetic set allows at most \(L.syntheticFloats) (4 GiB) each: lower data.\(key) or model.input")
            }
        }
        for (i, l) in model.layers.enumerated() {
            let key = "model.layers.\(i)"
            for (name, value) in [("out", l.out), ("kernel", l.kernel), ("stride", l.stride), ("padding", l.padding)] {
                try check(value <= L.dimension, "\(key).\(name): layer '\(l.name)' has \(name) \(value); at most \(L.dimension) is allowed")
            }
        }

        var shape = model.input
        var parameters = 0
        func checkActivations(_ key: String, _ what: String) throws {
            let floats = times(product(shape), data.batchSize)
            try check(floats <= L.batchActivations,
                      "\(key): \(what) \(shape) per sample, \(floats == .max ? "too many" : "\(floats)") floats for a batch of \(data.batchSize); at most \(L.batchActivations) (8 GiB) are allowed: make it smaller or lower data.batch_size")
        }
        try checkActivations("model.input", "the input is")
        for (i, l) in model.layers.enumerated() {
            guard l.kernel >= 1, l.stride >= 1, l.padding >= 0, l.out >= 0 else { return }  // checked when read
            let isMap = shape.count == 3
            let (c, h, w) = isMap ? (shape[0], shape[1], shape[2]) : (0, 0, 0)
            var added = 0
            switch l.type {
            case .conv:
                guard isMap, h + 2 * l.padding >= l.kernel, w + 2 * l.padding >= l.kernel else { return }
                added = plus(times(times(l.out, c), l.kernel * l.kernel), l.bias ? l.out : 0)
                shape = [l.out, (h + 2 * l.padding - l.kernel) / l.stride + 1, (w + 2 * l.padding - l.kernel) / l.stride + 1]
            case .basicBlock:
                guard isMap else { return }
                // 3x3 (stride s, padding 1) and 3x3, each with batch norm; a 1x1 shortcut with
                // batch norm where the shape changes.
                added = plus(times(times(l.out, c), 9), times(times(l.out, l.out), 9))
                added = plus(added, times(l.out, 4))
                if l.stride != 1 || c != l.out { added = plus(added, plus(times(l.out, c), times(l.out, 2))) }
                shape = [l.out, (h - 1) / l.stride + 1, (w - 1) / l.stride + 1]
            case .linear:
                added = plus(times(l.out, product(shape)), l.bias ? l.out : 0)
                shape = [l.out]
            case .maxpool, .avgpool:
                guard isMap, l.kernel <= h, l.kernel <= w else { return }
                shape = [c, (h - l.kernel) / l.stride + 1, (w - l.kernel) / l.stride + 1]
            case .globalAvgpool:
                guard isMap else { return }
                shape = [c, 1, 1]
            case .flatten:
                shape = [product(shape)]
            case .batchnorm:
                guard isMap else { return }
                added = times(c, 2)
            case .relu:
                break
            }
            parameters = plus(parameters, added)
            let key = "model.layers.\(i)"
            try check(parameters <= L.parameters,
                      "\(key): layer '\(l.name)' brings the model to \(parameters == .max ? "too many" : "\(parameters)") parameters; at most \(L.parameters) are allowed: lower its out (or an earlier layer's)")
            try checkActivations(key, "layer '\(l.name)' outputs")
        }
    }
}

extension ScheduleConfig {
    init(reading r: inout ConfigReader) throws {
        self.init()
        type = try r.choice("type", type, "`constant`, `step` (multiply by `gamma` every `step_epochs` epochs) or `cosine` (down to `min_lr` at the last step).")
        stepEpochs = try r.int("step_epochs", stepEpochs, "Step schedule: multiply the rate by `gamma` every `step_epochs` epochs.")
        gamma = try r.float("gamma", gamma, "Step schedule: the factor.")
        minLR = try r.float("min_lr", minLR, "Cosine schedule: the rate at the last step.")
        try r.finish()
    }
}

extension LayerSpec {
    init(reading r: ConfigReader, index: Int) throws {
        var r = r
        let type: LayerType = try r.choice("type", "The layer type.")
        r.layerType = type
        self.init(name: try r.string("name", "\(type.rawValue)\(index)", KeyDoc(
            "The layer's name (unique; checkpoints store its parameters under it).", shown: "`<type><index>`, e.g. `conv0`")),
                  type: type)
        out = try r.int("out", 0, KeyDoc("Output channels (conv, basic_block) or features (linear).",
                                         layers: LayerType.allCases.filter(\.needsOut), shown: type.needsOut ? "required" : nil))
        if type.needsOut && out <= 0 { throw ConfigError("\(r.path).out: \(type.rawValue) '\(name)' needs a positive 'out'") }
        inFeatures = try r.int("in", KeyDoc("Declared input features of a linear layer (checked against the shape that flows in).",
                                            layers: [.linear], shown: "none (not checked)"))
        kernel = try r.int("kernel", type.isWindowPool ? 2 : 3, KeyDoc("Kernel (window) size k: k x k.",
                                                                          layers: [.conv, .maxpool, .avgpool]))
        stride = try r.int("stride", type.isWindowPool ? kernel : 1, KeyDoc(
            "Stride (basic_block: of its first convolution and shortcut).",
            layers: [.conv, .maxpool, .avgpool, .basicBlock], shown: type.isWindowPool ? "the kernel" : nil))
        padding = try r.int("padding", 0, KeyDoc("Zero padding on each side.", layers: [.conv]))
        bias = try r.bool("bias", true, KeyDoc("Whether the layer has a bias.", layers: [.conv, .linear]))
        if let p = try r.string("placement", oneOf: LayerPlacement.Side.allCases.map(\.rawValue), KeyDoc("`trusted` or `split`: overrides the placement rule (asym mode).",
                                                    layers: [.conv, .basicBlock], shown: "none (the placement rule)")) {
            placement = LayerPlacement.Side(rawValue: p)
            guard placement != nil else { throw ConfigError("\(r.path).placement: '\(p)' is not accepted; use one of: trusted, split (no layer runs on the untrusted side alone: it would see raw inputs)") }
        }
        rank = try r.int("rank", KeyDoc("Per-layer rank override for split convolutions.", layers: [.conv, .basicBlock],
                                        shown: "none (`asym.rank`)"))
        try r.finish()
        if kernel < 1 || stride < 1 || padding < 0 {
            throw ConfigError("\(r.path): layer '\(name)' needs kernel >= 1, stride >= 1, padding >= 0")
        }
    }
}

// MARK: - Writing the resolved config back as YAML

extension Config {
    /// The full resolved config as YAML (every default written out).
    package var yaml: String {
        func s(_ v: String) -> Node { Node(v) }
        func n(_ v: Int) -> Node { Node(String(v)) }
        func f(_ v: Double) -> Node { Node(String(v)) }
        func b(_ v: Bool) -> Node { Node(v ? "true" : "false") }
        func list(_ v: [Node]) -> Node { Node(v, .implicit, .flow) }
        func map(_ pairs: [(String, Node?)]) -> Node {
            Node(pairs.compactMap { k, v in v.map { (Node(k), $0) } })
        }
        var dataPairs: [(String, Node?)] = [
            ("dataset", s(data.dataset.rawValue)), ("path", data.path.map(s)), ("batch_size", n(data.batchSize)),
            ("shuffle", b(data.shuffle)), ("train_samples", data.trainSamples.map(n)),
            ("augment", map([("random_crop", n(data.augment.randomCrop)), ("horizontal_flip", b(data.augment.horizontalFlip))])),
        ]
        if let mean = data.normalizeMean, let std = data.normalizeStd {
            dataPairs.append(("normalize", mean.count == 1 ? list([f(mean[0]), f(std[0])])
                              : list([list(mean.map(f)), list(std.map(f))])))
        }
        if data.dataset == .npz {
            dataPairs.append(("layout", s(data.layout.rawValue)))
        }
        if data.dataset == .synthetic {
            dataPairs += [("synthetic_train", n(data.syntheticTrain)), ("synthetic_test", n(data.syntheticTest)),
                          ("classes", n(data.classes))]
        }
        let layers = model.layers.map { l -> Node in
            var p: [(String, Node?)] = [("name", s(l.name)), ("type", s(l.type.rawValue))]
            switch l.type {
            case .conv, .basicBlock:
                p += [("out", n(l.out)), ("kernel", n(l.kernel)), ("stride", n(l.stride))]
                if l.type == .conv { p += [("padding", n(l.padding)), ("bias", b(l.bias))] }
            case .linear: p += [("in", l.inFeatures.map(n)), ("out", n(l.out)), ("bias", b(l.bias))]
            case .maxpool, .avgpool: p += [("kernel", n(l.kernel)), ("stride", n(l.stride))]
            default: break
            }
            p += [("placement", l.placement.map { s($0.rawValue) }), ("rank", l.rank.map(n))]
            return Node(map(p).mapping!.map { $0 }, .implicit, .flow)
        }
        let sched = optimizer.schedule
        var schedPairs: [(String, Node?)] = [("type", s(sched.type.rawValue))]
        if sched.type == .step { schedPairs += [("step_epochs", n(sched.stepEpochs)), ("gamma", f(sched.gamma))] }
        if sched.type == .cosine { schedPairs += [("min_lr", f(sched.minLR))] }
        let o = optimizer
        // Each optimizer's own keys only (validate() refuses the other's away from their defaults).
        let optimizerPairs: [(String, Node?)] = o.type == .sgd
            ? [("type", s(o.type.rawValue)), ("lr", f(o.lr)), ("momentum", f(o.momentum)), ("dampening", f(o.dampening)),
               ("weight_decay", f(o.weightDecay)), ("nesterov", b(o.nesterov)), ("schedule", map(schedPairs))]
            : [("type", s(o.type.rawValue)), ("lr", f(o.lr)), ("betas", list([f(o.beta1), f(o.beta2)])), ("eps", f(o.eps)),
               ("weight_decay", f(o.weightDecay)), ("schedule", map(schedPairs))]
        let root = map([
            ("name", s(name)), ("seed", n(seed)),
            ("data", map(dataPairs)),
            ("model", map([("input", list(model.input.map(n))), ("init", s(model.initScheme.rawValue)), ("layers", Node(layers))])),
            ("optimizer", map(optimizerPairs)),
            ("train", map([("epochs", n(train.epochs)), ("max_steps", train.maxSteps.map(n)),
                           ("checkpoint_every", n(train.checkpointEvery)), ("checkpoint_epochs", b(train.checkpointEpochs)),
                           ("keep", n(train.keep)),
                           ("log_every", n(train.logEvery)), ("eval_every", n(train.evalEvery)),
                           ("threads", n(train.threads))])),
            ("asym", map([("mode", s(asym.mode.rawValue)),
                          ("rank", map([("policy", s(asym.rank.policy.rawValue)), ("value", n(asym.rank.value)),
                                        ("max", n(asym.rank.max)), ("tau", f(asym.rank.tau))])),
                          ("svd_iterations", n(asym.svdIterations)), ("basis", s(asym.basis.rawValue)),
                          ("mask", map([("inputs_per_group", n(asym.maskGroup)), ("noise_scale", f(asym.maskNoise)),
                                        ("spread", b(asym.maskSpread))])),
                          ("residual_noise", map([("std", f(asym.noiseStd)), ("clip", f(asym.noiseClip))])),
                          ("verify", b(asym.verify)), ("on_verify_failure", s(asym.onVerifyFailure.rawValue)),
                          ("microbatches", n(asym.microbatches)),
                          ("audit", b(asym.audit)), ("audit_dir", s(asym.auditDir))])),
            ("cluster", map([("trusted", n(cluster.trusted)), ("timeout_s", f(cluster.timeoutSeconds)),
                             ("encrypt", b(cluster.encrypt)), ("key_file", cluster.keyFile.map(s))])),
        ])
        return (try? Yams.serialize(node: root, sortKeys: false)) ?? ""
    }
}
