import AsymModel
import AsymData
import AsymKernels
import AsymSplit
import Foundation

/// Where training stands: enough to continue bit-exactly (with the model and optimizer).
package struct TrainingPosition: Equatable {
    /// Optimizer steps taken so far.
    package var step = 0
    /// Samples of the training set consumed so far.
    package var samplesSeen: Int64 = 0

    package init(step: Int = 0, samplesSeen: Int64 = 0) { self.step = step; self.samplesSeen = samplesSeen }
}

/// Evaluation result over a whole split.
package struct Evaluation {
    package var loss: Double
    package var accuracy: Double
    package var samples: Int
}

/// How a trainer takes part in a multi-rank job. One process needs none of it.
package protocol Collective: AnyObject {
    /// This trusted rank's index among the trusted ranks, and their number: it takes shard
    /// `index` of every global batch (and of the test set).
    var trustedIndex: Int { get }
    var trustedCount: Int { get }
    /// Called once the local backward pass is done, before the gradients are summed: the
    /// untrusted ranks learn the step's learning rate and join the reduction.
    func gradientsReady(step: Int, learningRate: Double) throws
    /// Sums the fused gradients across every rank that holds a share of them, in place.
    func sumGradients(_ values: UnsafeMutablePointer<Float>, count: Int) throws
    /// Sums values across the trusted ranks (losses, accuracy counts).
    func sumOverTrusted(_ values: [Double]) throws -> [Double]
    /// Called after every optimizer step; checks now and then that the replicas agree.
    func stepApplied(step: Int, parameters: [Parameter]) throws
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

    /// Samples of each global batch that this replica computes.
    package let localBatch: Int
    private let images: Tensor
    private let labels: UnsafeMutablePointer<Int32>
    private let fusedGradients: Tensor

    /// `executor` is the untrusted half in asym mode (default: in this process).
    package init(config: Config, data: DataSource? = nil, collective: Collective? = nil,
                executor: UntrustedExecutor? = nil) throws {
        self.config = config
        self.collective = collective
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
            let executor = executor ?? LocalUntrusted()
            splitLayers = try model.enableSplit(config, executor: executor)
            splitGrads = Dictionary(uniqueKeysWithValues: splitLayers.enumerated().map { ($0, $1.weight.grad) })
            untrusted = executor
        }
        let shards = collective?.trustedCount ?? 1
        guard config.data.batchSize % shards == 0 else {
            throw ConfigError("data.batch_size: \(config.data.batchSize) does not divide among \(shards) trusted ranks")
        }
        localBatch = config.data.batchSize / shards
        images = Tensor(shape: [localBatch] + config.model.input)
        labels = .allocate(capacity: max(localBatch, config.data.batchSize))
        fusedGradients = Tensor(shape: [model.parameterCount])
    }

    deinit { labels.deallocate() }

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
        data.train.gather(indices: global[start..<(start + localBatch)], images: images.data, labels: labels)
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
        if let local = untrusted as? LocalUntrusted {
            // The in-process stand-in for the allreduce: add the untrusted weight-gradient shares.
            local.addGradientShares(into: splitGrads)
        }
        if let collective {
            try collective.gradientsReady(step: position.step, learningRate: lr)
            try sumGradients(collective)
        }
        lastUntrustedSeconds = untrusted?.takeComputeSeconds() ?? 0
        optimizer.apply(learningRate: lr, to: model.parameters)
        lastStepSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        try collective?.stepApplied(step: position.step, parameters: model.parameters)
        model.profile?.endStep(trustedSeconds: lastStepSeconds - lastUntrustedSeconds)
        position.step += 1
        position.samplesSeen += Int64(batch)
        if let collective {
            let (l, c) = try collective.sumOverTrusted([lossSum, Double(correct)]).pair
            return (l / Double(batch), c / Double(batch))
        }
        return (lossSum / Double(batch), Double(correct) / Double(batch))
    }

    /// One fused allreduce of every gradient (small tensors would each pay the latency).
    private func sumGradients(_ collective: Collective) throws {
        try model.parameters.withFused(fusedGradients) { buffer, count in
            try collective.sumGradients(buffer, count: count)
        }
    }

    /// Bytes sent to the untrusted side per step: residuals forward, output gradients backward.
    package var bytesToUntrustedPerStep: Int {
        splitLayers.map { 4 * localBatch * ($0.geometry.inputSize + $0.geometry.outputSize) }.reduce(0, +)
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

extension Array where Element == Parameter {
    /// Copies every gradient into `fused`, runs `body` on it, and copies the result back.
    package func withFused(_ fused: Tensor, _ body: (UnsafeMutablePointer<Float>, Int) throws -> Void) rethrows {
        var offset = 0
        for p in self {
            (fused.data + offset).update(from: p.grad.data, count: p.grad.count)
            offset += p.grad.count
        }
        try body(fused.data, offset)
        offset = 0
        for p in self {
            p.grad.data.update(from: fused.data + offset, count: p.grad.count)
            offset += p.grad.count
        }
    }
}
