import XCTest
import Foundation
import AsymKernels
import AsymSecrets
import CNoise
#if canImport(Glibc)
import Glibc
#endif

/// The noise behind masking: the vectorised Box-Muller against libm, and the distribution of
/// `SecretStream.fillNormal` against the normal law.
final class SecretStreamTests: XCTestCase {
    /// Every value of the vector transform equals Box-Muller computed with libm on the same
    /// words (radius sqrt(-2 ln u1), angle (quadrant + offset) pi / 2), to float rounding, in
    /// whole groups of 32 and in a short last group (which must write nothing past its end).
    func testBoxMullerMatchesLibm() {
        var rng = SystemRandomNumberGenerator()
        var worst: Float = 0
        for trial in 0..<10_000 {
            var words = (0..<32).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
            if trial == 0 { for l in 0..<16 { words[l] = .max }; words[1] = 0; words[2] = 0xFF }  // u1 = 1 (radius 0), the smallest u1s
            let count = trial % 2 == 0 ? 32 : 1 + trial % 31
            var out = [Float](repeating: .nan, count: 33)
            asym_box_muller(words, count, 2, &out)
            XCTAssertTrue(out[count].isNaN, "nothing written past the count")
            for v in 0..<count {
                let l = v % 16, radius = words[l], angleWord = words[16 + l]
                let u1 = (Double(radius >> 8) + 1) * 0x1p-24
                let angle = (Double(angleWord >> 30) + Double(angleWord & 0xFF_FFFF) * 0x1p-24 - 0.5) * Double.pi / 2
                let r = 2 * (-2 * Foundation.log(u1)).squareRoot()
                let want = v < 16 ? r * Foundation.cos(angle) : r * Foundation.sin(angle)
                XCTAssertTrue(out[v].isFinite)
                worst = max(worst, Float(abs(Double(out[v]) - want) / max(1, abs(want))))
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
                var stream = SecretStream()
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
        var a = SecretStream(), b = SecretStream()
        let n = 40_000, x = Tensor(shape: [n]), y = Tensor(shape: [n]), z = Tensor(shape: [n])
        a.fillNormal(x.data, count: n, scale: 1)
        a.fillNormal(y.data, count: n, scale: 1)
        b.fillNormal(z.data, count: n, scale: 1)
        for (name, u, v) in [("two calls", x, y), ("two streams", x, z)] {
            let same = (0..<n).filter { u[$0] == v[$0] }.count
            XCTAssertLessThan(same, 5, name)
        }
    }

    /// RFC 8439 §2.3.2: the block function's test vector.
    func testChaCha20MatchesRFC8439() {
        // Key bytes 00 01 .. 1f, as little-endian words.
        var key: [UInt32] = []
        for i in 0..<8 {
            let byte = UInt32(4 * i)
            key.append(byte | (byte + 1) << 8 | (byte + 2) << 16 | (byte + 3) << 24)
        }
        let block = ChaCha20(key: key, nonce: [0x0900_0000, 0x4A00_0000, 0]).block(counter: 1)
        var words: [UInt32] = []
        for row in [block.0, block.1, block.2, block.3] { for lane in 0..<4 { words.append(row[lane]) } }
        XCTAssertEqual(words, [0xE4E7_F110, 0x1559_3BD1, 0x1FDD_0F50, 0xC471_20A3,
                               0xC7F4_D1C7, 0x0368_C033, 0x9AAA_2204, 0x4E6C_D4C3,
                               0x4664_82D2, 0x09AA_9F07, 0x05D7_C214, 0xA202_8BD9,
                               0xD19C_12B5, 0xB94E_16DE, 0xE883_D0CB, 0x4E3C_50A2])
    }

    /// The integrity checks' vectors: every value of random sign with magnitude in [1, 2), both
    /// signs and the whole range present, and two draws differ.
    func testSignedValuesCoverBothSignsAndTheRange() {
        var stream = SecretStream()
        for count in [1, 2, 3, 17, 4096] {
            var a = [Float](repeating: 0, count: count), b = a
            a.withUnsafeMutableBufferPointer { stream.fillSigned($0.baseAddress!, count: count) }
            b.withUnsafeMutableBufferPointer { stream.fillSigned($0.baseAddress!, count: count) }
            XCTAssertTrue(a.allSatisfy { abs($0) >= 1 && abs($0) < 2 }, "\(count)")
            XCTAssertNotEqual(a, b)
            if count == 4096 {
                XCTAssertEqual(Double(a.filter { $0 < 0 }.count) / 4096, 0.5, accuracy: 0.05)
                XCTAssertLessThan(a.map { abs($0) }.min()!, 1.01)
                XCTAssertGreaterThan(a.map { abs($0) }.max()!, 1.99)
            }
        }
    }
}
