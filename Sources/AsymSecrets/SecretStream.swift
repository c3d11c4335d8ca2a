import AsymKernels
import Crypto
import _CryptoExtras
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The ChaCha20 block function (RFC 8439, §2.3), on sixteen scalar words: the compiler keeps
/// them in registers (a 4-lane vector version with lane rotations ran several times slower).
package struct ChaCha20: Sendable {
    private let key: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    private let nonce: (UInt32, UInt32, UInt32)

    /// `key`: 8 little-endian words (256 bits); `nonce`: 3 words.
    package init(key k: [UInt32], nonce n: [UInt32]) {
        precondition(k.count == 8 && n.count == 3, "ChaCha20 takes 8 key words and 3 nonce words")
        key = (k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7])
        nonce = (n[0], n[1], n[2])
    }

    /// Keystream block `counter`: 16 words in serialisation order (each little-endian), as four rows.
    @inline(__always)
    package func block(counter: UInt32) -> (SIMD4<UInt32>, SIMD4<UInt32>, SIMD4<UInt32>, SIMD4<UInt32>) {
        let c0: UInt32 = 0x6170_7865, c1: UInt32 = 0x3320_646E, c2: UInt32 = 0x7962_2D32, c3: UInt32 = 0x6B20_6574
        var x0 = c0, x1 = c1, x2 = c2, x3 = c3
        var x4 = key.0, x5 = key.1, x6 = key.2, x7 = key.3, x8 = key.4, x9 = key.5, x10 = key.6, x11 = key.7
        var x12 = counter, x13 = nonce.0, x14 = nonce.1, x15 = nonce.2
        for _ in 0..<10 {
            ChaCha20.quarterRound(&x0, &x4, &x8, &x12); ChaCha20.quarterRound(&x1, &x5, &x9, &x13)
            ChaCha20.quarterRound(&x2, &x6, &x10, &x14); ChaCha20.quarterRound(&x3, &x7, &x11, &x15)
            ChaCha20.quarterRound(&x0, &x5, &x10, &x15); ChaCha20.quarterRound(&x1, &x6, &x11, &x12)
            ChaCha20.quarterRound(&x2, &x7, &x8, &x13); ChaCha20.quarterRound(&x3, &x4, &x9, &x14)
        }
        return (SIMD4(x0 &+ c0, x1 &+ c1, x2 &+ c2, x3 &+ c3),
                SIMD4(x4 &+ key.0, x5 &+ key.1, x6 &+ key.2, x7 &+ key.3),
                SIMD4(x8 &+ key.4, x9 &+ key.5, x10 &+ key.6, x11 &+ key.7),
                SIMD4(x12 &+ counter, x13 &+ nonce.0, x14 &+ nonce.1, x15 &+ nonce.2))
    }

    @inline(__always)
    private static func quarterRound(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32) {
        a &+= b; d ^= a; d = d << 16 | d >> 16
        c &+= d; b ^= c; b = b << 12 | b >> 20
        a &+= b; d ^= a; d = d << 8 | d >> 24
        c &+= d; b ^= c; b = b << 7 | b >> 25
    }
}

/// The randomness of one masked message, under fresh keys from the system CSPRNG (getrandom on
/// Linux): one system call per message, not per value, as the keystreams are as unpredictable
/// as their keys. Small draws (mixing matrices, signs) come from a ChaCha20 keystream; noise
/// tensors, millions of values, from AES-256 in counter mode (BoringSSL, on the CPU's AES
/// instructions, several times the rate of this file's scalar ChaCha20).
package struct MaskStream: RandomNumberGenerator {
    private let cipher: ChaCha20
    private var counter: UInt32 = 0
    private var words: [UInt32] = []
    private let bulkKey: SymmetricKey
    /// `fillNormal` calls so far: each takes its own AES nonces, so no keystream repeats.
    private var bulkCalls: UInt32 = 0

    package init() {
        var system = SystemRandomNumberGenerator()
        cipher = ChaCha20(key: (0..<8).map { _ in UInt32(truncatingIfNeeded: system.next()) }, nonce: [0, 0, 0])
        bulkKey = SymmetricKey(size: .bits256)
    }

    package mutating func next() -> UInt64 {
        if words.count < 2 {
            precondition(counter < UInt32.max, "keystream exhausted: use a new MaskStream per message")
            let (a, b, c, d) = cipher.block(counter: counter)
            counter += 1
            words = [a, b, c, d].flatMap { v in (0..<4).map { v[$0] } }
        }
        let lo = words.removeLast(), hi = words.removeLast()
        return UInt64(hi) << 32 | UInt64(lo)
    }

    /// A standard normal value (Box-Muller), for the small mixing matrices.
    package mutating func normal() -> Double {
        let u1 = Double((next() >> 11) + 1) * 0x1p-53, u2 = Double(next() >> 11) * 0x1p-53
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Fills `p[0..<count]` with normal values of standard deviation `scale`: Box-Muller on
    /// AES-CTR keystream words, one word per value, in chunks of 2^15 values (each under its own
    /// nonce) in parallel, so each value depends only on its position, not on the thread count.
    package mutating func fillNormal(_ p: UnsafeMutablePointer<Float>, count: Int, scale: Float) {
        precondition(bulkCalls < UInt32.max, "keystream exhausted: use a new MaskStream per message")
        let chunk = 1 << 15, chunks = (count + chunk - 1) / chunk
        let call = bulkCalls, key = bulkKey
        bulkCalls += 1
        let zeros = [UInt8](repeating: 0, count: 4 * min(chunk, (count + 15) / 16 * 16))
        parallelRanges(chunks, grain: 2) { range in
            for c in range {
                let lo = c * chunk, n = min(chunk, count - lo)
                let keystream: Data
                do {  // nonce (call, chunk, 0): 96 bits, then AES-CTR's 32-bit block counter from 0
                    let nonce = try AES._CTR.Nonce(nonceBytes: [call, UInt32(c), 0].withUnsafeBytes { Array($0) })
                    keystream = try AES._CTR.encrypt(zeros[0..<(4 * ((n + 15) / 16 * 16))], using: key, nonce: nonce)
                } catch {
                    fatalError("AES-CTR with a 256-bit key and a 96-bit nonce failed: \(error)")
                }
                keystream.withUnsafeBytes { words in
                    var last = SIMD16<Float>()  // a short last group's 16 values, of which n - i are kept
                    for i in stride(from: 0, to: n, by: 16) {
                        let w1 = words.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self)
                        let w2 = words.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<UInt32>.self)
                        if i + 16 <= n {
                            MaskStream.boxMuller(w1, w2, scale: scale, into: p + lo + i)
                        } else {
                            withUnsafeMutableBytes(of: &last) { v in
                                let values = v.baseAddress!.assumingMemoryBound(to: Float.self)
                                MaskStream.boxMuller(w1, w2, scale: scale, into: values)
                                (p + lo + i).update(from: values, count: n - i)
                            }
                        }
                    }
                }
            }
        }
    }

    /// 16 normal values from 8 + 8 uniform words: radius sqrt(-2 ln u1) from `w1`, angle from
    /// `w2` (its top two bits pick the quadrant, its low 24 bits the offset in it, so sine and
    /// cosine need polynomials on [-pi/4, pi/4) only). Cosines go to out[0..<8], sines to
    /// out[8..<16]. Only vector adds, multiplies and selects (the compiler turns SIMD square
    /// roots and calls into scalar loops): ln by its series, the square root by Newton steps on
    /// 1/sqrt, all accurate to about 1e-7 relative (`MaskStreamTests.testVectorBoxMullerMatchesLibm`).
    @inline(__always)
    package static func boxMuller(_ w1: SIMD8<UInt32>, _ w2: SIMD8<UInt32>, scale: Float, into out: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        // u1 in (0, 1] = 2^e m, m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(t), t = (m - 1) / (m + 1),
        // |t| < 0.172, by its odd series to t^9.
        let u1 = (V(SIMD8<Int32>(truncatingIfNeeded: w1 &>> 8)) + 1) * 0x1p-24
        // Moving the bits by 1 - sqrt(1/2) (as floats' bit patterns) puts m's range boundary at
        // sqrt(1/2) with integer operations only.
        let bits = unsafeBitCast(u1, to: SIMD8<Int32>.self) &+ (0x3F80_0000 - 0x3F35_04F3)
        let e = V((bits &>> 23) &- 127)
        let m = unsafeBitCast((bits & 0x007F_FFFF) &+ 0x3F35_04F3, to: V.self)
        let t = (m - 1) / (m + 1), t2 = t * t
        var series = t2 * (1.0 / 9) + (1.0 / 7)
        series = (series * t2 + (1.0 / 5)) * t2 + (1.0 / 3)
        series = series * t2 + 1
        let x = -2 * (e * 0.693_147_18 + 2 * t * series)  // -2 ln u1, in [0, 33.3]
        // sqrt(x) = x / sqrt(x): 1/sqrt(x) from the exponent-halving guess and three Newton steps.
        var y = unsafeBitCast(SIMD8<Int32>(repeating: 0x5F37_59DF) &- (unsafeBitCast(x, to: SIMD8<Int32>.self) &>> 1), to: V.self)
        y = y * (1.5 - 0.5 * x * y * y)
        y = y * (1.5 - 0.5 * x * y * y)
        y = y * (1.5 - 0.5 * x * y * y)
        let r = scale * x * y  // u1 = 1 gives x = -0, a finite guess y and r = 0
        let a = (V(SIMD8<Int32>(truncatingIfNeeded: w2 & 0xFF_FFFF)) * 0x1p-24 - 0.5) * (Float.pi / 2)
        let a2 = a * a
        var sinA = a2 * (1.0 / 362_880) - (1.0 / 5040)
        sinA = ((sinA * a2 + (1.0 / 120)) * a2 - (1.0 / 6)) * a2 + 1
        sinA = sinA * a
        var cosA = a2 * (-1.0 / 3_628_800) + (1.0 / 40320)
        cosA = ((cosA * a2 - (1.0 / 720)) * a2 + (1.0 / 24)) * a2 - 0.5
        cosA = cosA * a2 + 1
        // Quadrant q: (sin, cos)(q pi/2 + a) is (sin a, cos a) turned q quarter turns: odd q
        // swaps them (negating the cosine), q >= 2 negates both; done on bit patterns (SIMD
        // comparisons and selects compile to scalar loops).
        let sinBits = unsafeBitCast(sinA, to: SIMD8<UInt32>.self), cosBits = unsafeBitCast(cosA, to: SIMD8<UInt32>.self)
        let odd = 0 &- ((w2 &>> 30) & 1), sign = (w2 &>> 31) &<< 31
        let s = unsafeBitCast((sinBits & ~odd | cosBits & odd) ^ sign, to: V.self)
        let c = unsafeBitCast((cosBits & ~odd | (sinBits ^ 0x8000_0000) & odd) ^ sign, to: V.self)
        UnsafeMutableRawPointer(out).storeBytes(of: r * c, as: V.self)
        UnsafeMutableRawPointer(out + 8).storeBytes(of: r * s, as: V.self)
    }
}
