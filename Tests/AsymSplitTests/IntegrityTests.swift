import AsymKernels
import AsymSplit
import Dispatch
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
    let split: SplitConvolution
    private(set) var failures: [IntegrityFailure] = []

    init(_ g: ConvGeometry, batch: Int, policy: IntegrityPolicy = .report, basis: SplitSettings.Basis = .sample,
         correlated: Bool = false, seed: UInt64) {
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
        split = SplitConvolution(info: info, settings: SplitSettings(maxRank: 8, basis: basis, verify: true, onFailure: policy),
                                 executor: executor)
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
        executor.addGradientShares(into: [3: share], verifiedBy: [3: split])
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
    func testEveryFaultKindIsCaught() {
        let layer = realisticLayers[2]
        let faults: [Fault] = IntegrityCheck.allCases.flatMap { check in
            [Fault(.flip(index: nil, relative: 0.01), target: check), Fault(.scale(1.01), target: check),
             Fault(.zero, target: check), Fault(.replay, target: check, fromStep: 1)]
        } + [Fault(.grad(channel: 5, relative: 0.01))]
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

    /// The checks' trusted seconds against the trusted split convolution's (untrusted time
    /// taken out), on vgg-like layers. Prints the figures.
    func testCheckCost() {
        let layers = [
            ("vgg 128->256 8x8", ConvGeometry(inChannels: 128, height: 8, width: 8, outChannels: 256, kernel: 3, padding: 1)),
            ("vgg 64->128 16x16", ConvGeometry(inChannels: 64, height: 16, width: 16, outChannels: 128, kernel: 3, padding: 1)),
            ("vgg 256->256 4x4", ConvGeometry(inChannels: 256, height: 4, width: 4, outChannels: 256, kernel: 3, padding: 1)),
        ]
        for (name, g) in layers {
            var trusted: [Bool: Double] = [:]
            for verify in [false, true] {
                let l = VerifiedLayer(g, batch: 64, basis: .batch, seed: 600)
                let plain = SplitConvolution(info: SplitLayerInfo(layer: 3, geometry: g, hasBias: true),
                                             settings: SplitSettings(maxRank: 8, basis: .batch), executor: l.executor)
                let run = { verify ? _ = l.step() : self.unverifiedStep(plain, l) }
                run()
                _ = l.executor.takeComputeSeconds()
                let steps = 5, t0 = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<steps { run() }
                let total = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                trusted[verify] = (total - l.executor.takeComputeSeconds()) / Double(steps)
            }
            let off = trusted[false]! * 1e3, on = trusted[true]! * 1e3
            print(String(format: "check cost %@ batch 64: trusted split conv %.2f ms/step, with checks %.2f ms (+%.2f ms, %.0f%%)",
                         name, off, on, on - off, 100 * (on - off) / off))
        }
    }

    private func unverifiedStep(_ split: SplitConvolution, _ l: VerifiedLayer) {
        _ = split.forward(l.x, batch: l.batch, weight: l.weight)
        let dw = Tensor(shape: l.weight.shape), db = Tensor(shape: l.bias.shape)
        _ = split.backward(l.dy, batch: l.batch, weightGrad: dw, biasGrad: db)
        l.executor.addGradientShares(into: [3: dw])
    }

    private func untrustedOutput(_ l: VerifiedLayer) -> Tensor {
        let y = Tensor(shape: l.dy.shape)
        conv2dForward(l.geometry, x: l.residual().data, batch: l.batch, weight: l.weight.data,
                      bias: l.bias.data, y: y.data, scratch: Scratch())
        return y
    }

    private func smallestMagnitude(_ t: Tensor) -> Int {
        (0..<t.count).min { abs(t[$0]) < abs(t[$1]) }!
    }
}
