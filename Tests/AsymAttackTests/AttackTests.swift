import AsymAttack
import AsymData
import AsymKernels
import AsymModel
import AsymTrain
import Foundation
import XCTest

let fashionMNIST = "/usr/share/datasets/fashion-mnist"

/// A small fmnist model with one split convolution (conv2), in the attack's asym mode.
func smallConfig() throws -> Config {
    try Config.parse(yaml: """
        seed: 3
        data: {dataset: fashion-mnist, path: \(fashionMNIST), batch_size: 64, normalize: [0.2860, 0.3530]}
        model:
          input: [1, 28, 28]
          layers:
            - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1}
            - {type: relu}
            - {name: conv2, type: conv, out: 8, kernel: 3, padding: 1}
            - {type: relu}
            - {type: maxpool, kernel: 2}
            - {type: flatten}
            - {name: fc, type: linear, out: 10}
        train: {threads: 2}
        asym: {mode: asym, rank: 2, mask: off, verify: false}
        """)
}

extension XCTestCase {
    /// An untrained asym checkpoint of `config` in a temporary file, removed when the test ends.
    func initialCheckpoint(_ config: Config) throws -> String {
        let path = NSTemporaryDirectory() + "asymml-attack-\(UUID().uuidString).h5"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        try Checkpoint.write(try Trainer(config: config), world: WorldInfo(trusted: 1, untrusted: 1, mode: .asym), to: path)
        return path
    }
}

extension XCTestCase {
    /// `smallConfig` (its threads set) masked with K and `noise`, and an untrained checkpoint.
    func maskedSmallConfig(K: Int, noise: Double, spread: Bool = false) throws -> (Config, String) {
        try requireFashionMNIST()
        var config = try smallConfig()
        configureThreads(config)
        let path = try initialCheckpoint(config)
        config.asym.maskGroup = K
        config.asym.maskNoise = noise
        config.asym.maskSpread = spread
        return (config, path)
    }
}

func requireFashionMNIST() throws {
    try XCTSkipUnless(FileManager.default.fileExists(atPath: fashionMNIST + "/train-labels-idx1-ubyte.gz"),
                      "Fashion-MNIST is not installed at \(fashionMNIST) (make test installs it)")
}

final class ImageQualityTests: XCTestCase {
    func testIdenticalImagesGiveInfinitePSNRAndUnitSSIM() {
        var rng = RNG(seed: 1)
        let a = (0..<(2 * 16 * 16)).map { _ in rng.uniform() }
        XCTAssertEqual(ImageQuality.psnr(a[...], a[...]), .infinity)
        XCTAssertEqual(ImageQuality.ssim(a[...], a[...], channels: 2, height: 16, width: 16), 1, accuracy: 1e-12)
    }

    func testConstantImagesMatchHandComputation() {
        let a = [Float](repeating: 0.5, count: 12 * 12), b = [Float](repeating: 0.25, count: 12 * 12)
        // MSE 1/16: 10 log10(16).
        XCTAssertEqual(ImageQuality.psnr(a[...], b[...]), 10 * log10(16.0), accuracy: 1e-9)
        // No variance: SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1).
        XCTAssertEqual(ImageQuality.ssim(a[...], b[...], channels: 1, height: 12, width: 12),
                       (0.25 + 1e-4) / (0.3125 + 1e-4), accuracy: 1e-9)
    }

    func testOneBrightPixelMatchesHandComputation() {
        // 11 x 11: one window position. Only b's centre pixel is 1, with window weight w:
        // mx = 0, vx = 0, my = w, vy = w - w^2, cov = 0.
        let a = [Float](repeating: 0, count: 121)
        var b = a
        b[60] = 1
        XCTAssertEqual(ImageQuality.psnr(a[...], b[...]), 10 * log10(121.0), accuracy: 1e-9)
        let w = 1 / pow((-5...5).map { exp(-Double($0 * $0) / 4.5) }.reduce(0, +), 2)
        XCTAssertEqual(ImageQuality.ssim(a[...], b[...], channels: 1, height: 11, width: 11),
                       1e-4 * 9e-4 / ((w * w + 1e-4) * (w - w * w + 9e-4)), accuracy: 1e-12)
    }
}

final class DecoderPartsTests: XCTestCase {
    func testMeanSquaredErrorAndItsGradient() {
        let y: [Float] = [1, 2, 3, 4], t: [Float] = [1, 0, 3, 2]
        var d = [Float](repeating: 0, count: 4)
        // Two samples of two values: per-sample means 2 and 2, summed 4; dL/dy = 2 e / (2 * 2).
        let loss = meanSquaredError(y, t, batch: 2, size: 2, normalizer: 2, dY: &d)
        XCTAssertEqual(loss, 4, accuracy: 1e-12)
        XCTAssertEqual(d, [0, 1, 0, 1])
        // Finite differences of loss / normalizer.
        for i in 0..<4 {
            var up = y
            up[i] += 1e-2
            let numeric = (meanSquaredError(up, t, batch: 2, size: 2, normalizer: 2, dY: nil) - loss) / 2 / 1e-2
            XCTAssertEqual(numeric, Double(d[i]), accuracy: 1e-2)
        }
    }

    func testCholeskySolvesASymmetricSystem() {
        // A = [[4, 2, 0], [2, 5, 1], [0, 1, 3]], X = [[1, -1], [2, 0], [3, 1]], B = A X.
        let a: [Double] = [4, 2, 0, 2, 5, 1, 0, 1, 3]
        let b: [Double] = [8, -4, 15, -1, 11, 3]
        let x = choleskySolve(a, b, size: 3, columns: 2)
        for (u, v) in zip(x, [1.0, -1, 2, 0, 3, 1]) { XCTAssertEqual(u, v, accuracy: 1e-12) }
    }

    func testSpaceToDepthPutsEachBlockInChannelsAndInverts() {
        let images = Features(shape: [1, 4, 4], values: (0..<32).map(Float.init))  // two samples
        let blocks = spaceToDepth(images, factor: 2)
        XCTAssertEqual(blocks.shape, [4, 2, 2])
        // Channel dy*2+dx at (h, w) is pixel (2h+dy, 2w+dx): channel 1 is the odd columns of even rows.
        XCTAssertEqual(Array(blocks.values[4..<8]), [1, 3, 9, 11])
        XCTAssertEqual(depthToSpace(blocks, factor: 2).values, images.values)
    }
}

final class AttackTests: XCTestCase {
    /// The probe is a real attack: on raw Fashion-MNIST inputs it learns the labels.
    func testProbeLearnsLabelsFromRawInputs() throws {
        try requireFashionMNIST()
        setThreads(2)
        let train = try loadIDX(directory: fashionMNIST, split: .train, normalization: .fashionMNIST)
        let n = 2048
        let images = Features(shape: [1, 28, 28], values: Array(train.images[0..<(n * 784)]))
        let accuracy = try labelProbeAccuracy(images, labels: Array(train.labels[0..<n]), classes: 10,
                                              fitCount: n / 2, epochs: 3)
        XCTAssertGreaterThan(accuracy, 0.7)
    }

    /// Captures from a checkpoint: the tap records what crosses, and X (which the adversary
    /// never sees) rebuilds inputs better than noise does.
    func testCaptureAndReconstructionFromXBeatsNoise() throws {
        try requireFashionMNIST()
        let config = try smallConfig()
        configureThreads(config)
        let path = try initialCheckpoint(config)

        let capture = try Capture.run(config: config, checkpoint: path, layerName: nil, samples: 600)
        XCTAssertEqual(capture.layerName, "conv2")
        XCTAssertEqual(capture.labels.count, 576)  // whole batches of 64
        XCTAssertEqual(capture.residual.count, 576)
        XCTAssertEqual(capture.outputGradient.shape, [8, 28, 28])
        XCTAssertEqual(capture.outputGradient.count, 576)
        XCTAssertGreaterThan(capture.residualEnergy, 0)
        XCTAssertLessThan(capture.residualEnergy, 1)

        let fit = 384
        let pixels = Attack.toPixels(capture.images, config.data)
        let truth = pixels.slice(fit..<576)
        var rng = RNG(seed: 5)
        let noise = Features(shape: capture.full.shape, values: capture.full.values.map { _ in rng.normal() })
        func psnr(_ f: Features, _ decode: (Features) throws -> Features) rethrows -> Double {
            let predicted = try decode(standardized(f, fitOn: fit)).values.map { min(max($0, 0), 1) }
            return ImageQuality.compare(predicted, truth.values, shape: truth.shape).psnr
        }
        let ridge = { (f: Features) in ridgeDecode(f, targets: pixels, fitCount: fit) }
        let conv = { (f: Features) in try convDecode(f, targets: pixels, fitCount: fit, epochs: 2) }
        XCTAssertGreaterThan(psnr(capture.full, ridge), psnr(noise, ridge) + 3)
        XCTAssertGreaterThan(try psnr(capture.full, conv), try psnr(noise, conv) + 1)
    }

    /// With masking (K = 2, noise 3) the tap records the K + 2 combinations per group, each
    /// labelled by its group's dominant sample, and the label probe on them falls far below
    /// the probe on unmasked residuals. Residual noise: the tap records the noisy residuals.
    func testMaskedCaptureIsRelabelledAndHidesLabels() throws {
        try requireFashionMNIST()
        var config = try smallConfig()
        configureThreads(config)
        let path = try initialCheckpoint(config)

        let n = 1024, fit = n / 2
        let plain = try Capture.run(config: config, checkpoint: path, layerName: nil, samples: n)
        config.asym.maskGroup = 2
        config.asym.maskNoise = 3
        let masked = try Capture.run(config: config, checkpoint: path, layerName: nil, samples: n)
        XCTAssertEqual(masked.labels.count, n)
        XCTAssertEqual(masked.residual.count, n * 4 / 2)  // B (K + 2) / K per batch
        XCTAssertEqual(masked.outputGradient.count, n * 4 / 2)
        XCTAssertEqual(masked.residualLabels.count, n * 2)
        XCTAssertEqual(masked.outputGradientLabels.count, n * 2)
        for j in 0..<masked.groups.count {
            XCTAssertEqual(masked.groups[j], j / 4 * 2)  // four combinations per pair of samples
            XCTAssertTrue((masked.groups[j]..<(masked.groups[j] + 2)).contains(masked.residualTargets[j]))
            XCTAssertTrue((masked.groups[j]..<(masked.groups[j] + 2)).contains(masked.outputGradientTargets[j]))
        }
        XCTAssertEqual(masked.received(before: fit), fit * 2)
        XCTAssertEqual(masked.mask?.groupSize, 2)
        XCTAssertEqual(masked.residualEnergy, plain.residualEnergy, accuracy: 1e-6)  // the same decomposition

        let unmaskedAccuracy = try labelProbeAccuracy(plain.residual, labels: plain.residualLabels, classes: 10,
                                                      fitCount: fit, epochs: 3)
        let maskedAccuracy = try labelProbeAccuracy(masked.residual, labels: masked.residualLabels, classes: 10,
                                                    fitCount: masked.received(before: fit), epochs: 3)
        XCTAssertGreaterThan(unmaskedAccuracy, 0.5)
        XCTAssertLessThan(maskedAccuracy, unmaskedAccuracy - 0.25, "masked \(maskedAccuracy), unmasked \(unmaskedAccuracy)")

        config.asym.maskGroup = 0
        config.asym.noiseStd = 2
        config.asym.noiseClip = plain.residualNorms.sorted()[plain.residualNorms.count / 2]
        let noisy = try Capture.run(config: config, checkpoint: path, layerName: nil, samples: 128)
        XCTAssertEqual(noisy.residual.count, 128)
        XCTAssertEqual(noisy.residualTargets, Array(0..<128))
        // Clipped to the median norm plus noise of std 2 x clip per value: far above the clean norms.
        let clean = noisy.residualNorms.map { $0 * $0 }.reduce(0, +)
        XCTAssertGreaterThan(noisy.residual.values.reduce(0.0) { $0 + Double($1) * Double($1) }, 100 * clean)
    }

    func testUnknownLayerIsAClearError() throws {
        try requireFashionMNIST()
        let config = try smallConfig()
        let path = try initialCheckpoint(config)
        XCTAssertThrowsError(try Capture.run(config: config, checkpoint: path, layerName: "fc", samples: 256)) {
            XCTAssertTrue("\($0)".contains("'fc' is not a split layer; the split layers are: conv2"), "\($0)")
        }
    }
}

final class UnmixingTests: XCTestCase {
    /// A random `rows` x `columns` matrix with orthonormal columns (Gram-Schmidt on Gaussians),
    /// row-major: the shape of masking's forward mixing M.
    func orthonormalColumns(rows: Int, columns: Int, _ rng: inout RNG) -> [Double] {
        var a = (0..<(rows * columns)).map { _ in Double(rng.normal()) }
        for c in 0..<columns {
            for p in 0..<c {
                let d = (0..<rows).reduce(0.0) { $0 + a[$1 * columns + c] * a[$1 * columns + p] }
                for r in 0..<rows { a[r * columns + c] -= d * a[r * columns + p] }
            }
            let norm = (0..<rows).reduce(0.0) { $0 + a[$1 * columns + c] * a[$1 * columns + c] }.squareRoot()
            for r in 0..<rows { a[r * columns + c] /= norm }
        }
        return a
    }

    /// Three non-Gaussian sources (Laplacian, uniform, and a sparse rectified Gaussian like a
    /// ReLU map) plus `gaussians` Gaussian noise sources three times as strong, mixed as
    /// masking mixes them (L = sources + 1 combinations, orthonormal columns): FastICA gets
    /// every non-Gaussian source back with |correlation| > 0.9. With two Gaussian sources it
    /// still does, which is why more noise vectors per group would not stop the attack.
    func recoveredCorrelations(gaussians: Int, seed: UInt64) -> [Double] {
        var rng = RNG(seed: seed)
        let n = 6000, signals = 3, m = signals + gaussians, L = m + 1
        func draw(_ f: (inout RNG) -> Float) -> [Float] { (0..<n).map { _ in f(&rng) } }
        let laplace = draw { r in let u = r.uniform() - 0.5; return (u < 0 ? 1 : -1) * log(1 - 2 * abs(u) + 1e-9) }
        let uniform = draw { r in r.uniform() * 3.4 }
        let relu = draw { r in max(r.normal() - 0.5, 0) * 2 }
        let sources = [laplace, uniform, relu] + (0..<gaussians).map { _ in draw { 3 * $0.normal() } }
        let mix = orthonormalColumns(rows: L, columns: m, &rng)
        let x = (0..<(L * n)).map { i in Float((0..<m).reduce(0.0) { $0 + mix[i / n * m + $1] * Double(sources[$1][i % n]) }) }
        let recovered = FastICA.separate(x, rows: L, positions: n, sources: m, fitPositions: 4096, seed: seed)
        return (0..<signals).map { s in
            (0..<m).map { affineFit(recovered[($0 * n)..<(($0 + 1) * n)], to: sources[s][...]).correlation }.max()!
        }
    }

    func testFastICARecoversNonGaussianSourcesOfAMaskLikeMixture() {
        for seed in 1...3 {
            for c in recoveredCorrelations(gaussians: 1, seed: UInt64(seed)) { XCTAssertGreaterThan(c, 0.9, "seed \(seed)") }
        }
    }

    func testSeveralGaussianNoiseSourcesDoNotHideTheSignals() {
        for c in recoveredCorrelations(gaussians: 2, seed: 7) { XCTAssertGreaterThan(c, 0.9) }
    }

    /// On a masked capture (K = 2, noise 3) unmixing pairs every sample with one recovered
    /// source, far closer to the truth than any single combination is.
    func testUnmixingAMaskedCapture() throws {
        let (config, path) = try maskedSmallConfig(K: 2, noise: 3)
        let capture = try Capture.run(config: config, checkpoint: path, layerName: nil, samples: 128)
        let truth = try XCTUnwrap(capture.unmasked)
        XCTAssertEqual(truth.residual.count, 128)
        XCTAssertEqual(truth.outputGradient.count, 128)
        let r = unmix(capture.residual, groups: capture.groups, truth: truth.residual)
        XCTAssertEqual(r.features.count, 128)
        // A combination's best correlation with its dominant sample, for comparison.
        let size = truth.residual.sampleSize
        let direct = capture.residualTargets.indices.map { j in
            affineFit(capture.residual.values[(j * size)..<((j + 1) * size)],
                      to: truth.residual.values[(capture.residualTargets[j] * size)..<((capture.residualTargets[j] + 1) * size)]).correlation
        }.reduce(0, +) / Double(capture.residualTargets.count)
        XCTAssertGreaterThan(r.meanCorrelation, 0.9)
        XCTAssertGreaterThan(r.meanCorrelation, direct + 0.3, "unmixed \(r.meanCorrelation), one combination \(direct)")
    }

    /// Spread masking (K = 2, noise 3): one untrusted rank's view holds K combinations of each
    /// group (B per batch), in group order, targets inside the group; FastICA on it recovers
    /// the samples far worse than from a whole group, while the three ranks' views together
    /// (colluding, 3K per group) still unmix like an unspread group.
    func testSpreadRankViewResistsUnmixingThatCollusionDoesNot() throws {
        let (config, path) = try maskedSmallConfig(K: 2, noise: 3, spread: true)
        let n = 128
        var correlations: [String: Double] = [:]
        for (name, view, ranks) in [("rank 0 of 3", Optional(0), 3), ("rank 3 of 4", 3, 4), ("colluding", nil, 3)] {
            let capture = try Capture.run(config: config, checkpoint: path, layerName: nil, samples: n, rankView: view,
                                          untrustedRanks: ranks)
            // Of 4 ranks, each gets 2 combinations of 3 groups in 4 (the groups rotate).
            let perGroup = view == nil ? 6 : 2, received = n / 2 * perGroup * 3 / ranks
            XCTAssertEqual(capture.residual.count, received, name)
            XCTAssertEqual(capture.outputGradient.count, received, name)
            for j in capture.groups.indices {
                XCTAssertTrue((capture.groups[j]..<(capture.groups[j] + 2)).contains(capture.residualTargets[j]), name)
                XCTAssertEqual(capture.groups.filter { $0 == capture.groups[j] }.count, perGroup, name)
            }
            guard ranks == 3 else { continue }  // unmixing needs every group (k comes from the next group's first sample)
            XCTAssertEqual(capture.groups, (0..<received).map { $0 / perGroup * 2 }, name)
            let truth = try XCTUnwrap(capture.unmasked)
            correlations[name] = unmix(capture.residual, groups: capture.groups, truth: truth.residual, spread: true).meanCorrelation
        }
        print("spread, K = 2, noise 3: mean best |corr| of unmixed R with the truth \(correlations)")
        XCTAssertGreaterThan(correlations["colluding"]!, 0.9)
        XCTAssertLessThan(correlations["rank 0 of 3"]!, 0.8)
        XCTAssertThrowsError(try Capture.run(config: config, checkpoint: path, layerName: nil, samples: n, rankView: 3)) {
            XCTAssertTrue("\($0)".contains("--rank-view 3: the view must be one of the 3 untrusted ranks"), "\($0)")
        }
    }
}
