import AsymModel
import AsymHDF5
import AsymKernels
import Foundation

/// A checkpoint that cannot be used: corrupt, truncated, or not matching the config.
package struct CheckpointError: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}

/// Who trained: written to the `world` attribute as JSON.
package struct WorldInfo: Equatable {
    package var trusted: Int, untrusted: Int, mode: Mode
    package init(trusted: Int, untrusted: Int, mode: Mode) {
        self.trusted = trusted; self.untrusted = untrusted; self.mode = mode
    }
    package var json: String { "{\"trusted\": \(trusted), \"untrusted\": \(untrusted), \"mode\": \"\(mode.rawValue)\"}" }
}

package let softwareVersion = "asymml-swift 0.1.0"

/// The HDF5 checkpoint layout of docs/DESIGN.md §5 (a contract): PyTorch tensor layouts under
/// `/model/<layer>/<param>`, the optimizer state under `/optimizer/<layer>/<param>` (SGD: the
/// momentum buffer; AdamW: a group of `exp_avg` and `exp_avg_sq`, with `/state/adamw_step`),
/// and what else a bit-exact continuation needs under `/state`.
package enum Checkpoint {
    package static let format = "asymml-checkpoint"
    package static let formatVersion: Int64 = 1

    /// Writes the trainer's full state to `path` (not atomically: see `CheckpointStore`).
    package static func write(_ t: Trainer, world: WorldInfo, to path: String) throws {
        let f = try HDF5File.create(path: path)
        let p = t.position
        try f.setAttribute("format", string: format)
        try f.setAttribute("format_version", int64: formatVersion)
        try f.setAttribute("step", int64: Int64(p.step))
        try f.setAttribute("epoch", int64: Int64(t.epoch(ofStep: p.step)))
        try f.setAttribute("samples_seen", int64: p.samplesSeen)
        try f.setAttribute("config", string: t.config.yaml)
        try f.setAttribute("world", string: world.json)
        try f.setAttribute("software_version", string: softwareVersion)
        for tensor in modelTensors(t.model) { try write(f, tensor) }
        for layer in t.model.leaves {
            for param in layer.parameters {
                try writeOptimizerState(f, "/optimizer/\(layer.name)/\(param.name)", of: param, adamW: t.optimizer.adamW)
            }
        }
        let momentumReady = t.model.parameters.allSatisfy(\.hasMomentum)
        try f.writeInt64s("/state/step", shape: [], values: [Int64(p.step)])
        try f.writeInt64s("/state/samples_seen", shape: [], values: [p.samplesSeen])
        try f.writeInt64s("/state/seed", shape: [], values: [Int64(t.config.seed)])
        // The data order is a function of (seed, epoch); epoch and cursor locate the next batch.
        try f.writeInt64s("/state/data_epoch", shape: [], values: [Int64(t.epoch(ofStep: p.step))])
        try f.writeInt64s("/state/data_cursor", shape: [], values: [Int64(p.step % t.order.batchesPerEpoch)])
        try f.writeInt64s("/state/momentum_initialized", shape: [], values: [momentumReady ? 1 : 0])
        if let adamW = t.optimizer.adamW {
            try f.writeInt64s("/state/adamw_step", shape: [], values: [Int64(adamW.steps)])
        }
        // asym.basis: batch warm-starts each step's basis from the last one (rank 0's here).
        for conv in t.splitLayers {
            if let w = conv.split?.warmBasis {
                try f.writeFloats("/state/warm_basis/\(conv.name)", shape: w.shape, values: UnsafeBufferPointer(w.buffer))
            }
        }
        try f.flush()
        try f.close()
    }

    /// SGD's momentum buffer as the dataset `path`, or AdamW's moments as `path/exp_avg` and
    /// `path/exp_avg_sq` (PyTorch's state names); which one a file holds, `/state/adamw_step` tells.
    private static func writeOptimizerState(_ f: HDF5File, _ path: String, of param: Parameter, adamW: AdamWState?) throws {
        guard let adamW else {
            try f.writeFloats(path, shape: param.momentum.shape, values: UnsafeBufferPointer(param.momentum.buffer))
            return
        }
        let m = adamW.moments(of: param)
        try f.writeFloats("\(path)/exp_avg", shape: m.expAvg.shape, values: UnsafeBufferPointer(m.expAvg.buffer))
        try f.writeFloats("\(path)/exp_avg_sq", shape: m.expAvgSq.shape, values: UnsafeBufferPointer(m.expAvgSq.buffer))
    }

    /// What a checkpoint says about itself, read without loading tensors.
    package struct Header {
        package var step: Int64, epoch: Int64, samplesSeen: Int64
        package var config: String, world: String, softwareVersion: String
    }

    package static func header(_ f: HDF5File) throws -> Header {
        if let problem = formatProblem(f) { throw CheckpointError("\(f.path): \(problem)") }
        return Header(step: try f.int64Attribute("step"), epoch: try f.int64Attribute("epoch"),
                      samplesSeen: try f.int64Attribute("samples_seen"), config: try f.stringAttribute("config"),
                      world: try f.stringAttribute("world"), softwareVersion: try f.stringAttribute("software_version"))
    }

    /// Why `f` is not a checkpoint this build reads (its format or version), or nil.
    package static func formatProblem(_ f: HDF5File) -> String? {
        guard (try? f.stringAttribute("format")) == format else {
            return "not an asymml checkpoint (no format = \"\(format)\" attribute)"
        }
        let version = try? f.int64Attribute("format_version")
        guard version == formatVersion else {
            return "checkpoint format version \(version.map(String.init) ?? "missing"); this build reads version \(formatVersion)"
        }
        return nil
    }

    /// Checks a checkpoint without a model: its header and every dataset's crc32. Returns each
    /// dataset with its shape and stored crc32, in file order.
    @discardableResult
    package static func verify(_ path: String) throws -> [(dataset: String, shape: [Int], crc32: Int64)] {
        let f: HDF5File
        do { f = try HDF5File.open(path: path) } catch { throw CheckpointError("checkpoint \(path): cannot open it: \(error)") }
        defer { try? f.close() }
        _ = try header(f)
        do {
            return try datasets(f).map { p in
                try f.verifyChecksum(p)
                return (p, try f.datasetShape(p), try f.int64Attribute("crc32", at: p))
            }
        } catch let e as HDF5Error { throw CheckpointError("checkpoint \(path): \(e)") }
    }

    /// Every dataset of the file, groups walked depth first in file order.
    package static func datasets(_ f: HDF5File, under group: String = "/") throws -> [String] {
        try f.listChildren(group).flatMap { child -> [String] in
            let p = group == "/" ? "/\(child)" : "\(group)/\(child)"
            return try f.kind(of: p) == .group ? try datasets(f, under: p) : [p]
        }
    }

    /// Why a checkpoint is loaded: resuming training must keep what counts steps (the batch
    /// size); evaluating reads the model alone and takes any batch size.
    package enum Purpose { case resume, evaluate }

    /// Restores `t` from `path`, checking the format, every dataset's crc32 and every shape
    /// against the model. Returns notes on accepted config differences (e.g. a new lr).
    @discardableResult
    package static func load(_ path: String, into t: Trainer, for purpose: Purpose = .resume) throws -> [String] {
        let (position, notes) = try load(path, model: t.model, config: t.config, adamW: t.optimizer.adamW, for: purpose)
        t.position = position
        return notes
    }

    /// Restores a model replica and, to resume, its optimizer state (what every rank holds)
    /// from `path`: SGD's momentum lives in the parameters, AdamW's moments in `adamW` (nil:
    /// not restored).
    package static func load(_ path: String, model: Model, config: Config, adamW: AdamWState? = nil,
                             for purpose: Purpose = .resume) throws -> (TrainingPosition, [String]) {
        let f: HDF5File
        do { f = try HDF5File.open(path: path) } catch {
            throw CheckpointError("checkpoint \(path): cannot open it: \(error)")
        }
        let h = try header(f)
        let saved: Config
        do { saved = try Config.parse(yaml: h.config, source: "\(path) config attribute") } catch {
            throw CheckpointError("\(path): its stored config does not parse: \(error)")
        }
        if saved.model != config.model {
            throw CheckpointError("\(path): the checkpoint's model differs from the config's model (\(modelDifference(saved.model, config.model))); use the config it was trained with")
        }
        guard purpose == .resume else {
            try restoreTensors(f, path: path, model: model)
            try f.close()
            return (TrainingPosition(), [])
        }
        if saved.data.batchSize != config.data.batchSize {
            throw CheckpointError("\(path): data.batch_size changed from \(saved.data.batchSize) to \(config.data.batchSize); the data position and the schedule count steps of the saved batch size, so resume with it")
        }
        var notes = acceptedDifferences(saved, config)
        let position: TrainingPosition
        do {
            notes += try restoreTensors(f, path: path, model: model)
            notes += try restoreOptimizer(f, path: path, model: model, type: config.optimizer.type, adamW: adamW)
            let step = try scalar(f, "/state/step"), samplesSeen = try scalar(f, "/state/samples_seen")
            // Each matches its crc32, but a file written by hand could still hold anything.
            guard step >= 0, samplesSeen >= 0 else {
                throw CheckpointError("\(path): /state holds step \(step), samples_seen \(samplesSeen); a checkpoint needs step >= 0 and samples_seen >= 0")
            }
            position = TrainingPosition(step: Int(step), samplesSeen: samplesSeen)
        } catch let e as HDF5Error {
            throw CheckpointError("checkpoint rejected: \(e)")
        }
        try f.close()
        return (position, notes)
    }

    /// One dataset under `/model` and what it holds in the model: a parameter's or buffer's
    /// float tensor, or a batch-norm layer's step count.
    package struct ModelTensor {
        package enum Target { case floats(Tensor), count(Layer) }
        package let dataset: String, shape: [Int], target: Target
    }

    /// The model's datasets in `write`'s order, layer by layer: parameters, buffers,
    /// num_batches_tracked.
    package static func modelTensors(_ model: Model) -> [ModelTensor] {
        model.leaves.flatMap { layer -> [ModelTensor] in
            let tensors = layer.parameters.map { ($0.name, $0.value) } + layer.buffers.map { ($0.name, $0.value) }
            return tensors.map { ModelTensor(dataset: "/model/\(layer.name)/\($0.0)", shape: $0.1.shape, target: .floats($0.1)) }
                + (layer.batchesTracked == nil ? []
                   : [ModelTensor(dataset: "/model/\(layer.name)/num_batches_tracked", shape: [], target: .count(layer))])
        }
    }

    /// Writes one model dataset from the model.
    static func write(_ f: HDF5File, _ tensor: ModelTensor) throws {
        switch tensor.target {
        case .floats(let t): try f.writeFloats(tensor.dataset, shape: t.shape, values: UnsafeBufferPointer(t.buffer))
        case .count(let layer): try f.writeInt64s(tensor.dataset, shape: [], values: [layer.batchesTracked!])
        }
    }

    /// Reads one model dataset into the model (a float tensor must have the model's shape).
    package static func restore(_ f: HDF5File, path: String, _ tensor: ModelTensor) throws {
        switch tensor.target {
        case .floats(let t): try restore(f, path: path, tensor.dataset, into: t)
        case .count(let layer): layer.batchesTracked = try f.readInt64s(tensor.dataset).values.first
        }
    }

    /// The float32 dataset `dataset` into `tensor`, whose shape it must have.
    private static func restore(_ f: HDF5File, path: String, _ dataset: String, into tensor: Tensor) throws {
        let (shape, values) = try f.readFloats(dataset)
        guard shape == tensor.shape else {
            throw CheckpointError("\(path): \(dataset) has shape \(shape), the model needs \(tensor.shape)")
        }
        values.withUnsafeBufferPointer { tensor.data.update(from: $0.baseAddress!, count: values.count) }
    }

    /// The state of the optimizer `type` (see `writeOptimizerState`). A file that holds the
    /// other optimizer's state restores none, and a note says so: the state starts fresh.
    static func restoreOptimizer(_ f: HDF5File, path: String, model: Model, type: OptimizerType,
                                 adamW: AdamWState?) throws -> [String] {
        let saved: OptimizerType = try f.exists("/state/adamw_step") ? .adamw : .sgd
        guard saved == type else {
            return ["the checkpoint holds \(saved) state but optimizer.type is \(type): \(type) starts from fresh state"]
        }
        switch type {
        case .sgd:
            let momentum = try scalar(f, "/state/momentum_initialized")
            guard momentum == 0 || momentum == 1 else {
                throw CheckpointError("\(path): /state/momentum_initialized is \(momentum); a checkpoint needs 0 or 1")
            }
            for layer in model.leaves {
                for param in layer.parameters {
                    try restore(f, path: path, "/optimizer/\(layer.name)/\(param.name)", into: param.momentum)
                    param.hasMomentum = momentum == 1
                }
            }
        case .adamw:
            guard let adamW else { return [] }
            let steps = try scalar(f, "/state/adamw_step")
            guard steps >= 0 else { throw CheckpointError("\(path): /state/adamw_step is \(steps); a checkpoint needs >= 0") }
            for layer in model.leaves {
                for param in layer.parameters {
                    let m = adamW.moments(of: param), group = "/optimizer/\(layer.name)/\(param.name)"
                    try restore(f, path: path, "\(group)/exp_avg", into: m.expAvg)
                    try restore(f, path: path, "\(group)/exp_avg_sq", into: m.expAvgSq)
                }
            }
            adamW.steps = Int(steps)
        }
        return []
    }

    /// Every model tensor and warm-start basis, checked against the model. Returns notes on
    /// what was not restored.
    @discardableResult
    static func restoreTensors(_ f: HDF5File, path: String, model: Model) throws -> [String] {
        var notes: [String] = []
        do {
            for tensor in modelTensors(model) { try restore(f, path: path, tensor) }
            for case let conv as Conv2dLayer in model.leaves {
                let path = "/state/warm_basis/\(conv.name)"
                guard let split = conv.split, try f.exists(path) else { continue }
                let (shape, values) = try f.readFloats(path)
                // [rank, input channels], as the split's kernels read it (unchecked). Another
                // shape (another asym.rank) only warm-started the basis: the split starts cold.
                let channels = conv.geometry.inChannels, rank = min(split.settings.maxRank, channels)
                guard shape == [rank, channels] else {
                    notes.append("\(path) has shape \(shape), not [\(rank), \(channels)] (asym.rank changed?): not restored, so the continuation is exact only up to float rounding")
                    continue
                }
                split.warmBasis = Tensor(shape: shape, values: values)
            }
        } catch let e as HDF5Error {
            throw CheckpointError("checkpoint rejected: \(e)")
        }
        return notes
    }

    /// The `world` attribute of a checkpoint (JSON: trusted, untrusted, mode).
    package static func savedWorld(_ path: String) throws -> String {
        do { return try header(try HDF5File.open(path: path)).world } catch let e as HDF5Error {
            throw CheckpointError("checkpoint \(path): \(e)")
        }
    }

    /// Whether a resumed run continues bit-exactly: only on the rank layout it was saved with
    /// (and, with a batch basis on several trusted ranks, not even then: the checkpoint holds
    /// rank 0's warm-start basis only).
    package static func layoutNote(_ path: String, _ now: WorldInfo, basis: Basis) throws -> String {
        let saved = try savedWorld(path)
        if saved != now.json {
            return "saved with \(saved), now \(now.json): a different rank layout sums in another order, so the continuation is exact only up to float rounding"
        }
        if basis == .batch && now.mode == .asym && now.trusted > 1 {
            return "same rank layout, but only rank 0's warm-start basis was saved: the split differs on the other trusted ranks (the model is still exact up to float rounding)"
        }
        return "same rank layout: the continuation is bit-exact"
    }

    static func scalar(_ f: HDF5File, _ path: String) throws -> Int64 {
        guard let v = try f.readInt64s(path).values.first else {
            throw CheckpointError("\(f.path): \(path) is empty")
        }
        return v
    }

    static func modelDifference(_ a: ModelConfig, _ b: ModelConfig) -> String {
        if a.input != b.input { return "input \(a.input) vs \(b.input)" }
        if a.layers.count != b.layers.count { return "\(a.layers.count) layers vs \(b.layers.count)" }
        for (x, y) in zip(a.layers, b.layers) where x != y {
            return "layer '\(x.name)' (\(x.type.rawValue), out \(x.out)) vs '\(y.name)' (\(y.type.rawValue), out \(y.out))"
        }
        return "same layers"
    }

    /// Differences that do not change the model's shapes: accepted and logged.
    static func acceptedDifferences(_ saved: Config, _ now: Config) -> [String] {
        var notes: [String] = []
        func note<T: Equatable>(_ key: String, _ a: T, _ b: T) {
            if a != b { notes.append("\(key) changed from \(a) to \(b)") }
        }
        note("optimizer.type", saved.optimizer.type.rawValue, now.optimizer.type.rawValue)
        note("optimizer.lr", saved.optimizer.lr, now.optimizer.lr)
        note("optimizer.momentum", saved.optimizer.momentum, now.optimizer.momentum)
        note("optimizer.weight_decay", saved.optimizer.weightDecay, now.optimizer.weightDecay)
        note("optimizer.betas", [saved.optimizer.beta1, saved.optimizer.beta2], [now.optimizer.beta1, now.optimizer.beta2])
        note("optimizer.eps", saved.optimizer.eps, now.optimizer.eps)
        note("data.augment", "\(saved.data.augment)", "\(now.data.augment)")
        note("optimizer.schedule", saved.optimizer.schedule.type.rawValue, now.optimizer.schedule.type.rawValue)
        note("train.epochs", saved.train.epochs, now.train.epochs)
        note("train.max_steps", saved.train.maxSteps.map(String.init) ?? "none", now.train.maxSteps.map(String.init) ?? "none")
        note("seed", saved.seed, now.seed)
        note("asym.mode", saved.asym.mode.rawValue, now.asym.mode.rawValue)
        return notes
    }
}

/// The checkpoint folder of a run: atomic writes, `latest`, and keeping the newest `keep`.
package struct CheckpointStore {
    package let folder: String
    package let keep: Int

    /// Looks at `folder` (it may not exist yet; `save` creates it).
    package init(folder: String, keep: Int) {
        self.folder = folder
        self.keep = keep
    }

    package static func fileName(step: Int) -> String { String(format: "step-%08d.h5", step) }

    /// Writes atomically: a temporary file in the same folder, fsync, rename over the target,
    /// fsync of the folder. A crash at any point leaves the previous checkpoints intact.
    @discardableResult
    package func save(_ t: Trainer, world: WorldInfo) throws -> String {
        let name = CheckpointStore.fileName(step: t.position.step)
        let target = "\(folder)/\(name)"
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            throw FileError("cannot create \(folder) (\(error.localizedDescription))")
        }
        let temp = "\(folder)/.\(name).tmp-\(getpid())"
        try Checkpoint.write(t, world: world, to: temp)
        try syncFile(temp)
        try renameOrThrow(temp, target)
        try writeAtomically("\(folder)/latest", contents: name + "\n")
        try syncFile(folder)
        prune()
        return target
    }

    /// The checkpoints in the folder, oldest first.
    package func checkpoints() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".h5") }.sorted().map { "\(folder)/\($0)" }
    }

    /// The newest checkpoint that passes `Checkpoint.verify`, starting from the one `latest`
    /// names, with why each newer one was skipped (a truncated or damaged file).
    package func newestValid() -> (path: String?, skipped: [String]) {
        var candidates = checkpoints().reversed().map { $0 }
        if let named = latest(), let i = candidates.firstIndex(of: named) {
            candidates.remove(at: i)
            candidates.insert(named, at: 0)
        }
        var skipped: [String] = []
        for path in candidates {
            do {
                try Checkpoint.verify(path)
                return (path, skipped)
            } catch {
                skipped.append("\(error)")
            }
        }
        return (nil, skipped)
    }

    /// The newest complete checkpoint: the one `latest` names, else the newest file that opens.
    package func latest() -> String? {
        if let name = try? String(contentsOfFile: "\(folder)/latest", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines),
           !name.isEmpty, FileManager.default.fileExists(atPath: "\(folder)/\(name)") {
            return "\(folder)/\(name)"
        }
        return checkpoints().reversed().first { path in
            guard let f = try? HDF5File.open(path: path) else { return false }
            return (try? Checkpoint.header(f)) != nil
        }
    }

    /// Keeps the newest `keep` checkpoints, and removes temporary files that a killed
    /// writer left behind.
    private func prune() {
        let all = checkpoints()
        for old in all.dropLast(keep) { try? FileManager.default.removeItem(atPath: old) }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        for name in names where name.hasPrefix(".step-") && name.contains(".tmp-") {
            try? FileManager.default.removeItem(atPath: "\(folder)/\(name)")
        }
    }

    private func writeAtomically(_ path: String, contents: String) throws {
        let temp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temp, contents: contents.data(using: .utf8)) else {
            throw CheckpointError("\(temp): cannot write")
        }
        try syncFile(temp)
        try renameOrThrow(temp, path)
    }

    private func renameOrThrow(_ from: String, _ to: String) throws {
        guard rename(from, to) == 0 else {
            throw CheckpointError("cannot rename \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }
}

/// fsync of a file or a folder (a folder's fsync makes a rename in it durable).
func syncFile(_ path: String) throws {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw CheckpointError("\(path): cannot open for fsync: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw CheckpointError("\(path): fsync failed: \(String(cString: strerror(errno)))") }
}
