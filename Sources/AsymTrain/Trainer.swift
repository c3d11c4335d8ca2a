import AsymData
import AsymKernels
import AsymSplit
import Foundation

/// Where training stands: enough to continue bit-exactly (with the model and optimizer).
public struct TrainingPosition: Equatable {
    /// Optimizer steps taken so far.
    public var step = 0
    /// Samples of the training set consumed so far.
    public var samplesSeen: Int64 = 0

    public init(step: Int = 0, samplesSeen: Int64 = 0) { self.step = step; self.samplesSeen = samplesSeen }
}

/// Evaluation result over a whole split.
public struct Evaluation {
    public var loss: Double
    public var accuracy: Double
    public var samples: Int
}

/// Training and evaluation in one process (mode `plain`).
///
/// The data order depends only on (seed, epoch): step s of the run uses batch s % B of the
/// permutation of epoch s / B (B = batches per epoch), so a run can continue from any step.
public final class Trainer {
    public let config: Config
    public let model: Model
    public let data: DataSource
    public let order: EpochOrder
    public let optimizer: SGDOptimizer
    public var position = TrainingPosition()
    /// asym mode: the in-process untrusted executor and the split convolutions.
    public private(set) var untrusted: LocalUntrusted?
    public private(set) var splitLayers: [Conv2dLayer] = []
    private var splitGrads: [Int: Tensor] = [:]
    /// Seconds of the last step: total, and the part the untrusted side computed.
    public private(set) var lastStepSeconds = 0.0
    public private(set) var lastUntrustedSeconds = 0.0

    private let images: Tensor
    private let labels: UnsafeMutablePointer<Int32>

    public init(config: Config, data: DataSource? = nil) throws {
        self.config = config
        model = try Model(config.model)
        guard model.classes == config.data.classes || config.data.dataset != "synthetic" else {
            throw ConfigError("model.layers: the last layer has \(model.classes) outputs but data.classes is \(config.data.classes)")
        }
        self.data = try data ?? DataSource(config)
        guard model.classes >= self.data.train.classes else {
            throw ConfigError("model.layers: the last layer has \(model.classes) outputs but \(config.data.dataset) has \(self.data.train.classes) classes")
        }
        order = try EpochOrder(count: self.data.train.count, batchSize: config.data.batchSize,
                           seed: UInt64(truncatingIfNeeded: config.seed), shuffle: config.data.shuffle)
        optimizer = SGDOptimizer(config.optimizer, stepsPerEpoch: order.batchesPerEpoch, totalSteps: Trainer.totalSteps(config, order))
        model.initialize(seed: UInt64(truncatingIfNeeded: config.seed), scheme: config.model.initScheme)
        if config.asym.mode == "asym" {
            let executor = LocalUntrusted()
            splitLayers = try model.enableSplit(config, executor: executor)
            splitGrads = Dictionary(uniqueKeysWithValues: splitLayers.enumerated().map { ($0, $1.weight.grad) })
            untrusted = executor
        }
        let batch = config.data.batchSize
        images = Tensor(shape: [batch] + config.model.input)
        labels = .allocate(capacity: batch)
    }

    deinit { labels.deallocate() }

    static func totalSteps(_ c: Config, _ o: EpochOrder) -> Int {
        let all = c.train.epochs * o.batchesPerEpoch
        return min(all, c.train.maxSteps ?? all)
    }

    public var totalSteps: Int { Trainer.totalSteps(config, order) }

    /// The epoch that step `step` belongs to.
    public func epoch(ofStep step: Int) -> Int { step / order.batchesPerEpoch }

    private var cachedPermutation: (epoch: Int, perm: [Int32])?

    /// Loads the global batch of step `step` into the input buffers.
    func loadBatch(step: Int) {
        let e = epoch(ofStep: step)
        if cachedPermutation?.epoch != e { cachedPermutation = (e, order.permutation(epoch: e)) }
        let indices = order.batch(cachedPermutation!.perm, index: step % order.batchesPerEpoch)
        data.train.gather(indices: indices, images: images.data, labels: labels)
    }

    /// One optimizer step on the next global batch. Returns the mean loss and accuracy.
    @discardableResult
    public func step() -> (loss: Double, accuracy: Double) {
        let batch = config.data.batchSize
        let t0 = DispatchTime.now().uptimeNanoseconds
        loadBatch(step: position.step)
        model.zeroGradients()
        let (lossSum, correct) = model.trainingPass(images: images, labels: labels, batch: batch, normalizer: batch)
        // The in-process stand-in for the allreduce: add the untrusted weight-gradient shares.
        untrusted?.addGradientShares(into: splitGrads)
        lastUntrustedSeconds = untrusted?.takeComputeSeconds() ?? 0
        lastStepSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        optimizer.apply(step: position.step, to: model.parameters)
        position.step += 1
        position.samplesSeen += Int64(batch)
        return (lossSum / Double(batch), Double(correct) / Double(batch))
    }

    /// Bytes sent to the untrusted side per step: residuals forward, output gradients backward.
    public var bytesToUntrustedPerStep: Int {
        splitLayers.map { 4 * config.data.batchSize * ($0.geometry.inputSize + $0.geometry.outputSize) }.reduce(0, +)
    }

    /// ||R||^2 / ||X||^2 of every split layer in the last forward pass, by layer name.
    public var residualEnergies: [(String, Double)] {
        splitLayers.map { ($0.name, $0.split!.lastResidualEnergy) }
    }

    /// Loss and accuracy over every sample of `split` (batches of the training batch size).
    public func evaluate(_ split: Dataset) -> Evaluation {
        var lossSum = 0.0, correct = 0
        var buffer: Tensor?
        let batches = (try? evaluationBatches(count: split.count, batchSize: min(config.data.batchSize, split.count))) ?? []
        for indices in batches {
            let n = indices.count
            let x = Tensor.reuse(buffer, shape: [n] + config.model.input)
            buffer = x
            split.gather(indices: indices, images: x.data, labels: labels)
            let logits = model.forward(x, batch: n, training: false)
            let r = softmaxCrossEntropy(logits: logits.data, labels: labels, batch: n, classes: model.classes,
                                        normalizer: n, dLogits: nil)
            lossSum += r.lossSum
            correct += r.correct
        }
        return Evaluation(loss: lossSum / Double(split.count), accuracy: Double(correct) / Double(split.count),
                          samples: split.count)
    }
}
