import AsymKernels
import AsymSplit
import AsymPrivacy
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

/// A tap on the messages of one split layer, passed on to `inner` (by default the
/// in-process untrusted executor). At the bottom of the stack it records exactly the
/// tensors that an untrusted rank receives; above the masking layer, what masking hides.
final class RecordingExecutor: ExecutorWrapper {
    let inner: UntrustedExecutor
    init(wrapping inner: UntrustedExecutor = LocalUntrusted()) { self.inner = inner }
    /// The split layer to record; set once the trainer has split its convolutions.
    var layer = -1
    /// The untrusted ranks it stands for (spread masking places its combinations over them;
    /// nil: the inner executor's), and the one whose part of each message it records (nil: all).
    var ranks: Int?
    var view: Int?
    private(set) var residuals: [Float] = []
    private(set) var outputGradients: [Float] = []

    /// The rows of `t` that member `view` receives (all of them without a view or a placement).
    private func received(_ t: Tensor, _ placement: RowPlacement?) -> Slice<UnsafeMutableBufferPointer<Float>> {
        let all = t.buffer
        guard let view, let placement else { return all[...] }
        let size = t.count / t.shape[0], rows = placement.parts[view]
        return all[(rows.lowerBound * size)..<(rows.upperBound * size)]
    }

    func startForward(_ r: Residual) {
        if r.layer == layer { residuals += received(r.tensor, r.placement) }
        inner.startForward(r)
    }

    func startBackward(_ g: OutputGradient) {
        if g.layer == layer { outputGradients += received(g.tensor, g.placement) }
        inner.startBackward(g)
    }

    func startBackwardPerSample(_ g: OutputGradient) {
        if g.layer == layer { outputGradients += received(g.tensor, g.placement) }
        inner.startBackwardPerSample(g)
    }

    var members: Int? { ranks ?? inner.members }
    /// Whole batches: each message's rows are recorded as they cross.
    var pipelines: Bool { false }
}

/// What the adversary holds for one split layer, plus the references it is judged against.
package struct Capture {
    /// The split layer's name and its index among the split layers (the wire's layer number).
    package let layerName: String
    package let layerIndex: Int
    /// Received by the untrusted side, exactly as it crossed: R forward, dY backward (after
    /// residual noise when the config asks for it). With masking, these are the K + 2 noisy
    /// combinations of every group of K samples, B (K + 2) / K per batch of B; with spread,
    /// the 3K of every group (all ranks together) or, for one rank's view, its K of each
    /// group. In group order (a group's combinations together).
    package let residual: Features
    package let outputGradient: Features
    /// Per received tensor, the sample whose label (and image) it is judged against: the
    /// sample itself without masking; with masking, the group's sample with the largest
    /// |mixing coefficient| in that combination (M forward, N = diag(1/g) N~ backward), the
    /// strongest per-combination target an adversary could aim for.
    package let residualTargets: [Int]
    package let outputGradientTargets: [Int]
    /// Per received tensor, the first sample of its mask group (the sample itself without
    /// masking): the attacker's fit / held-out split falls between groups.
    package let groups: [Int]
    /// With masking, the residuals and output gradients before it, one per sample in sample
    /// order (the truth the unmixing attack is scored against; kept on the trusted side).
    package let unmasked: (residual: Features, outputGradient: Features)?
    /// (K, sigma) of `asym.mask` when masking was on.
    package let mask: (groupSize: Int, noiseScale: Double)?
    /// With `asym.mask.spread`: the untrusted ranks the combinations were placed over, and the
    /// one whose view this is (nil: what all of them together received, colluding).
    package let spread: (ranks: Int, view: Int?)?
    /// (std, clip) of `asym.residual_noise` when it was on.
    package let residualNoise: (std: Double, clip: Double)?
    /// References the adversary never sees: the layer's whole input X = U V + R, and the raw
    /// model inputs (normalised as the model sees them) with their labels.
    package let full: Features
    package let images: Features
    package let labels: [Int32]
    package let classes: Int
    /// Samples in the whole training set (the capture is a subsample of it).
    package let trainingSetSize: Int
    /// ||R||^2 / ||X||^2 over every captured sample, of the decomposition itself (before any
    /// residual noise or masking).
    package let residualEnergy: Double
    /// Per-sample ||R|| of the decomposition (before noise or masking), in sample order: what
    /// `asym.residual_noise.clip` is measured against.
    package let residualNorms: [Double]

    package var residualLabels: [Int32] { residualTargets.map { labels[$0] } }
    package var outputGradientLabels: [Int32] { outputGradientTargets.map { labels[$0] } }

    /// Received tensors from groups that start before sample `samples` (a prefix).
    package func received(before samples: Int) -> Int {
        groups.firstIndex { $0 >= samples } ?? groups.count
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
    ///
    /// The privacy layers the config asks for sit above the recorder in training's order
    /// (`Trainer.protect`: residual noise under masking), so it records what crosses. The
    /// masking layer is built here, not by the trainer, to read its secret mixing per batch.
    ///
    /// With `asym.mask.spread` the combinations are placed over `untrustedRanks` ranks as
    /// training places them, and `rankView` picks the one rank whose rows are recorded (nil:
    /// every rank's, as if they colluded).
    package static func run(config: Config, checkpoint: String, layerName: String?, samples: Int,
                            rankView: Int? = nil, untrustedRanks: Int = 3) throws -> Capture {
        var c = config
        c.asym.mode = .asym
        c.asym.microbatches = 1  // the recorder takes each message whole
        let spread = c.asym.maskGroup > 0 && c.asym.maskSpread
        guard rankView == nil || spread else {
            throw UsageError("--rank-view: needs asym.mask.spread (without it the transport sends each mask group whole to one rank, which is the view attacked by default)")
        }
        guard untrustedRanks >= 3, (0..<untrustedRanks).contains(rankView ?? 0) else {
            throw UsageError("--rank-view \(rankView ?? 0): the view must be one of the \(untrustedRanks) untrusted ranks (0 ..< \(untrustedRanks)), and spread needs at least 3")
        }
        let recorder = RecordingExecutor()
        if spread { recorder.ranks = untrustedRanks; recorder.view = rankView }
        var noiseOnly = c.asym
        noiseOnly.maskGroup = 0
        let underMask = Trainer.protect(recorder, noiseOnly)
        let masking = c.asym.maskGroup > 0
            ? MaskingExecutor(wrapping: underMask, groupSize: c.asym.maskGroup, noiseScale: Float(c.asym.maskNoise), spread: spread)
            : nil
        var plain = c
        plain.asym.maskGroup = 0
        plain.asym.noiseStd = 0  // both layers are already in the executor given to the trainer
        let truth = masking.map { RecordingExecutor(wrapping: $0) }
        let trainer = try Trainer(config: plain, executor: truth ?? underMask)
        let splits = trainer.splitLayers
        guard let index = layerName.map({ name in splits.firstIndex { $0.name == name } }) ?? (splits.isEmpty ? nil : 0) else {
            let names = splits.map(\.name).joined(separator: ", ")
            throw UsageError(layerName.map { "--layer: '\($0)' is not a split layer; the split layers are: \(names)" }
                              ?? "model.layers: the model has no split convolution to attack")
        }
        recorder.layer = index
        truth?.layer = index
        try Checkpoint.load(checkpoint, into: trainer, for: .evaluate)
        let batch = c.data.batchSize
        let n = min(samples, trainer.data.train.count) / batch * batch
        guard n >= 2 * batch else {
            throw UsageError("--samples: \(samples) gives fewer than two batches of \(batch); the probes need a half to fit and a half to test")
        }
        let conv = trainer.splitLayers[index]
        let input = Tensor(shape: [batch] + c.model.input)
        var labels = [Int32](repeating: 0, count: n)
        var full = Features(shape: conv.inputShape), images = Features(shape: c.model.input)
        var residualTargets: [Int] = [], gradientTargets: [Int] = [], groups: [Int] = []
        // The recorded rows in group order (they were recorded in message order).
        var order: [Int] = []
        var residualSquares = 0.0, fullSquares = 0.0, norms: [Double] = []
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
                let x = zip(low, res).map { $0 + $1 }
                full.values += x
                let r2 = sumOfSquares(res)
                residualSquares += r2; fullSquares += sumOfSquares(x); norms.append(r2.squareRoot())
            }
            if let masking {
                // Row j of a group's mixing is combination j; its target is the column (sample)
                // of largest magnitude, the noise columns k..<k+p excluded.
                func dominant(_ mix: [Float], row j: Int, samples k: Int, width: Int) -> Int {
                    (0..<k).max { abs(mix[j * width + $0]) < abs(mix[j * width + $1]) }!
                }
                var s0 = start
                var sent: [(row: Int, first: Int, residual: Int, gradient: Int)] = []
                for group in masking.lastMixing(layer: index) {
                    let k = group.samples, width = k + group.noiseSources
                    for j in 0..<group.combinations where recorder.view == nil || group.members?[j] == recorder.view {
                        sent.append((group.rows[j], s0, s0 + dominant(group.forward, row: j, samples: k, width: width),
                                     s0 + dominant(group.backward, row: j, samples: k, width: width)))
                    }
                    s0 += k
                }
                precondition(s0 == start + batch, "mask groups cover \(s0 - start) of \(batch) samples")
                sent.sort { $0.row < $1.row }
                let base = order.count  // rows recorded before this batch
                for i in sent.indices.sorted(by: { (sent[$0].first, sent[$0].row) < (sent[$1].first, sent[$1].row) }) {
                    order.append(base + i)
                    residualTargets.append(sent[i].residual)
                    gradientTargets.append(sent[i].gradient)
                    groups.append(sent[i].first)
                }
            } else {
                residualTargets += start..<(start + batch)
                gradientTargets += start..<(start + batch)
                groups += start..<(start + batch)
            }
        }
        let geometry = conv.geometry
        let outputShape = [geometry.outChannels, geometry.outHeight, geometry.outWidth]
        func inGroupOrder(_ values: [Float], _ shape: [Int]) -> Features {
            let f = Features(shape: shape, values: values)
            guard masking != nil, order != Array(order.indices), f.count == order.count else { return f }
            return Features(shape: shape, values: order.flatMap { f.values[($0 * f.sampleSize)..<(($0 + 1) * f.sampleSize)] })
        }
        let residual = inGroupOrder(recorder.residuals, conv.inputShape)
        let outputGradient = inGroupOrder(recorder.outputGradients, outputShape)
        precondition(residual.count == groups.count && outputGradient.count == groups.count,
                     "recorded \(residual.count) residuals and \(outputGradient.count) output gradients for \(groups.count) messages")
        return Capture(layerName: conv.name, layerIndex: index, residual: residual, outputGradient: outputGradient,
                       residualTargets: residualTargets, outputGradientTargets: gradientTargets, groups: groups,
                       unmasked: truth.map { (Features(shape: conv.inputShape, values: $0.residuals),
                                              Features(shape: outputShape, values: $0.outputGradients)) },
                       mask: c.asym.maskGroup > 0 ? (c.asym.maskGroup, c.asym.maskNoise) : nil,
                       spread: spread ? (untrustedRanks, rankView) : nil,
                       residualNoise: c.asym.noiseStd > 0 ? (c.asym.noiseStd, c.asym.noiseClip) : nil,
                       full: full, images: images, labels: labels, classes: trainer.model.classes,
                       trainingSetSize: trainer.data.train.count,
                       residualEnergy: residualSquares / max(fullSquares, 1e-30), residualNorms: norms)
    }
}
