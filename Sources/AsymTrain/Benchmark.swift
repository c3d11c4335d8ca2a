import AsymData
import AsymKernels
import Foundation

/// Training and inference throughput of a config's model on synthetic data of its shape.
public struct BenchmarkResult {
    public var trainSamplesPerSecond: Double
    public var inferSamplesPerSecond: Double
    public var trainStepSeconds: Double
    public var inferBatchSeconds: Double
    public var threads: Int
}

public func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
}

/// Times `steps` training steps and `steps` inference batches after two warm-up steps each,
/// and reports the median (timings on a shared machine are noisy; the median resists that).
public func benchmark(config: Config, steps: Int) throws -> BenchmarkResult {
    var c = config
    let input = c.model.input
    c.data.dataset = "synthetic"
    c.data.syntheticTrain = c.data.batchSize * (steps + 2)
    c.data.syntheticTest = c.data.batchSize
    c.data.normalizeMean = nil
    c.data.normalizeStd = nil
    let model = try Model(c.model)
    c.data.classes = model.classes
    let trainer = try Trainer(config: c)
    _ = input
    var trainTimes: [Double] = []
    for i in 0..<(steps + 2) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try trainer.step()
        if i >= 2 { trainTimes.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
    }
    let batch = c.data.batchSize
    let x = Tensor(shape: [batch] + c.model.input)
    trainer.data.test.gather(indices: (0..<Int32(batch)).map { $0 }[...], images: x.data,
                             labels: UnsafeMutablePointer<Int32>.allocate(capacity: batch))
    var inferTimes: [Double] = []
    for i in 0..<(steps + 2) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        _ = trainer.model.forward(x, batch: batch, training: false)
        if i >= 2 { inferTimes.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
    }
    let ts = median(trainTimes), inf = median(inferTimes)
    return BenchmarkResult(trainSamplesPerSecond: Double(batch) / ts, inferSamplesPerSecond: Double(batch) / inf,
                           trainStepSeconds: ts, inferBatchSeconds: inf, threads: kernelThreads)
}
