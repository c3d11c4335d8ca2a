import XCTest
import Foundation
import AsymKernels
import AsymSplit
#if canImport(Glibc)
import Glibc
#endif

/// The noise behind masking: the vectorised Box-Muller against libm, and the distribution of
/// `MaskStream.fillNormal` against the normal law.
final class MaskStreamTests: XCTestCase {
    /// Every value of the vector transform equals Box-Muller computed with libm on the same
    /// words (radius sqrt(-2 ln u1), angle (quadrant + offset) pi / 2), to float rounding.
    func testVectorBoxMullerMatchesLibm() {
        var rng = SystemRandomNumberGenerator()
        var worst: Float = 0
        var out = [Float](repeating: 0, count: 16)
        for trial in 0..<20_000 {
            var w1 = SIMD8<UInt32>(), w2 = SIMD8<UInt32>()
            for l in 0..<8 { w1[l] = rng.next(); w2[l] = rng.next() }
            if trial == 0 { w1 = SIMD8(repeating: .max); w1[1] = 0; w1[2] = 0xFF }  // u1 = 1 (radius 0), the smallest u1s
            out.withUnsafeMutableBufferPointer { MaskStream.boxMuller(w1, w2, scale: 2, into: $0.baseAddress!) }
            for l in 0..<8 {
                let u1 = (Double(w1[l] >> 8) + 1) * 0x1p-24
                let angle = (Double(w2[l] >> 30) + Double(w2[l] & 0xFF_FFFF) * 0x1p-24 - 0.5) * Double.pi / 2
                let r = 2 * (-2 * Foundation.log(u1)).squareRoot()
                for (got, want) in [(out[l], r * Foundation.cos(angle)), (out[8 + l], r * Foundation.sin(angle))] {
                    XCTAssertTrue(got.isFinite)
                    worst = max(worst, Float(abs(Double(got) - want) / max(1, abs(want))))
                }
            }
        }
        print("vector Box-Muller: worst error \(worst) (relative above 1, absolute below)")
        XCTAssertLessThan(worst, 2e-6)
    }

    /// fillNormal's values follow N(0, scale^2): mean, spread, kurtosis and the mass within
    /// one and two standard deviations, on lengths that do and do not fill a chunk or a group.
    func testFillNormalFollowsTheNormalLaw() {
        for threads in [1, 2] {
            setThreads(threads)
            for n in [1_000_003, 70_000, 13] {
                var stream = MaskStream()
                let t = Tensor(shape: [n])
                t.data.initialize(repeating: .nan, count: n)
                stream.fillNormal(t.data, count: n, scale: 3)
                let x = t.array.map { Double($0) / 3 }
                XCTAssertTrue(x.allSatisfy(\.isFinite), "every value written (n = \(n))")
                guard n > 1000 else { continue }
                let mean = x.reduce(0, +) / Double(n)
                let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n)
                let kurtosis = x.reduce(0) { $0 + pow($1 - mean, 4) } / Double(n) / (variance * variance)
                let within1 = Double(x.filter { abs($0) < 1 }.count) / Double(n)
                let within2 = Double(x.filter { abs($0) < 2 }.count) / Double(n)
                let slack = 5 / Double(n).squareRoot()  // about 10 standard errors of a fraction
                XCTAssertEqual(mean, 0, accuracy: slack)
                XCTAssertEqual(variance.squareRoot(), 1, accuracy: slack)
                XCTAssertEqual(kurtosis, 3, accuracy: 50 * slack)
                XCTAssertEqual(within1, 0.682_689, accuracy: slack)
                XCTAssertEqual(within2, 0.954_500, accuracy: slack)
            }
        }
        setThreads(1)
    }

    /// Two streams, and two calls of one stream, never repeat a value pattern.
    func testStreamsAndCallsDiffer() {
        var a = MaskStream(), b = MaskStream()
        let n = 40_000, x = Tensor(shape: [n]), y = Tensor(shape: [n]), z = Tensor(shape: [n])
        a.fillNormal(x.data, count: n, scale: 1)
        a.fillNormal(y.data, count: n, scale: 1)
        b.fillNormal(z.data, count: n, scale: 1)
        for (name, u, v) in [("two calls", x, y), ("two streams", x, z)] {
            let same = (0..<n).filter { u[$0] == v[$0] }.count
            XCTAssertLessThan(same, 5, name)
        }
    }
}
