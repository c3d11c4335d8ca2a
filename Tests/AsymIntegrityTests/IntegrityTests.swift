import AsymKernels
import AsymIntegrity
import AsymSplit
import AsymTestSupport
import Dispatch
import Foundation
import XCTest

/// One verified split layer with an in-process untrusted side, random realistic tensors
/// (low-rank maps plus noise, He-scaled weights) and the plain kernels' results to compare with.
final class VerifiedLayer {
    let geometry: ConvGeometry
    let batch: Int
    let weight: Tensor, bias: Tensor
    private(set) var x: Tensor, dy: Tensor
    private var rng: RNG
    private let correlated: Bool
    let executor = LocalUntrusted()
    /// The executor the split layer uses: `executor`, with the untrusted side's CPU time counted.
    let counting: CountingUntrusted
    let split: SplitConvolution
    private(set) var failures: [IntegrityFailure] = []

    init(_ g: ConvGeometry, batch: Int, policy: IntegrityPolicy = .report, basis: SplitSettings.Basis = .sample,
         correlated: Bool = false, rank: Int = 8, seed: UInt64) {
        rng = RNG(seed: seed)
        geometry = g
        self.batch = batch
        self.correlated = correlated
        weight = randomTensor([g.outChannels, g.inChannels, g.kernel, g.kernel], &rng,
                              scale: (2 / Float(g.patchSize)).squareRoot())
        bias = randomTensor([g.outChannels], &rng, scale: 0.1)
        (x, dy) = (Tensor(shape: []), Tensor(shape: []))
        let info = SplitLayerInfo(layer: 3, geometry: g, hasBias: true)
        executor.register(info, weight: weight, bias: bias)
        counting = CountingUntrusted(executor)
        split = SplitConvolution(info: info, settings: SplitSettings(maxRank: rank, basis: basis, verify: true, onFailure: policy),
                                 executor: counting)
        refresh()
        split.failureHandler = { [unowned self] in self.failures.append($0) }
    }

    /// New inputs and output gradients (the next batch).
    func refresh() {
        let g = geometry
        x = lowRankMaps(batch: batch, channels: g.inChannels, positions: g.height * g.width, rank: 4, noise: 0.3, &rng)
        x.reshape([batch, g.inChannels, g.height, g.width])
        dy = randomTensor([batch, g.outChannels, g.outHeight, g.outWidth], &rng, scale: 1e-3)
        if correlated {
            // After a ReLU maps are non-negative, and gradients may share a sign: the partial
            // sums of every dot product then grow linearly, the hard case for rounding.
            for i in 0..<x.count { x[i] = max(x[i], 0) }
            for i in 0..<dy.count { dy[i] += 2e-3 }
        }
    }

    /// The residual R of the last forward pass, [batch, C, H, W].
    func residual() -> Tensor {
        let g = geometry
        return Tensor(shape: [batch, g.inChannels, g.height, g.width],
                      values: (0..<batch).flatMap { split.lastDecomposition(sample: $0).residual })
    }

    /// One training step: forward, backward, and the share checked before it is used.
    func step() -> (y: Tensor, dx: Tensor, share: Tensor) {
        let y = copyOf(split.forward(x, batch: batch, weight: weight, bias: bias))
        let dw = Tensor(shape: weight.shape), db = Tensor(shape: bias.shape)
        let dx = copyOf(split.backward(dy, batch: batch, weight: weight, weightGrad: dw, biasGrad: db))
        let share = Tensor(shape: weight.shape)
        try! executor.addGradientShares(into: [3: share], verifiedBy: [3: split])
        return (y, dx, share)
    }

    /// Y = conv(X, W) + b, dX and the untrusted share corr(R, dY) computed honestly here.
    func reference() -> (y: Tensor, dx: Tensor, share: Tensor) {
        let scratch = Scratch()
        let y = Tensor(shape: dy.shape), dx = Tensor(shape: x.shape), share = Tensor(shape: weight.shape)
        conv2dForward(geometry, x: x.data, batch: batch, weight: weight.data, bias: bias.data, y: y.data, scratch: scratch)
        let r = residual()
        conv2dBackward(geometry, x: r.data, batch: batch, weight: weight.data, dy: dy.data, dWeight: share.data, dBias: nil,
                       dx: dx.data, scratch: scratch)
        return (y, dx, share)
    }

    func failures(of check: IntegrityCheck) -> [IntegrityFailure] { failures.filter { $0.check == check } }
}

/// An in-process untrusted side that counts the thread CPU seconds it computes (the cost
/// test takes them out of a step's time; CPU time ignores other processes on a shared machine).
/// `deferred` computes each result when it is collected rather than when it is handed over,
/// as a remote rank would: the trusted work in between then finds the caches as it left them.
final class CountingUntrusted: ExecutorWrapper {
    let local: LocalUntrusted
    var inner: UntrustedExecutor { local }
    var deferred = false
    private(set) var seconds = 0.0
    private var pendingForward: Residual?, pendingBackward: OutputGradient?
    init(_ local: LocalUntrusted) { self.local = local }

    private func counted(_ body: () -> Void) {
        let t0 = threadCPUSeconds()
        body()
        seconds += threadCPUSeconds() - t0
    }
    func startForward(_ r: Residual) { if deferred { pendingForward = r } else { counted { local.startForward(r) } } }
    func finishForward(layer: Int, samples: Range<Int>) -> Tensor {
        if let r = pendingForward { pendingForward = nil; counted { local.startForward(r) } }
        return local.finishForward(layer: layer, samples: samples)
    }
    func startBackward(_ g: OutputGradient) { if deferred { pendingBackward = g } else { counted { local.startBackward(g) } } }
    func finishBackward(layer: Int, samples: Range<Int>) -> Tensor {
        if let g = pendingBackward { pendingBackward = nil; counted { local.startBackward(g) } }
        return local.finishBackward(layer: layer, samples: samples)
    }
    /// Whole batches: a deferred pass is computed when its one result is collected.
    var pipelines: Bool { false }
    func takeSeconds() -> Double { defer { seconds = 0 }; return seconds }
}

/// Untrusted ranks that each get a contiguous shard of the batch, as a trusted rank's
/// untrusted group does (the same shard ranges as the MPI runtime), in process.
final class ShardedUntrusted: UntrustedExecutor {
    let workers: [UntrustedWorker]
    private var geometry: ConvGeometry?
    private var output: Tensor?, inputGrad: Tensor?

    init(ranks: Int) { workers = (0..<ranks).map { _ in UntrustedWorker() } }

    static func shard(_ batch: Int, ranks: Int, index: Int) -> Range<Int> {
        (batch * index / ranks)..<(batch * (index + 1) / ranks)
    }

    func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        geometry = info.geometry
        for w in workers { w.register(info, weight: weight, bias: bias) }
    }

    /// Runs `body` on every rank with its samples of `input` ([batch, inSize]) and copies its
    /// result ([samples, outSize]) into `out`.
    private func scatter(_ input: Tensor, batch: Int, inSize: Int, outSize: Int, into out: Tensor,
                         _ body: (UntrustedWorker, Tensor, Int) -> Tensor) {
        for (i, worker) in workers.enumerated() {
            let samples = ShardedUntrusted.shard(batch, ranks: workers.count, index: i)
            if samples.isEmpty { continue }
            let slice = Tensor(shape: [samples.count] + input.shape.dropFirst())
            slice.data.update(from: input.data + samples.lowerBound * inSize, count: samples.count * inSize)
            let result = body(worker, slice, samples.count)
            (out.data + samples.lowerBound * outSize).update(from: result.data, count: samples.count * outSize)
        }
    }

    func startForward(_ r: Residual) {
        let g = geometry!
        let y = Tensor(shape: [r.batch, g.outChannels, g.outHeight, g.outWidth])
        scatter(r.tensor, batch: r.batch, inSize: g.inputSize, outSize: g.outputSize, into: y) {
            $0.forward(layer: r.layer, residual: $1, samples: 0..<$2, batch: $2)
        }
        output = y
    }
    func finishForward(layer: Int, samples: Range<Int>) -> Tensor { output! }
    func startBackward(_ d: OutputGradient) {
        let g = geometry!
        let dx = Tensor(shape: [d.batch, g.inChannels, g.height, g.width])
        scatter(d.tensor, batch: d.batch, inSize: g.outputSize, outSize: g.inputSize, into: dx) {
            $0.backward(layer: d.layer, outputGrad: $1, samples: 0..<$2, batch: $2)
        }
        inputGrad = dx
    }
    func finishBackward(layer: Int, samples: Range<Int>) -> Tensor { inputGrad! }
    func takeComputeSeconds() -> Double { 0 }
    /// Not used: the tests take each worker's share themselves, by its samples.
    func collectGradientShares(_ body: (Int, UnsafeMutablePointer<Float>, UnsafePointer<Float>?, Range<Int>) throws -> Void) throws {}
    func publishWeights() {}
    // The checks of a sharded batch take whole batches and need nothing else of an executor.
    var pipelines: Bool { false }
    var members: Int? { nil }
    func startBackwardPerSample(_ g: OutputGradient) { preconditionFailure("not a masked executor") }
    func finishWeightShares(layer: Int) -> Tensor { preconditionFailure("not a masked executor") }
    func progress() {}
    var untrustedLoad: (compute: Double, idle: Double)? { nil }
    func source(ofSample sample: Int, batch: Int) -> String {
        let rank = workers.indices.first { ShardedUntrusted.shard(batch, ranks: workers.count, index: $0).contains(sample) }!
        return "rank \(rank + 1) (untrusted)"
    }
    func exclude(sourcesOfSamples samples: [Int], batch: Int) throws -> String {
        struct NoExclusion: Error {}
        throw NoExclusion()
    }
}

/// A verified split layer whose batch is sharded across untrusted ranks.
final class ShardedLayer {
    let geometry: ConvGeometry
    let batch: Int
    let weight: Tensor, bias: Tensor
    let executor: ShardedUntrusted
    let split: SplitConvolution
    private var rng: RNG
    private(set) var failures: [IntegrityFailure] = []
    private(set) var ranges: [Range<Int>] = []
    var workers: [UntrustedWorker] { executor.workers }

    init(_ g: ConvGeometry, batch: Int, ranks: Int, policy: IntegrityPolicy, seed: UInt64) {
        geometry = g
        self.batch = batch
        rng = RNG(seed: seed)
        weight = randomTensor([g.outChannels, g.inChannels, g.kernel, g.kernel], &rng, scale: (2 / Float(g.patchSize)).squareRoot())
        bias = randomTensor([g.outChannels], &rng, scale: 0.1)
        executor = ShardedUntrusted(ranks: ranks)
        let info = SplitLayerInfo(layer: 0, geometry: g, hasBias: true)
        executor.register(info, weight: weight, bias: bias)
        split = SplitConvolution(info: info, settings: SplitSettings(maxRank: 4, basis: .batch, verify: true, onFailure: policy),
                                 executor: executor)
        split.failureHandler = { [unowned self] in self.failures.append($0) }
    }

    /// `passes` forward and backward passes on new data, then every rank's share checked for
    /// its samples before the sum. An idle rank (no samples) returns `idleShare` in every
    /// weight. Returns the shares after the checks, their sum, and the honest shares
    /// corr(R, dY) per rank and in all, computed here.
    func step(passes: Int, idleShare: Float = 0)
        -> (shares: [Tensor], sum: Tensor, referenceShards: [Tensor], reference: Tensor) {
        failures = []
        let g = geometry, scratch = Scratch()
        ranges = (0..<workers.count).map { ShardedUntrusted.shard(batch, ranks: workers.count, index: $0) }
        let referenceShards = ranges.map { _ in Tensor(shape: weight.shape) }
        for _ in 0..<passes {
            let x = lowRankMaps(batch: batch, channels: g.inChannels, positions: g.height * g.width, rank: 3, noise: 0.3, &rng)
            x.reshape([batch, g.inChannels, g.height, g.width])
            let dy = randomTensor([batch, g.outChannels, g.outHeight, g.outWidth], &rng, scale: 1e-3)
            _ = split.forward(x, batch: batch, weight: weight, bias: bias)
            let r = Tensor(shape: x.shape, values: (0..<batch).flatMap { split.lastDecomposition(sample: $0).residual })
            let dw = Tensor(shape: weight.shape), db = Tensor(shape: bias.shape)
            _ = split.backward(dy, batch: batch, weight: weight, weightGrad: dw, biasGrad: db)
            for (i, samples) in ranges.enumerated() where !samples.isEmpty {
                conv2dBackward(g, x: r.data + samples.lowerBound * g.inputSize, batch: samples.count, weight: weight.data,
                               dy: dy.data + samples.lowerBound * g.outputSize, dWeight: referenceShards[i].data, dBias: nil,
                               dx: nil, scratch: scratch)
            }
        }
        var shares: [Tensor] = []
        for (i, worker) in workers.enumerated() {
            worker.takeGradientShares { _, share, _ in
                if ranges[i].isEmpty { share.fill(idleShare) }
                split.verifyGradientShare(share.data, samples: ranges[i])
                shares.append(copyOf(share))
            }
        }
        split.finishGradientShareChecks()
        let sum = Tensor(shape: weight.shape), reference = Tensor(shape: weight.shape)
        for (share, ref) in zip(shares, referenceShards) {
            accumulate(share.data, into: sum.data, count: sum.count)
            accumulate(ref.data, into: reference.data, count: reference.count)
        }
        return (shares, sum, referenceShards, reference)
    }
}

func copyOf(_ t: Tensor) -> Tensor {
    let c = Tensor(shape: t.shape)
    c.copy(from: t)
    return c
}

/// fmnist-cnn conv2..conv4 and a vgg-like stage, k = 3, pad 1.
let realisticLayers: [(name: String, geometry: ConvGeometry, batch: Int)] = [
    ("fmnist conv2 32->32 28x28", ConvGeometry(inChannels: 32, height: 28, width: 28, outChannels: 32, kernel: 3, padding: 1), 32),
    ("fmnist conv3 32->64 14x14", ConvGeometry(inChannels: 32, height: 14, width: 14, outChannels: 64, kernel: 3, padding: 1), 64),
    ("fmnist conv4 64->64 14x14", ConvGeometry(inChannels: 64, height: 14, width: 14, outChannels: 64, kernel: 3, padding: 1), 64),
    ("vgg 128->256 8x8", ConvGeometry(inChannels: 128, height: 8, width: 8, outChannels: 256, kernel: 3, padding: 1), 64),
]

final class IntegrityTests: XCTestCase {
    override func setUp() { setThreads(1) }

    /// Honest results pass every check, over many fresh draws, realistic layers, both bases,
    /// random and correlated (post-ReLU) data; prints how close they come to the tolerance.
    func testHonestResultsNeverFail() {
        var worst: [IntegrityCheck: Float] = [:]
        for (i, layer) in realisticLayers.enumerated() {
            for variant in 0..<4 {
                let l = VerifiedLayer(layer.geometry, batch: layer.batch, basis: variant % 2 == 0 ? .sample : .batch,
                                      correlated: variant >= 2, seed: UInt64(100 + 10 * i + variant))
                for _ in 0..<3 { l.refresh(); _ = l.step() }
                XCTAssertEqual(l.failures, [], "\(layer.name) variant \(variant)")
                worst.merge(l.split.checker!.highestRatio, uniquingKeysWith: max)
            }
        }
        print("honest runs: highest discrepancy / allowed:", worst.map { "\($0.key.rawValue) \($0.value)" }.sorted())
    }

    /// One value changed by 1% of its tensor's largest |entry| is caught by each of the three
    /// checks: at random positions and at the smallest-magnitude entry, on every realistic layer.
    func testSingleValueCorruptionIsCaught() {
        var rng = RNG(seed: 21)
        for (i, layer) in realisticLayers.enumerated() {
            for check in IntegrityCheck.allCases {
                let l = VerifiedLayer(layer.geometry, batch: layer.batch, seed: UInt64(200 + i))
                let honest = l.step()
                let result = [IntegrityCheck.outputShare: honest.y, .inputGradient: honest.dx, .gradientShare: honest.share][check]!
                // The output share the worker returns is Y_U, not Y: find its smallest entry there.
                let values = check == .outputShare ? untrustedOutput(l) : result
                let positions = [smallestMagnitude(values)] + (0..<3).map { _ in rng.below(values.count) }
                for (n, index) in positions.enumerated() {
                    l.executor.worker.fault = Fault(.flip(index: index, relative: 0.01), target: check, fromStep: l.executor.worker.step)
                    _ = l.step()
                    XCTAssertEqual(l.failures(of: check).count, n + 1, "\(layer.name) \(check.rawValue) index \(index)")
                }
                XCTAssertEqual(l.failures.count, positions.count, "\(layer.name): only the corrupted check fails")
            }
        }
    }

    /// Every kind of fault is caught by the check of the result it corrupts.
    ///
    /// The `.grad` fault adds one value d to all K weights of a channel: its check sees
    /// d * sum_j z_j, which is small when the secret signs of z nearly cancel (sum_j z_j is
    /// about normal with deviation 1.5 sqrt(K), 37 here). At 1% of the share's largest entry d
    /// was 2.1 times the tolerance and escaped in 2 of 60 steps (the test then failed in about 1
    /// run of 20); at 50% it escapes with probability about 2e-4 a step. Single values are
    /// caught whatever z is (testSingleValueCorruptionIsCaught).
    func testEveryFaultKindIsCaught() {
        let layer = realisticLayers[2]
        let faults: [Fault] = IntegrityCheck.allCases.flatMap { check in
            [Fault(.flip(index: nil, relative: 0.01), target: check), Fault(.scale(1.01), target: check),
             Fault(.zero, target: check), Fault(.replay, target: check, fromStep: 1)]
        } + [Fault(.grad(channel: 5, relative: 0.5))]
        for fault in faults {
            let l = VerifiedLayer(layer.geometry, batch: layer.batch, seed: 300)
            l.executor.worker.fault = fault
            for _ in 0..<3 { l.refresh(); _ = l.step() }
            let steps = 3 - fault.fromStep
            XCTAssertEqual(l.failures(of: fault.target).count, steps, "\(fault)")
            XCTAssertEqual(l.failures.count, steps, "\(fault): only the corrupted check fails")
        }
    }

    /// Under `.recompute` a corrupted result is replaced by the trusted computation: the
    /// layer's outputs equal the plain convolution's.
    func testRecomputeRestoresHonestResults() {
        let layer = realisticLayers[1]
        for check in IntegrityCheck.allCases {
            let l = VerifiedLayer(layer.geometry, batch: layer.batch, policy: .recompute, seed: 400)
            l.executor.worker.fault = Fault(.zero, target: check)
            for _ in 0..<2 {
                l.refresh()
                let got = l.step(), want = l.reference()
                XCTAssertLessThan(relativeDifference(got.y, want.y), 1e-5, check.rawValue)
                XCTAssertLessThan(relativeDifference(got.dx, want.dx), 1e-5, check.rawValue)
                XCTAssertLessThan(relativeDifference(got.share, want.share), 1e-5, check.rawValue)
            }
            XCTAssertEqual(l.failures(of: check).count, 2, check.rawValue)
            XCTAssertEqual(l.split.integrityFailures, 2, check.rawValue)
        }
    }

    /// Every message is checked with a fresh vector.
    func testVectorsAreFreshPerMessage() {
        let l = VerifiedLayer(ConvGeometry(inChannels: 8, height: 6, width: 6, outChannels: 8, kernel: 3, padding: 1),
                              batch: 2, seed: 500)
        var seen: [IntegrityCheck: [[Float]]] = [:]
        for _ in 0..<4 {
            _ = l.step()
            for check in IntegrityCheck.allCases { seen[check, default: []].append(l.split.checker!.lastVector(check)) }
        }
        for (check, vectors) in seen {
            XCTAssertEqual(Set(vectors.map { $0.map(\.bitPattern) }).count, vectors.count, check.rawValue)
            XCTAssertTrue(vectors.joined().allSatisfy { abs($0) >= 1 && abs($0) < 2 }, check.rawValue)
        }
    }

    /// An evaluation pass (no weight-gradient share) has its output share checked too, and
    /// leaves the training passes' share state alone.
    func testEvaluationPassesAreChecked() {
        let layer = realisticLayers[1]
        let l = VerifiedLayer(layer.geometry, batch: 8, seed: 330)
        _ = l.step()
        let y = copyOf(l.split.forward(l.x, batch: l.batch, weight: l.weight, bias: l.bias, training: false))
        XCTAssertLessThan(relativeDifference(y, l.reference().y), 1e-5)
        l.executor.worker.fault = Fault(.flip(index: nil, relative: 0.01), target: .outputShare)
        _ = l.split.forward(l.x, batch: l.batch, weight: l.weight, bias: l.bias, training: false)
        XCTAssertEqual(l.failures.map(\.check), [.outputShare])
        l.executor.worker.fault = nil
        l.refresh()
        _ = l.step()
        XCTAssertEqual(l.failures.count, 1, "the training step after the evaluation passes")
    }

    /// A value made infinite, or so large that its square overflows float32 (which makes its
    /// tolerance infinite), is caught by each check.
    func testHugeAndInfiniteValuesAreCaught() {
        let layer = realisticLayers[2]
        for check in IntegrityCheck.allCases {
            for relative in [Float.infinity, 1e25] {
                let l = VerifiedLayer(layer.geometry, batch: 4, seed: 350)
                l.executor.worker.fault = Fault(.flip(index: nil, relative: relative), target: check)
                _ = l.step()
                XCTAssertEqual(l.failures(of: check).count, 1, "\(check.rawValue), \(relative)")
                XCTAssertEqual(l.failures.count, 1, "\(check.rawValue), \(relative): only the corrupted check fails")
            }
        }
    }

    /// shiftedSum finishes a tap-by-tap convolution: against conv2dForward and conv2dBackward
    /// with one input and one output channel, over strides 1 and 2, paddings 0 and 1, kernels
    /// 1 and 3 and odd, non-square maps; with tap stride 0 it is the box sum of one map.
    func testShiftedSumMatchesOneChannelConvolution() {
        var rng = RNG(seed: 31)
        let scratch = Scratch()
        var cases = 0
        for kernel in [1, 3] {
            for stride in [1, 2] {
                for padding in [0, 1] {
                    for (h, w) in [(5, 7), (8, 8), (6, 3)] {
                        let g = ConvGeometry(inChannels: 1, height: h, width: w, outChannels: 1, kernel: kernel,
                                             stride: stride, padding: padding)
                        guard g.outHeight > 0, g.outWidth > 0 else { continue }
                        let k2 = kernel * kernel, HW = h * w, P = g.outPositions
                        let weight = randomTensor([k2], &rng), x = randomTensor([HW], &rng), dy = randomTensor([P], &rng)
                        // Forward: taps[t] = w[t] x on the input grid.
                        let taps = Tensor(shape: [k2, HW])
                        for t in 0..<k2 { for i in 0..<HW { taps[t * HW + i] = weight[t] * x[i] } }
                        let y = Tensor(shape: [P]), yRef = Tensor(shape: [P])
                        shiftedSum(g, taps: taps.data, tapStride: HW, into: y.data, transposed: false)
                        conv2dForward(g, x: x.data, batch: 1, weight: weight.data, bias: nil, y: yRef.data, scratch: scratch)
                        XCTAssertLessThan(relativeDifference(y, yRef), 1e-6, "forward \(g)")
                        // Transposed: taps[t] = w[t] dy on the output grid.
                        let back = Tensor(shape: [k2, P])
                        for t in 0..<k2 { for i in 0..<P { back[t * P + i] = weight[t] * dy[i] } }
                        let dx = Tensor(shape: [HW]), dxRef = Tensor(shape: [HW])
                        shiftedSum(g, taps: back.data, tapStride: P, into: dx.data, transposed: true)
                        conv2dBackward(g, x: x.data, batch: 1, weight: weight.data, dy: dy.data, dWeight: nil, dBias: nil,
                                       dx: dxRef.data, scratch: scratch)
                        XCTAssertLessThan(relativeDifference(dx, dxRef), 1e-6, "transposed \(g)")
                        // Box sums: one map at every tap, against a kernel of ones.
                        let ones = Tensor(shape: [k2]); ones.fill(1)
                        let box = Tensor(shape: [P]), boxRef = Tensor(shape: [P])
                        shiftedSum(g, taps: x.data, tapStride: 0, into: box.data, transposed: false)
                        conv2dForward(g, x: x.data, batch: 1, weight: ones.data, bias: nil, y: boxRef.data, scratch: scratch)
                        XCTAssertLessThan(relativeDifference(box, boxRef), 1e-6, "box sum \(g)")
                        let boxT = Tensor(shape: [HW]), boxTRef = Tensor(shape: [HW])
                        shiftedSum(g, taps: dy.data, tapStride: 0, into: boxT.data, transposed: true)
                        conv2dBackward(g, x: x.data, batch: 1, weight: ones.data, dy: dy.data, dWeight: nil, dBias: nil,
                                       dx: boxTRef.data, scratch: scratch)
                        XCTAssertLessThan(relativeDifference(boxT, boxTRef), 1e-6, "transposed box sum \(g)")
                        cases += 1
                    }
                }
            }
        }
        XCTAssertGreaterThanOrEqual(cases, 20)
    }

    /// A trusted rank whose batch is sharded across three untrusted ranks checks each rank's
    /// weight-gradient share against that rank's samples before any sum: honest shares pass
    /// (over two passes per step), a corrupted one fails for its own samples only, an idle
    /// rank's share must be zero, and under `.recompute` only the corrupted shard is replaced.
    func testShardedGradientSharesAreCheckedPerRank() {
        let g = ConvGeometry(inChannels: 16, height: 10, width: 10, outChannels: 24, kernel: 3, padding: 1)
        for policy in [IntegrityPolicy.report, .recompute] {
            for passes in [1, 2] {
                let l = ShardedLayer(g, batch: 9, ranks: 3, policy: policy, seed: 700)
                // Honest: every shard passes, and the shards add up to the whole share.
                let honest = l.step(passes: passes)
                XCTAssertEqual(l.failures, [], "\(policy) \(passes) passes")
                XCTAssertEqual(l.ranges, [0..<3, 3..<6, 6..<9])
                XCTAssertLessThan(relativeDifference(honest.sum, honest.reference), 1e-5)
                // One corrupted value in rank 1's share: only its check fails, and names its samples.
                l.workers[1].fault = Fault(.flip(index: nil, relative: 0.01), target: .gradientShare,
                                           fromStep: l.workers[1].step)
                let corrupted = l.step(passes: passes)
                XCTAssertEqual(l.failures.map(\.check), [.gradientShare], "\(policy) \(passes) passes")
                XCTAssertEqual(l.failures.first?.samples, 3..<6)
                if policy == .recompute {
                    XCTAssertLessThan(relativeDifference(corrupted.shares[1], corrupted.referenceShards[1]), 1e-5)
                    XCTAssertLessThan(relativeDifference(corrupted.sum, corrupted.reference), 1e-5)
                } else {
                    XCTAssertGreaterThan(relativeDifference(corrupted.shares[1], corrupted.referenceShards[1]), 1e-3)
                }
                XCTAssertLessThan(relativeDifference(corrupted.shares[0], corrupted.referenceShards[0]), 1e-5)
                XCTAssertLessThan(relativeDifference(corrupted.shares[2], corrupted.referenceShards[2]), 1e-5)
            }
        }
        // A batch smaller than the group leaves a rank idle: its range is empty, and only a
        // zero share passes.
        let l = ShardedLayer(g, batch: 2, ranks: 3, policy: .report, seed: 710)
        _ = l.step(passes: 1)
        XCTAssertEqual(l.ranges, [0..<0, 0..<1, 1..<2])
        XCTAssertEqual(l.failures, [])
        _ = l.step(passes: 1, idleShare: 1e-3)
        XCTAssertEqual(l.failures.map(\.samples), [0..<0])
    }

    /// A corrupted output share or input gradient from one of several untrusted ranks fails
    /// at a sample of that rank.
    func testShardedResultsNameTheRanksSamples() {
        let g = ConvGeometry(inChannels: 16, height: 10, width: 10, outChannels: 24, kernel: 3, padding: 1)
        for check in [IntegrityCheck.outputShare, .inputGradient] {
            let l = ShardedLayer(g, batch: 9, ranks: 3, policy: .report, seed: 720)
            l.workers[2].fault = Fault(.flip(index: nil, relative: 0.01), target: check)
            _ = l.step(passes: 1)
            XCTAssertEqual(l.failures.map(\.check), [check])
            let positions = check == .outputShare ? g.outPositions : g.height * g.width
            XCTAssertTrue(l.ranges[2].contains((l.failures.first?.index ?? -1) / positions), check.rawValue)
        }
    }

    /// The checks' trusted CPU seconds against the trusted split convolution's (the untrusted
    /// side's taken out), batch 64, batch basis, rank 8, 1 thread, on vgg-like and fmnist-like
    /// layers, with each section's share. Prints the figures: the least over the timed steps
    /// (on a shared machine other processes only ever add to a step's time, through the caches).
    /// With ASYMML_CHECK_COST set it also times the `.recompute` policy (its copies of dY);
    /// ASYMML_CHECK_COST=vgg-cifar times every split layer of vgg-cifar instead (at the ranks of
    /// its rank schedule, 2 to 32). ASYMML_CHECK_COST_STEPS sets the timed steps (3), and
    /// ASYMML_CHECK_COST_DEFERRED=1 computes the untrusted results when collected (as a remote
    /// rank would, without evicting the trusted side's caches in between).
    func testCheckCost() throws {
        let env = ProcessInfo.processInfo.environment
        try XCTSkipUnless(env["ASYMML_CHECK_COST"] != nil, "a measurement, not a test: set ASYMML_CHECK_COST=1 (or vgg-cifar) to run it")
        let steps = env["ASYMML_CHECK_COST_STEPS"].flatMap { Int($0) } ?? 3
        let vgg = [(64, 64, 32, 2), (64, 128, 16, 4), (128, 128, 16, 8), (128, 256, 8, 16), (256, 256, 8, 32), (256, 512, 4, 32)]
        let layers: [(String, ConvGeometry, Int)] = (env["ASYMML_CHECK_COST"] == "vgg-cifar" ? vgg
            : [(128, 256, 8, 8), (64, 128, 16, 8), (256, 256, 4, 8)]).map { c, o, h, r in
                ("vgg \(c)->\(o) \(h)x\(h) rank \(r)",
                 ConvGeometry(inChannels: c, height: h, width: h, outChannels: o, kernel: 3, padding: 1), r)
            } + realisticLayers.prefix(3).map { ($0.name, $0.geometry, 8) }
        var totals: [String: Double] = [:]
        for (name, g, rank) in layers {
            var trusted: [String: Double] = [:], sections: [IntegritySection: Double] = [:]
            for variant in ["off", "report"] + (env["ASYMML_CHECK_COST"] != nil ? ["recompute"] : []) {
                let l = VerifiedLayer(g, batch: 64, policy: variant == "recompute" ? .recompute : .report, basis: .batch,
                                      rank: rank, seed: 600)
                let plain = SplitConvolution(info: SplitLayerInfo(layer: 3, geometry: g, hasBias: true),
                                             settings: SplitSettings(maxRank: rank, basis: .batch), executor: l.counting)
                let checker = l.split.checker!
                l.counting.deferred = env["ASYMML_CHECK_COST_DEFERRED"] == "1"
                let run = { self.costStep(variant == "off" ? plain : l.split, l) }
                run()
                // Whole steps untimed by section (the clock costs about a microsecond a read),
                // then steps timed by section.
                var times: [Double] = [], bySection: [IntegritySection: [Double]] = [:]
                for _ in 0..<steps {
                    _ = l.counting.takeSeconds()
                    let t0 = threadCPUSeconds()
                    run()
                    times.append(threadCPUSeconds() - t0 - l.counting.takeSeconds())
                }
                trusted[variant] = times.min()!
                guard variant != "off" else { continue }
                checker.timing = true
                for _ in 0..<steps {
                    checker.resetTiming()
                    run()
                    for (section, t) in checker.sectionSeconds { bySection[section, default: []].append(t) }
                }
                for (section, ts) in bySection where variant == "report" || section == .recomputeCopies {
                    sections[section] = ts.min()!
                }
            }
            XCTAssertFalse(sections.isEmpty, "\(name): the checker's timing recorded no section")
            let off = trusted["off"]! * 1e3, on = trusted["report"]! * 1e3
            totals["off", default: 0] += off; totals["on", default: 0] += on
            let recompute = trusted["recompute"].map { String(format: ", under recompute %.2f ms", $0 * 1e3) } ?? ""
            print(String(format: "check cost %@ batch 64: trusted split conv %.2f ms/step, with checks %.2f ms (+%.2f ms, %.0f%%)",
                         name, off, on, on - off, 100 * (on - off) / off) + recompute)
            let checks = IntegritySection.allCases.filter { ![.merge, .biasGradient, .recomputeCopies].contains($0) }
            print("  sections (ms/step): " + IntegritySection.allCases.compactMap { section in
                sections[section].flatMap { $0 > 0 ? String(format: "%@ %.2f", section.rawValue, 1e3 * $0) : nil }
            }.joined(separator: ", ") + String(format: "; the checks' sections add up to %.2f ms",
                                               1e3 * checks.reduce(0) { $0 + (sections[$1] ?? 0) }))
        }
        let off = totals["off"]!, on = totals["on"]!
        print(String(format: "check cost, all layers above: %.2f -> %.2f ms/step (+%.2f ms, %.0f%%)", off, on, on - off,
                     100 * (on - off) / off))
    }

    /// A training step without the copies of `VerifiedLayer.step`, checked when `split` checks.
    private func costStep(_ split: SplitConvolution, _ l: VerifiedLayer) {
        _ = split.forward(l.x, batch: l.batch, weight: l.weight, bias: l.bias)
        let dw = Tensor(shape: l.weight.shape), db = Tensor(shape: l.bias.shape)
        _ = split.backward(l.dy, batch: l.batch, weight: l.weight, weightGrad: dw, biasGrad: db)
        try! l.executor.addGradientShares(into: [3: dw], verifiedBy: [3: split])
    }

    private func untrustedOutput(_ l: VerifiedLayer) -> Tensor {
        let y = Tensor(shape: l.dy.shape), r = l.residual()
        // r must outlive the call: `.data` is a raw pointer, which does not keep its tensor alive
        // (AddressSanitizer caught a use after free here when r was a temporary).
        withExtendedLifetime(r) {
            conv2dForward(l.geometry, x: r.data, batch: l.batch, weight: l.weight.data,
                          bias: l.bias.data, y: y.data, scratch: Scratch())
        }
        return y
    }

    private func smallestMagnitude(_ t: Tensor) -> Int {
        (0..<t.count).min { abs(t[$0]) < abs(t[$1]) }!
    }
}
