import Foundation
import Yams

/// The resolved configuration of a run: the YAML file, then `--set` overrides, then defaults.
/// `yaml` writes it back out in full, so a run folder records exactly what ran.
public struct Config: Equatable {
    public var name = "run"
    public var seed = 0
    public var data = DataConfig()
    public var model = ModelConfig()
    public var optimizer = OptimizerConfig()
    public var train = TrainConfig()
    public var asym = AsymConfig()
    public var cluster = ClusterConfig()

    public init() {}
}

public struct DataConfig: Equatable {
    public static let datasets = ["fashion-mnist", "cifar10", "synthetic"]
    public var dataset = "synthetic"
    /// Folder of the data files; nil means the dataset's default location.
    public var path: String?
    /// The global batch size (summed over all trusted ranks).
    public var batchSize = 64
    public var shuffle = true
    /// [mean, std] for all channels, or [[means...], [stds...]] per channel; nil: pixel/255.
    public var normalizeMean: [Double]?
    public var normalizeStd: [Double]?
    /// Sizes of the synthetic set.
    public var syntheticTrain = 4096
    public var syntheticTest = 1024
    public var classes = 10
}

public struct ModelConfig: Equatable {
    /// Per-sample input shape [C, H, W].
    public var input = [1, 28, 28]
    public var layers: [LayerSpec] = []
    /// Weight initialisation: `kaiming_uniform` (PyTorch's default) or `kaiming_normal`.
    public var initScheme = "kaiming_uniform"
}

/// One entry of `model.layers`.
public struct LayerSpec: Equatable {
    public static let types = ["conv", "linear", "relu", "maxpool", "avgpool", "global_avgpool",
                               "flatten", "batchnorm", "basic_block"]
    public var name: String
    public var type: String
    /// Output channels (conv, basic_block) or features (linear).
    public var out = 0
    /// Declared input features of a linear layer (checked against the shape that flows in).
    public var inFeatures: Int?
    public var kernel = 3
    public var stride = 1
    public var padding = 0
    public var bias = true
    /// `trusted` or `split`: overrides the placement rule (asym mode).
    public var placement: String?
    /// Per-layer rank override for split convolutions.
    public var rank: Int?

    public init(name: String, type: String, out: Int = 0, kernel: Int = 3, stride: Int = 1, padding: Int = 0) {
        self.name = name; self.type = type; self.out = out
        self.kernel = kernel; self.stride = stride; self.padding = padding
    }
}

public struct OptimizerConfig: Equatable {
    public var type = "sgd"
    public var lr = 0.01
    public var momentum = 0.0
    public var dampening = 0.0
    public var weightDecay = 0.0
    public var nesterov = false
    public var schedule = ScheduleConfig()
}

public struct ScheduleConfig: Equatable {
    public static let types = ["constant", "step", "cosine"]
    public var type = "constant"
    /// Step schedule: multiply the rate by `gamma` every `stepEpochs` epochs.
    public var stepEpochs = 1
    public var gamma = 0.1
    /// Cosine schedule: the rate at the last step.
    public var minLR = 0.0

    public init() {}
}

public struct TrainConfig: Equatable {
    public var epochs = 1
    /// Stop after this many steps (nil: run all epochs). 0 writes the initial checkpoint only.
    public var maxSteps: Int?
    /// Write a checkpoint every N steps (0: only when training ends).
    public var checkpointEvery = 0
    /// How many checkpoint files to keep.
    public var keep = 3
    /// Print and log a training line every N steps.
    public var logEvery = 50
    /// Evaluate on the test set every N steps (0: at the end of each epoch).
    public var evalEvery = 0
    /// OpenBLAS and kernel threads per rank (0: all cores of the machine).
    public var threads = 0
}

public struct AsymConfig: Equatable {
    public static let modes = ["plain", "tee-only", "asym"]
    public var mode = "plain"
    public var rank = RankConfig()
    public var svdIterations = 2
    public var basis = "sample"
}

public struct RankConfig: Equatable {
    public static let policies = ["fixed", "schedule", "energy"]
    public var policy = "schedule"
    /// fixed: r; schedule: the first split layer's rank, doubled at each split layer.
    public var value = 2
    public var max = 32
    /// energy: the largest residual energy ratio allowed.
    public var tau = 0.1
}

public struct ClusterConfig: Equatable {
    public var trusted = 1
}

extension Config {
    /// Reads a config file, applies `key.path=value` overrides, and validates every key.
    public static func load(path: String, overrides: [String] = []) throws -> Config {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("config \(path): cannot read the file; check the path (configs/ has examples)")
        }
        return try parse(yaml: text, source: path, overrides: overrides)
    }

    public static func parse(yaml text: String, source: String = "config", overrides: [String] = []) throws -> Config {
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

    init(reading r: ConfigReader) throws {
        var r = r
        var c = Config()
        c.name = try r.string("name", c.name)
        c.seed = try r.int("seed", c.seed)

        var d = try r.child("data")
        c.data.dataset = try d.choice("dataset", c.data.dataset, DataConfig.datasets)
        c.data.path = try d.string("path")
        c.data.batchSize = try d.int("batch_size", c.data.batchSize)
        c.data.shuffle = try d.bool("shuffle", c.data.shuffle)
        if let n = d.raw("normalize") {
            (c.data.normalizeMean, c.data.normalizeStd) = try Config.normalization(n)
        }
        c.data.syntheticTrain = try d.int("synthetic_train", c.data.syntheticTrain)
        c.data.syntheticTest = try d.int("synthetic_test", c.data.syntheticTest)
        c.data.classes = try d.int("classes", c.data.classes)
        try d.finish()

        var m = try r.child("model")
        if let input = try m.ints("input") { c.model.input = input }
        c.model.initScheme = try m.choice("init", c.model.initScheme, Initializer.schemes)
        c.model.layers = try m.list("layers").enumerated().map { i, l in try LayerSpec(reading: l, index: i) }
        try m.finish()

        var o = try r.child("optimizer")
        c.optimizer.type = try o.choice("type", c.optimizer.type, ["sgd"])
        c.optimizer.lr = try o.float("lr", c.optimizer.lr)
        c.optimizer.momentum = try o.float("momentum", c.optimizer.momentum)
        c.optimizer.dampening = try o.float("dampening", c.optimizer.dampening)
        c.optimizer.weightDecay = try o.float("weight_decay", c.optimizer.weightDecay)
        c.optimizer.nesterov = try o.bool("nesterov", c.optimizer.nesterov)
        if let s = o.raw("schedule") {
            if let name = s.string {
                var one = try ConfigReader(Node([(Node("type"), Node(name))]), path: "optimizer.schedule")
                c.optimizer.schedule = try ScheduleConfig(reading: &one)
            } else {
                var sr = try ConfigReader(s, path: "optimizer.schedule")
                c.optimizer.schedule = try ScheduleConfig(reading: &sr)
            }
        }
        try o.finish()

        var t = try r.child("train")
        c.train.epochs = try t.int("epochs", c.train.epochs)
        c.train.maxSteps = try t.int("max_steps")
        c.train.checkpointEvery = try t.int("checkpoint_every", c.train.checkpointEvery)
        c.train.keep = try t.int("keep", c.train.keep)
        c.train.logEvery = try t.int("log_every", c.train.logEvery)
        c.train.evalEvery = try t.int("eval_every", c.train.evalEvery)
        c.train.threads = try t.int("threads", c.train.threads)
        try t.finish()

        var a = try r.child("asym")
        c.asym.mode = try a.choice("mode", c.asym.mode, AsymConfig.modes)
        c.asym.svdIterations = try a.int("svd_iterations", c.asym.svdIterations)
        c.asym.basis = try a.choice("basis", c.asym.basis, ["sample", "batch"])
        if let rn = a.raw("rank") {
            if let v = rn.int {
                c.asym.rank.policy = "fixed"; c.asym.rank.value = v; c.asym.rank.max = max(c.asym.rank.max, v)
            } else {
                var rr = try ConfigReader(rn, path: "asym.rank")
                c.asym.rank.policy = try rr.choice("policy", c.asym.rank.policy, RankConfig.policies)
                c.asym.rank.value = try rr.int("value", c.asym.rank.value)
                c.asym.rank.max = try rr.int("max", c.asym.rank.max)
                c.asym.rank.tau = try rr.float("tau", c.asym.rank.tau)
                try rr.finish()
            }
        }
        try a.finish()

        var cl = try r.child("cluster")
        c.cluster.trusted = try cl.int("trusted", c.cluster.trusted)
        try cl.finish()
        try r.finish()
        try c.validate()
        self = c
    }

    /// `[mean, std]` or `[[means], [stds]]`.
    private static func normalization(_ n: Node) throws -> ([Double], [Double]) {
        let bad = ConfigError("data.normalize: expected [mean, std] or [[means...], [stds...]]")
        guard let seq = n.sequence, seq.count == 2 else { throw bad }
        func values(_ x: Node) throws -> [Double] {
            if let v = x.float { return [v] }
            guard let s = x.sequence else { throw bad }
            return try s.map { guard let v = $0.float else { throw bad }; return v }
        }
        return (try values(seq[0]), try values(seq[1]))
    }

    /// Checks that do not need the model's shapes (those are checked when it is built).
    func validate() throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw ConfigError(message) } }
        try check(data.batchSize > 0, "data.batch_size: must be positive, got \(data.batchSize)")
        try check(data.syntheticTrain > 0 && data.syntheticTest > 0, "data.synthetic_train/synthetic_test: must be positive")
        try check(data.classes > 1, "data.classes: need at least 2 classes")
        try check(model.input.count == 3 && model.input.allSatisfy { $0 > 0 },
                  "model.input: expected [channels, height, width], got \(model.input)")
        if let m = data.normalizeMean, let s = data.normalizeStd {
            try check(m.count == s.count && (m.count == 1 || m.count == model.input[0]),
                      "data.normalize: give one mean and std, or one per input channel (\(model.input[0]))")
            try check(s.allSatisfy { $0 > 0 }, "data.normalize: every std must be positive")
        }
        try check(!model.layers.isEmpty, "model.layers: the model has no layers")
        try check(optimizer.lr > 0, "optimizer.lr: must be positive, got \(optimizer.lr)")
        try check(optimizer.momentum >= 0, "optimizer.momentum: must be >= 0")
        try check(optimizer.weightDecay >= 0, "optimizer.weight_decay: must be >= 0")
        try check(!optimizer.nesterov || (optimizer.momentum > 0 && optimizer.dampening == 0),
                  "optimizer.nesterov: needs momentum > 0 and dampening 0 (as in PyTorch)")
        try check(optimizer.schedule.stepEpochs > 0, "optimizer.schedule.step_epochs: must be positive")
        try check(train.epochs > 0, "train.epochs: must be positive, got \(train.epochs)")
        try check((train.maxSteps ?? 0) >= 0, "train.max_steps: must be >= 0")
        try check(train.checkpointEvery >= 0, "train.checkpoint_every: must be >= 0")
        try check(train.keep > 0, "train.keep: must keep at least 1 checkpoint")
        try check(train.logEvery > 0, "train.log_every: must be positive")
        try check(train.evalEvery >= 0, "train.eval_every: must be >= 0")
        try check(train.threads >= 0, "train.threads: must be >= 0")
        try check(asym.svdIterations >= 1, "asym.svd_iterations: must be at least 1")
        try check(asym.rank.value >= 1 && asym.rank.max >= asym.rank.value, "asym.rank: need 1 <= value <= max")
        try check(asym.rank.tau > 0 && asym.rank.tau < 1, "asym.rank.tau: must lie in (0, 1)")
        try check(cluster.trusted >= 1, "cluster.trusted: need at least one trusted rank")
        try check(data.batchSize % cluster.trusted == 0,
                  "data.batch_size: \(data.batchSize) does not divide among \(cluster.trusted) trusted ranks")
        var names = Set<String>()
        for l in model.layers {
            try check(names.insert(l.name).inserted, "model.layers: the name '\(l.name)' is used twice")
        }
    }
}

extension ScheduleConfig {
    init(reading r: inout ConfigReader) throws {
        self.init()
        type = try r.choice("type", type, ScheduleConfig.types)
        stepEpochs = try r.int("step_epochs", stepEpochs)
        gamma = try r.float("gamma", gamma)
        minLR = try r.float("min_lr", minLR)
        try r.finish()
    }
}

extension LayerSpec {
    init(reading r: ConfigReader, index: Int) throws {
        var r = r
        let type = try r.choice("type", "", LayerSpec.types)
        self.init(name: try r.string("name", "\(type)\(index)"), type: type)
        let needsOut = ["conv", "linear", "basic_block"].contains(type)
        out = try r.int("out", 0)
        if needsOut && out <= 0 { throw ConfigError("\(r.path).out: \(type) '\(name)' needs a positive 'out'") }
        inFeatures = try r.int("in")
        let defaultKernel = type == "maxpool" || type == "avgpool" ? 2 : 3
        kernel = try r.int("kernel", defaultKernel)
        stride = try r.int("stride", type == "maxpool" || type == "avgpool" ? kernel : 1)
        padding = try r.int("padding", 0)
        bias = try r.bool("bias", true)
        placement = try r.string("placement")
        if let p = placement, !["trusted", "split"].contains(p) {
            throw ConfigError("\(r.path).placement: '\(p)' is not accepted; use one of: trusted, split (no layer runs on the untrusted side alone: it would see raw inputs)")
        }
        rank = try r.int("rank")
        try r.finish()
        if kernel < 1 || stride < 1 || padding < 0 {
            throw ConfigError("\(r.path): layer '\(name)' needs kernel >= 1, stride >= 1, padding >= 0")
        }
    }
}

// MARK: - Writing the resolved config back as YAML

extension Config {
    /// The full resolved config as YAML (every default written out).
    public var yaml: String {
        func s(_ v: String) -> Node { Node(v) }
        func n(_ v: Int) -> Node { Node(String(v)) }
        func f(_ v: Double) -> Node { Node(String(v)) }
        func b(_ v: Bool) -> Node { Node(v ? "true" : "false") }
        func list(_ v: [Node]) -> Node { Node(v, .implicit, .flow) }
        func map(_ pairs: [(String, Node?)]) -> Node {
            Node(pairs.compactMap { k, v in v.map { (Node(k), $0) } })
        }
        var dataPairs: [(String, Node?)] = [
            ("dataset", s(data.dataset)), ("path", data.path.map(s)), ("batch_size", n(data.batchSize)),
            ("shuffle", b(data.shuffle)),
        ]
        if let mean = data.normalizeMean, let std = data.normalizeStd {
            dataPairs.append(("normalize", mean.count == 1 ? list([f(mean[0]), f(std[0])])
                              : list([list(mean.map(f)), list(std.map(f))])))
        }
        if data.dataset == "synthetic" {
            dataPairs += [("synthetic_train", n(data.syntheticTrain)), ("synthetic_test", n(data.syntheticTest)),
                          ("classes", n(data.classes))]
        }
        let layers = model.layers.map { l -> Node in
            var p: [(String, Node?)] = [("name", s(l.name)), ("type", s(l.type))]
            switch l.type {
            case "conv", "basic_block":
                p += [("out", n(l.out)), ("kernel", n(l.kernel)), ("stride", n(l.stride))]
                if l.type == "conv" { p += [("padding", n(l.padding)), ("bias", b(l.bias))] }
            case "linear": p += [("in", l.inFeatures.map(n)), ("out", n(l.out)), ("bias", b(l.bias))]
            case "maxpool", "avgpool": p += [("kernel", n(l.kernel)), ("stride", n(l.stride))]
            default: break
            }
            p += [("placement", l.placement.map(s)), ("rank", l.rank.map(n))]
            return Node(map(p).mapping!.map { $0 }, .implicit, .flow)
        }
        let sched = optimizer.schedule
        var schedPairs: [(String, Node?)] = [("type", s(sched.type))]
        if sched.type == "step" { schedPairs += [("step_epochs", n(sched.stepEpochs)), ("gamma", f(sched.gamma))] }
        if sched.type == "cosine" { schedPairs += [("min_lr", f(sched.minLR))] }
        let root = map([
            ("name", s(name)), ("seed", n(seed)),
            ("data", map(dataPairs)),
            ("model", map([("input", list(model.input.map(n))), ("init", s(model.initScheme)), ("layers", Node(layers))])),
            ("optimizer", map([("type", s(optimizer.type)), ("lr", f(optimizer.lr)), ("momentum", f(optimizer.momentum)),
                               ("dampening", f(optimizer.dampening)), ("weight_decay", f(optimizer.weightDecay)),
                               ("nesterov", b(optimizer.nesterov)), ("schedule", map(schedPairs))])),
            ("train", map([("epochs", n(train.epochs)), ("max_steps", train.maxSteps.map(n)),
                           ("checkpoint_every", n(train.checkpointEvery)), ("keep", n(train.keep)),
                           ("log_every", n(train.logEvery)), ("eval_every", n(train.evalEvery)),
                           ("threads", n(train.threads))])),
            ("asym", map([("mode", s(asym.mode)),
                          ("rank", map([("policy", s(asym.rank.policy)), ("value", n(asym.rank.value)),
                                        ("max", n(asym.rank.max)), ("tau", f(asym.rank.tau))])),
                          ("svd_iterations", n(asym.svdIterations)), ("basis", s(asym.basis))])),
            ("cluster", map([("trusted", n(cluster.trusted))])),
        ])
        return (try? Yams.serialize(node: root, sortKeys: false)) ?? ""
    }
}
