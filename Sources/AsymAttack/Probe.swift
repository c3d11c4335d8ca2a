import AsymData
import AsymKernels
import AsymModel
import AsymTrain

/// Per-channel standardisation fitted on the adversary's training half: tensors that cross
/// differ in scale by orders of magnitude (dY is ~1e-4 of R), and SGD with one learning rate
/// needs inputs of about unit scale. An affine map per channel adds no information.
package func standardized(_ f: Features, fitOn fitCount: Int) -> Features {
    let c = f.shape[0], plane = f.sampleSize / c
    var out = f
    for ch in 0..<c {
        var sum = 0.0, squares = 0.0
        for s in 0..<fitCount {
            for v in f.values[(s * f.sampleSize + ch * plane)..<(s * f.sampleSize + (ch + 1) * plane)] {
                sum += Double(v); squares += Double(v) * Double(v)
            }
        }
        let count = Double(fitCount * plane), mean = sum / count
        let scale = 1 / max((squares / count - mean * mean).squareRoot(), 1e-12)
        for s in 0..<f.count {
            let base = s * f.sampleSize + ch * plane
            for i in base..<(base + plane) { out.values[i] = Float((Double(f.values[i]) - mean) * scale) }
        }
    }
    return out
}

/// A small config for the attacker's own models: plain mode, SGD with momentum and a
/// cosine schedule, seeded.
func attackerConfig(input: [Int], layers: [LayerSpec], batch: Int, epochs: Int, lr: Double, seed: Int) -> Config {
    var c = Config()
    c.seed = seed
    c.model.input = input
    c.model.layers = layers
    c.data.batchSize = batch
    c.optimizer.lr = lr
    c.optimizer.momentum = 0.9
    c.optimizer.weightDecay = 5e-4
    c.optimizer.schedule.type = .cosine
    c.train.epochs = epochs
    return c
}

/// The label probe: conv-relu-pool-conv-relu-pool-flatten-linear (pooling only while the
/// map is at least 8 wide, so that small late-layer maps still fit).
func probeLayers(input: [Int], classes: Int) -> [LayerSpec] {
    var layers: [LayerSpec] = []
    var side = min(input[1], input[2])
    for (i, width) in [16, 32].enumerated() {
        layers.append(LayerSpec(name: "probe_conv\(i + 1)", type: .conv, out: width, kernel: 3, padding: 1))
        layers.append(LayerSpec(name: "probe_relu\(i + 1)", type: .relu))
        if side >= 8 {
            layers.append(LayerSpec(name: "probe_pool\(i + 1)", type: .maxpool, kernel: 2, stride: 2))
            side /= 2
        }
    }
    layers.append(LayerSpec(name: "probe_flatten", type: .flatten))
    layers.append(LayerSpec(name: "probe_fc", type: .linear, out: classes))
    return layers
}

/// What an attacker does to the captured features before classifying them. Under spread
/// masking each crossed combination is data plus strong i.i.d. Gaussian noise, with a
/// random sign; the plain probe takes the features as they are.
package struct ProbeDenoising {
    /// Average-pool each channel spatially (`poolingWindow`): the noise is i.i.d. per value
    /// and averages out, while the signal is smooth over a few positions and stays.
    package var pooled: Bool
    /// Fit on every fitting sample as x and as -x, with the same label: a combination's sign
    /// is random under masking, so the probe must not rely on it. Held-out samples are
    /// scored as they are.
    package var bothSigns: Bool

    package init(pooled: Bool, bothSigns: Bool) {
        self.pooled = pooled
        self.bothSigns = bothSigns
    }

    package static let none = ProbeDenoising(pooled: false, bothSigns: false)
    package static let pooledBothSigns = ProbeDenoising(pooled: true, bothSigns: true)
}

/// The denoising probe's average-pooling window (and stride) for a map of `shape`
/// [C, H, W]: 4 when the smaller side is at least 8, 2 when at least 4, else 1 (none), so
/// that a pooled map keeps at least two positions per side.
package func poolingWindow(_ shape: [Int]) -> Int {
    let side = min(shape[1], shape[2])
    return side >= 8 ? 4 : side >= 4 ? 2 : 1
}

/// Non-overlapping `window` x `window` average pooling of every channel (stride `window`;
/// a trailing strip narrower than the window is dropped): the average-pooling layer's kernel.
package func averagePooled(_ f: Features, window: Int) -> Features {
    guard window > 1 else { return f }
    let g = PoolGeometry(channels: f.shape[0], height: f.shape[1], width: f.shape[2], kernel: window, stride: window)
    var out = Features(shape: [g.channels, g.outHeight, g.outWidth], values: [Float](repeating: 0, count: f.count * g.outputSize))
    f.values.withUnsafeBufferPointer { x in
        out.values.withUnsafeMutableBufferPointer { y in
            avgPoolForward(g, x: x.baseAddress!, batch: f.count, y: y.baseAddress!)
        }
    }
    return out
}

/// Label inference: trains the probe with this project's trainer on the first `fitCount`
/// samples of `features` and returns its accuracy on the rest, after `denoising`.
package func labelProbeAccuracy(_ features: Features, labels: [Int32], classes: Int, fitCount: Int,
                               epochs: Int, seed: Int = 0, denoising: ProbeDenoising = .none) throws -> Double {
    var input = denoising.pooled ? averagePooled(features, window: poolingWindow(features.shape)) : features
    var inputLabels = labels
    var inputFitCount = fitCount
    if denoising.bothSigns {
        let fitValues = input.slice(0..<fitCount).values
        input.values.insert(contentsOf: fitValues.map { -$0 }, at: fitValues.count)
        inputLabels.insert(contentsOf: labels[0..<fitCount], at: fitCount)
        inputFitCount = 2 * fitCount
    }
    // Fitted on both signs when both are fitted, so the standardised copies stay negatives
    // of each other (per-channel mean zero).
    let f = standardized(input, fitOn: inputFitCount)
    func dataset(_ range: Range<Int>, _ name: String) -> Dataset {
        Dataset(name: name, channels: f.shape[0], height: f.shape[1], width: f.shape[2], classes: classes,
                images: f.slice(range).values, labels: Array(inputLabels[range]))
    }
    let data = DataSource(train: dataset(0..<inputFitCount, "probe/fit"), test: dataset(inputFitCount..<f.count, "probe/held-out"))
    var config = attackerConfig(input: f.shape, layers: probeLayers(input: f.shape, classes: classes),
                                batch: 64, epochs: epochs, lr: 0.02, seed: seed)
    config.data.classes = classes
    let trainer = try Trainer(config: config, data: data)
    for _ in 0..<trainer.totalSteps { try trainer.step() }
    return try trainer.evaluate(data.test).accuracy
}
