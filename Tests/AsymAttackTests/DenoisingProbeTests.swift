import AsymAttack
import AsymKernels
import AsymTrain
import Foundation
import XCTest

final class DenoisingProbeTests: XCTestCase {
    /// What spread masking hands a rank, in miniature: `n` samples of 2 x 16 x 16 whose
    /// class k of four is a smooth Gaussian blob (sigma 3) in quadrant k (the opposite one in
    /// channel 1) of unit RMS, times a random sign per sample, plus i.i.d. N(0, noise^2).
    func maskedLikeFeatures(samples n: Int, noise: Float, seed: UInt64) -> (Features, [Int32]) {
        var rng = RNG(seed: seed)
        let channels = 2, side = 16, classes = 4
        let patterns = (0..<classes).map { k -> [Float] in
            let cy = Float(4 + 8 * (k / 2)), cx = Float(4 + 8 * (k % 2))
            var p = (0..<(channels * side * side)).map { i -> Float in
                let y = Float(i / side % side), x = Float(i % side)
                let (by, bx) = i < side * side ? (cy, cx) : (Float(side - 1) - cy, Float(side - 1) - cx)
                return exp(-((y - by) * (y - by) + (x - bx) * (x - bx)) / 18)
            }
            let rms = (p.reduce(0) { $0 + $1 * $1 } / Float(p.count)).squareRoot()
            for i in p.indices { p[i] /= rms }
            return p
        }
        var values: [Float] = [], labels: [Int32] = []
        for _ in 0..<n {
            let k = Int(rng.next() % UInt64(classes))
            let sign: Float = rng.next() % 2 == 0 ? 1 : -1
            values += patterns[k].map { sign * $0 + noise * rng.normal() }
            labels.append(Int32(k))
        }
        return (Features(shape: [channels, side, side], values: values), labels)
    }

    /// At noise 5 times the signal's RMS the plain probe stays near chance (0.25), while
    /// pooling (4x4: noise std / 4) and fitting both signs recover the class; on pure noise
    /// with random labels the denoising probe is at chance, so it invents nothing.
    func testDenoisingProbeBeatsThePlainProbeOnNoisySignedSmoothSignals() throws {
        setThreads(2)
        let n = 1024, fit = 512, epochs = 4
        let (signal, labels) = maskedLikeFeatures(samples: n, noise: 5, seed: 1)
        let plain = try labelProbeAccuracy(signal, labels: labels, classes: 4, fitCount: fit, epochs: epochs, seed: 1)
        let denoising = try labelProbeAccuracy(signal, labels: labels, classes: 4, fitCount: fit, epochs: epochs, seed: 1,
                                               denoising: .pooledBothSigns)
        var rng = RNG(seed: 1, stream: 3)
        let noise = Features(shape: signal.shape, values: signal.values.map { _ in rng.normal() })
        let randomLabels = labels.map { _ in Int32(rng.next() % 4) }
        let onNoise = try labelProbeAccuracy(noise, labels: randomLabels, classes: 4, fitCount: fit, epochs: epochs, seed: 1,
                                             denoising: .pooledBothSigns)
        print("noise 5 x signal RMS: plain probe \(plain), pooled 4x4 both signs \(denoising); on pure noise \(onNoise)")
        XCTAssertGreaterThan(denoising, 0.55)
        XCTAssertGreaterThan(denoising, plain + 0.25, "denoising \(denoising), plain \(plain)")
        XCTAssertEqual(onNoise, 0.25, accuracy: 0.1)  // 512 held out: chance's std is 0.019
    }

    func testPoolingWindowFollowsTheMapSize() {
        XCTAssertEqual(poolingWindow([8, 28, 28]), 4)
        XCTAssertEqual(poolingWindow([8, 8, 8]), 4)
        XCTAssertEqual(poolingWindow([8, 7, 7]), 2)
        XCTAssertEqual(poolingWindow([8, 4, 9]), 2)  // the smaller side decides
        XCTAssertEqual(poolingWindow([8, 3, 3]), 1)
    }

    func testAveragePoolingAveragesEachWindowAndDropsTheRemainder() {
        // Two samples of one 5 x 5 channel, pooled 2 x 2: the last row and column are dropped.
        let f = Features(shape: [1, 5, 5], values: (0..<50).map(Float.init))
        let pooled = averagePooled(f, window: 2)
        XCTAssertEqual(pooled.shape, [1, 2, 2])
        XCTAssertEqual(pooled.values, [3, 5, 13, 15, 28, 30, 38, 40])
        XCTAssertEqual(averagePooled(f, window: 1).values, f.values)
    }
}
