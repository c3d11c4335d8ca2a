import AsymModel
import AsymData
import AsymKernels
import AsymIntegrity
import AsymSplit
import AsymPrivacy
import Foundation

/// Where training stands: enough to continue bit-exactly (with the model and optimizer).
package struct TrainingPosition: Equatable {
    /// Optimizer steps taken so far.
    package var step = 0
    /// Samples of the training set consumed so far.
    package var samplesSeen: Int64 = 0

    package init(step: Int = 0, samplesSeen: Int64 = 0) { self.step = step; self.samplesSeen = samplesSeen }
}

/// An untrusted result that failed its integrity check (`asym.verify`, policy abort).
package struct IntegrityError: Error, CustomStringConvertible {
    package let description: String
}

/// Training that cannot go on as configured (a loss that is no longer finite).
package struct TrainingError: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}

/// Evaluation result over a whole split.
package struct Evaluation {
    package var loss: Double
    package var accuracy: Double
    package var samples: Int
}

/// Training and evaluation of one model replica.
///
/// The data order depends only on (seed, epoch): step s of the run uses batch s % B of the
/// permutation of epoch s / B (B = batches per epoch), so a run can continue from any step.
/// With several trusted ranks, each takes its contiguous shard of every global batch, and
/// the loss is normalised by the global batch size, so the summed gradients equal those of
/// one process over the global batch, except through batch norm, whose statistics are
/// each rank's own (as in DDP without SyncBatchNorm).
package final class Trainer {
    package let config: Config
    package let model: Model
    package let data: DataSource
    package let order: EpochOrder
    package let optimizer: SGDOptimizer
    package var position = TrainingPosition()
    /// asym mode: the untrusted executor and the split convolutions.
    package private(set) var untrusted: UntrustedExecutor?
    package private(set) var splitLayers: [Conv2dLayer] = []
    private var splitGrads: [Int: Tensor] = [:]
    package let collective: Collective?
    /// Seconds of the last step: total, and the part the untrusted side computed.
    package private(set) var lastStepSeconds = 0.0
    package private(set) var lastUntrustedSeconds = 0.0
    /// The untrusted side's own compute and idle seconds of the last step, when it reports them.
    package private(set) var lastUntrustedLoad: (compute: Double, idle: Double)?

    /// Where the trainer reports what it decided on its own (an excluded untrusted rank).
    package var log: (String) -> Void = { print($0) }
    /// Integrity checks that failed in the current pass (`asym.verify`), handled after it.
    private var integrityFailures: [IntegrityFailure] = []

    /// Samples of each global batch that this replica computes.
    package let localBatch: Int
    private let images: Tensor
    private let labels: UnsafeMutablePointer<Int32>
    /// The gradients packed for their sum across trusted ranks (none with one rank: no sum).
    private let packedGradients: Tensor?

    /// `executor` is the untrusted half in asym mode (default: in this process).
    package init(config: Config, data: DataSource? = nil, collective: Collective? = nil,
                executor: UntrustedExecutor? = nil) throws {
        self.config = config
        self.collective = collective
        // FeatureRules checked that the global batch divides among the trusted ranks.
        let shards = collective?.trustedCount ?? 1
        precondition(config.data.batchSize % shards == 0, "data.batch_size \(config.data.batchSize) across \(shards) trusted ranks")
        model = try Model(config.model)
        guard model.classes == config.data.classes || config.data.dataset != .synthetic else {
            throw ConfigError("model.layers: the last layer has \(model.classes) outputs but data.classes is \(config.data.classes)")
        }
        self.data = try data ?? DataSource(config)
        guard model.classes >= self.data.train.classes else {
            throw ConfigError("model.layers: the last layer has \(model.classes) outputs but \(config.data.dataset.rawValue) has \(self.data.train.classes) classes")
        }
        order = try EpochOrder(count: self.data.train.count, batchSize: config.data.batchSize,
                               seed: UInt64(truncatingIfNeeded: config.seed), shuffle: config.data.shuffle)
        optimizer = SGDOptimizer(config.optimizer, stepsPerEpoch: order.batchesPerEpoch, totalSteps: Trainer.totalSteps(config, order))
        model.initialize(seed: UInt64(truncatingIfNeeded: config.seed), scheme: config.model.initScheme)
        if config.asym.mode == .asym {
            let executor = Trainer.protect(executor ?? LocalUntrusted(), config.asym)
            splitLayers = try model.enableSplit(config, executor: executor)
            splitGrads = Dictionary(uniqueKeysWithValues: splitLayers.enumerated().map { ($0, $1.weight.grad) })
            untrusted = executor
        }
        localBatch = config.data.batchSize / shards
        images = Tensor(shape: [localBatch] + config.model.input)
        labels = .allocate(capacity: max(localBatch, config.data.batchSize))
        packedGradients = shards > 1 ? Tensor(shape: [model.parameterCount]) : nil
        for conv in splitLayers where config.asym.verify {
            conv.split!.failureHandler = { [unowned self] in self.integrityFailures.append($0) }
        }
        masking?.failureHandler = { [unowned self] in self.integrityFailures.append($0) }
    }

    deinit { labels.deallocate() }

    /// The signal that asks training to stop, once any trusted rank received one. Several
    /// trusted ranks agree on it in the last step's sum of loss and accuracy (`agreedStop`),
    /// so that all stop after the same step without a collective of its own.
    package var stopRequested: Int32? { collective == nil ? Interruption.requested : agreedStop }
    /// The stop signal the trusted ranks agreed on at the end of the last step.
    private var agreedStop: Int32?

    /// The untrusted executor behind the privacy layers the config asks for: residual noise
    /// (3LegRace, not exact) on what crosses, then masking (exact) of the noisy residuals.
    package static func protect(_ executor: UntrustedExecutor, _ a: AsymConfig) -> UntrustedExecutor {
        var e = executor
        if a.noiseStd > 0 { e = ResidualNoiseExecutor(wrapping: e, std: Float(a.noiseStd), clip: Float(a.noiseClip)) }
        if a.maskGroup > 0 {
            // With masking the checks run in the masking layer, on the combinations as they
            // crossed (the split layers see decoded results, which carry the decode's rounding).
            e = MaskingExecutor(wrapping: e, groupSize: a.maskGroup, noiseScale: Float(a.maskNoise), spread: a.maskSpread,
                                checks: a.verify ? a.integrityPolicy : nil)
        }
        return e
    }

    /// For an untrusted side that keeps no reference to what it receives (MPI): the split
    /// layers write R into the model's arena, and the masking layer shares its message buffers
    /// between layers.
    package func messagesLeave() {
        masking?.messagesLeave = true
        // Under `recompute` a masked run may lose its spread group and compute the split
        // layers on this rank, whose in-process untrusted half keeps each R until backward.
        // (Unmasked, the split layers' own checker keeps R under `recompute`.)
        if masking != nil && config.asym.verify && config.asym.onVerifyFailure == .recompute { return }
        model.residualsLeave()
    }

    /// The masking layer, when the config asks for one.
    private var masking: MaskingExecutor? { untrusted as? MaskingExecutor }

    static func totalSteps(_ c: Config, _ o: EpochOrder) -> Int {
        let all = c.train.epochs * o.batchesPerEpoch
        return min(all, c.train.maxSteps ?? all)
    }

    package var totalSteps: Int { Trainer.totalSteps(config, order) }

    /// The epoch that step `step` belongs to.
    package func epoch(ofStep step: Int) -> Int { step / order.batchesPerEpoch }

    private var cachedPermutation: (epoch: Int, perm: [Int32])?

    /// Loads this replica's shard of the global batch of step `step` into the input buffers.
    func loadBatch(step: Int) {
        let e = epoch(ofStep: step)
        if cachedPermutation?.epoch != e { cachedPermutation = (e, order.permutation(epoch: e)) }
        let global = order.batch(cachedPermutation!.perm, index: step % order.batchesPerEpoch)
        let start = global.startIndex + (collective?.trustedIndex ?? 0) * localBatch
        data.gatherTraining(indices: global[start..<(start + localBatch)], epoch: e, images: images.data, labels: labels)
    }

    /// One optimizer step on the next global batch. Returns its mean loss and accuracy.
    @discardableResult
    package func step() throws -> (loss: Double, accuracy: Double) {
        let batch = config.data.batchSize
        _ = untrusted?.takeComputeSeconds()  // drop what evaluation spent since the last step
        let t0 = DispatchTime.now().uptimeNanoseconds
        loadBatch(step: position.step)
        model.zeroGradients()
        let (lossSum, correct) = model.trainingPass(images: images, labels: labels, batch: localBatch, normalizer: batch)
        let lr = optimizer.learningRate(step: position.step)
        // The untrusted weight-gradient shares reach this rank, and are checked, before any sum.
        try untrusted?.addGradientShares(into: splitGrads, verifiedBy: splitConvolutions)
        try handleIntegrityFailures(batch: localBatch)
        if let collective, let packedGradients {
            try model.parameters.map(\.grad).withPacked(packedGradients) { try collective.sumGradients($0, count: $1) }
        }
        optimizer.apply(learningRate: lr, to: model.parameters)
        position.step += 1
        position.samplesSeen += Int64(batch)
        // The untrusted side computes the next step with the new weights of its layers.
        try untrusted?.publishWeights()
        lastUntrustedSeconds = untrusted?.takeComputeSeconds() ?? 0
        lastUntrustedLoad = untrusted?.untrustedLoad
        lastStepSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        try collective?.stepApplied(step: position.step, parameters: model.parameters)
        model.profile?.endStep(trustedSeconds: lastStepSeconds - lastUntrustedSeconds)
        if let collective {
            let local = Interruption.requested
            let sums = try collective.sumOverTrusted([lossSum, Double(correct), local.map(Double.init) ?? 0, local == nil ? 0 : 1])
            agreedStop = sums[3] > 0 ? local ?? Int32(sums[2] / sums[3]) : nil
            return (sums[0] / Double(batch), sums[1] / Double(batch))
        }
        return (lossSum / Double(batch), Double(correct) / Double(batch))
    }

    /// With `asym.verify`: per check, the largest discrepancy / allowed seen over every split
    /// layer so far (how close honest results came to a false alarm; a failure shows > 1).
    package var integrityHeadroom: [IntegrityCheck: Float] {
        var worst: [IntegrityCheck: Float] = [:]
        let checked = splitLayers.map { $0.split?.checker?.highestRatio ?? [:] } + [masking?.highestRatio ?? [:]]
        for ratios in checked {
            for (check, ratio) in ratios { worst[check] = max(worst[check] ?? 0, ratio) }
        }
        return worst
    }

    /// The split layers' trusted halves by split-layer index.
    private var splitConvolutions: [Int: SplitConvolution] {
        Dictionary(uniqueKeysWithValues: splitLayers.map { ($0.split!.info.layer, $0.split!) })
    }

    /// After a pass: under `asym.on_verify_failure: abort` the first failed check ends the run,
    /// naming who computed the result; under `recompute` the result was already recomputed
    /// here, and whoever computed it is excluded for the rest of the run.
    private func handleIntegrityFailures(batch: Int) throws {
        guard !integrityFailures.isEmpty, let untrusted else { return }
        let failures = integrityFailures
        integrityFailures.removeAll()
        // Who computed each result is read before anyone is excluded (exclusion reshards).
        let culprits = failures.map { f in
            let sample = f.samples?.lowerBound ?? f.index / splitLayers[f.layer].split!.positions(of: f.check)
            return (f, sample, untrusted.source(ofSample: sample, batch: batch))
        }
        for (f, _, source) in culprits {
            let what = "\(source), step \(position.step): \(f)"
            guard config.asym.onVerifyFailure == .recompute else { throw IntegrityError(description: what) }
            log("recomputed on the trusted side: \(what)")
        }
        log(try untrusted.exclude(sourcesOfSamples: culprits.map(\.1), batch: batch))
    }

    /// Makes batch norm's running statistics agree on every trusted rank (their mean over the
    /// ranks), then checks that the replicas hold the same parameters and statistics. Each
    /// rank normalises with its own batch (as DDP does without SyncBatchNorm), so the running
    /// statistics drift apart between synchronisations; evaluation and checkpoints need them
    /// equal.
    package func synchronizeReplicas() throws {
        guard let collective, collective.trustedCount > 1 else { return }
        let buffers = model.leaves.flatMap(\.buffers).map(\.value)
        if !buffers.isEmpty {
            let packed = Tensor(shape: [buffers.map(\.count).reduce(0, +)])
            packed.pack(buffers)
            try collective.sumOverTrusted(packed.data, count: packed.count)
            let ranks = Float(collective.trustedCount)
            for i in 0..<packed.count { packed[i] /= ranks }
            packed.unpack(into: buffers)
        }
        try collective.checkReplicas(model.parameters.map(\.value) + buffers, what: "parameters and batch-norm statistics at step \(position.step)")
    }

    /// Rows that cross per sample: masking sends a group of K as 3K combinations with spread,
    /// as K + 2 without.
    private var rowsPerSample: Double {
        let a = config.asym
        return a.maskGroup == 0 ? 1 : SplitCost.Masking(groupSize: a.maskGroup, spread: a.maskSpread, members: 1).rows
    }

    /// Bytes sent to the untrusted side per step: residuals forward, output gradients backward
    /// (masked combinations where masking is on).
    package var bytesToUntrustedPerStep: Int {
        splitLayers.map { Int(rowsPerSample * Double(4 * localBatch * ($0.geometry.inputSize + $0.geometry.outputSize))) }.reduce(0, +)
    }

    /// Bytes returned per step: the outputs and input gradients of what crossed, and the
    /// weight-gradient shares: one per member (twice as wide with spread, which returns a
    /// low-order part), or one per combination without spread.
    package var bytesFromUntrustedPerStep: Int {
        let a = config.asym, members = untrusted?.members ?? 1, rows = rowsPerSample * Double(localBatch)
        return splitLayers.map { l -> Int in
            let g = l.geometry
            let shares = a.maskGroup == 0 ? members : a.maskSpread ? 2 * members : Int(rows.rounded())
            return Int(rows * Double(4 * (g.outputSize + g.inputSize))) + 4 * shares * g.weightCount
        }.reduce(0, +)
    }

    /// ||R||^2 / ||X||^2 of every split layer in the last forward pass, by layer name.
    package var residualEnergies: [(String, Double)] {
        splitLayers.map { ($0.name, $0.split!.lastResidualEnergy) }
    }

    /// Loss and accuracy over every sample of `split`; with several trusted ranks each
    /// evaluates its share and the sums are combined.
    package func evaluate(_ split: Dataset) throws -> Evaluation {
        var lossSum = 0.0, correct = 0.0
        var buffer: Tensor?
        let shards = collective?.trustedCount ?? 1, index = collective?.trustedIndex ?? 0
        let lo = split.count * index / shards, hi = split.count * (index + 1) / shards
        for batch in try evaluationBatches(count: hi - lo, batchSize: config.data.batchSize) {
            let n = batch.count
            let x = Tensor.reuse(buffer, shape: [n] + config.model.input)
            buffer = x
            split.gather(indices: (batch.lowerBound + Int32(lo))..<(batch.upperBound + Int32(lo)), images: x.data, labels: labels)
            let logits = model.forward(x, batch: n, training: false)
            try handleIntegrityFailures(batch: n)
            let r = softmaxCrossEntropy(logits: logits.data, labels: labels, batch: n, classes: model.classes,
                                        normalizer: n, dLogits: nil)
            lossSum += r.lossSum
            correct += Double(r.correct)
        }
        if let collective { (lossSum, correct) = try collective.sumOverTrusted([lossSum, correct]).pair }
        return Evaluation(loss: lossSum / Double(split.count), accuracy: correct / Double(split.count), samples: split.count)
    }
}

extension Array where Element == Double {
    var pair: (Double, Double) { (self[0], self[1]) }
}

extension Array where Element == Tensor {
    /// Packs every tensor into `packed`, runs `body` on it, and unpacks the result: one
    /// collective for all (small tensors would each pay the latency).
    package func withPacked(_ packed: Tensor, _ body: (UnsafeMutablePointer<Float>, Int) throws -> Void) rethrows {
        packed.pack(self)
        try body(packed.data, packed.count)
        packed.unpack(into: self)
    }
}
