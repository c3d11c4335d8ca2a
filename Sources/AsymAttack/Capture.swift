import AsymKernels
import AsymSplit
import AsymModel
import AsymTrain

/// Per-sample tensors of one kind, [samples][shape], in sample order.
package struct Features {
    package let shape: [Int]
    package var values: [Float]

    package init(shape: [Int], values: [Float] = []) {
        self.shape = shape
        self.values = values
    }

    package var sampleSize: Int { shape.reduce(1, *) }
    package var count: Int { values.count / sampleSize }

    /// Samples `range`, as a new set.
    package func slice(_ range: Range<Int>) -> Features {
        Features(shape: shape, values: Array(values[(range.lowerBound * sampleSize)..<(range.upperBound * sampleSize)]))
    }
}

/// The in-process untrusted executor, with a tap on the messages of one split layer: it
/// records exactly the tensors that an untrusted rank receives, nothing the trusted side keeps.
final class RecordingExecutor: UntrustedExecutor {
    private let inner = LocalUntrusted()
    /// The split layer to record; set once the trainer has split its convolutions.
    var layer = -1
    private(set) var residuals: [Float] = []
    private(set) var outputGradients: [Float] = []

    func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) { inner.register(info, weight: weight, bias: bias) }

    func startForward(_ r: Residual) {
        if r.layer == layer { residuals += r.tensor.buffer }
        inner.startForward(r)
    }

    func finishForward(layer: Int) -> Tensor { inner.finishForward(layer: layer) }

    func startBackward(_ g: OutputGradient) {
        if g.layer == layer { outputGradients += g.tensor.buffer }
        inner.startBackward(g)
    }

    func startBackwardPerSample(_ g: OutputGradient) {
        if g.layer == layer { outputGradients += g.tensor.buffer }
        inner.startBackwardPerSample(g)
    }

    func finishBackward(layer: Int) -> Tensor { inner.finishBackward(layer: layer) }
    func finishWeightShares(layer: Int) -> Tensor { inner.finishWeightShares(layer: layer) }
    func takeComputeSeconds() -> Double { inner.takeComputeSeconds() }
    func collectGradientShares(_ body: (Int, UnsafePointer<Float>, Range<Int>) throws -> Void) throws {
        try inner.collectGradientShares(body)
    }
    func publishWeights() {}
}

/// What the adversary holds for one split layer, plus the references it is judged against.
package struct Capture {
    /// The split layer's name and its index among the split layers (the wire's layer number).
    package let layerName: String
    package let layerIndex: Int
    /// Received by the untrusted side: R forward, dY backward.
    package let residual: Features
    package let outputGradient: Features
    /// References the adversary never sees: the layer's whole input X = U V + R, and the raw
    /// model inputs (normalised as the model sees them) with their labels.
    package let full: Features
    package let images: Features
    package let labels: [Int32]
    package let classes: Int
    /// Samples in the whole training set (the capture is a subsample of it).
    package let trainingSetSize: Int
    /// ||R||^2 / ||X||^2 over every captured sample.
    package var residualEnergy: Double {
        sumOfSquares(residual.values) / max(sumOfSquares(full.values), 1e-30)
    }
}

func sumOfSquares(_ v: [Float]) -> Double {
    v.withUnsafeBufferPointer { sumOfSquares($0.baseAddress!, count: $0.count) }
}

extension Capture {
    /// Loads `checkpoint` into an asym-mode trainer whose untrusted half records layer
    /// `layerName` (default: the first split layer), and runs forward and backward, with the
    /// real labels and loss but no optimizer step, over the first `samples` training samples
    /// (rounded down to whole batches of `data.batch_size`, as training sends them).
    package static func run(config: Config, checkpoint: String, layerName: String?, samples: Int) throws -> Capture {
        var c = config
        c.asym.mode = .asym
        let recorder = RecordingExecutor()
        let trainer = try Trainer(config: c, executor: recorder)
        let splits = trainer.splitLayers
        guard let index = layerName.map({ name in splits.firstIndex { $0.name == name } }) ?? (splits.isEmpty ? nil : 0) else {
            let names = splits.map(\.name).joined(separator: ", ")
            throw ConfigError(layerName.map { "--layer: '\($0)' is not a split layer; the split layers are: \(names)" }
                              ?? "model.layers: the model has no split convolution to attack")
        }
        recorder.layer = index
        try Checkpoint.load(checkpoint, into: trainer, for: .evaluate)
        let batch = c.data.batchSize
        let n = min(samples, trainer.data.train.count) / batch * batch
        guard n >= 2 * batch else {
            throw ConfigError("--samples: \(samples) gives fewer than two batches of \(batch); the probes need a half to fit and a half to test")
        }
        let conv = trainer.splitLayers[index]
        let input = Tensor(shape: [batch] + c.model.input)
        var labels = [Int32](repeating: 0, count: n)
        var full = Features(shape: conv.inputShape), images = Features(shape: c.model.input)
        for start in stride(from: 0, to: n, by: batch) {
            labels.withUnsafeMutableBufferPointer { l in
                trainer.data.train.gather(indices: Int32(start)..<Int32(start + batch), images: input.data,
                                          labels: l.baseAddress! + start)
                trainer.model.zeroGradients()
                trainer.model.trainingPass(images: input, labels: l.baseAddress! + start, batch: batch, normalizer: batch)
            }
            images.values += input.buffer
            for s in 0..<batch {
                let (low, res) = conv.split!.lastDecomposition(sample: s)
                full.values += zip(low, res).map { $0 + $1 }
            }
        }
        let geometry = conv.geometry
        return Capture(layerName: conv.name, layerIndex: index,
                       residual: Features(shape: conv.inputShape, values: recorder.residuals),
                       outputGradient: Features(shape: [geometry.outChannels, geometry.outHeight, geometry.outWidth],
                                                values: recorder.outputGradients),
                       full: full, images: images, labels: labels, classes: trainer.model.classes,
                       trainingSetSize: trainer.data.train.count)
    }
}
