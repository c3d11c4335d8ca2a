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

/// Label inference: trains the probe with this project's trainer on the first `fitCount`
/// samples of `features` and returns its accuracy on the rest.
package func labelProbeAccuracy(_ features: Features, labels: [Int32], classes: Int, fitCount: Int,
                               epochs: Int, seed: Int = 0) throws -> Double {
    let f = standardized(features, fitOn: fitCount)
    func dataset(_ range: Range<Int>, _ name: String) -> Dataset {
        Dataset(name: name, channels: f.shape[0], height: f.shape[1], width: f.shape[2], classes: classes,
                images: f.slice(range).values, labels: Array(labels[range]))
    }
    let data = DataSource(train: dataset(0..<fitCount, "probe/fit"), test: dataset(fitCount..<f.count, "probe/held-out"))
    var config = attackerConfig(input: f.shape, layers: probeLayers(input: f.shape, classes: classes),
                                batch: 64, epochs: epochs, lr: 0.02, seed: seed)
    config.data.classes = classes
    let trainer = try Trainer(config: config, data: data)
    for _ in 0..<trainer.totalSteps { try trainer.step() }
    return try trainer.evaluate(data.test).accuracy
}
