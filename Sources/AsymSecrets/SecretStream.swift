import AsymKernels
import Crypto
import _CryptoExtras
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The project's one source of secret randomness: the masks and noise of masked messages
/// (Masking, residual noise) and the integrity checks' vectors. A rank that could predict
/// these could unmask what crosses or forge results that pass, so the training RNG (seeded,
/// replicated) must never be used for them.
///
/// Keys come fresh from the system CSPRNG (getrandom on Linux) when a stream is made: one
/// system call per stream, not per value, as the keystreams are as unpredictable as their
/// keys. Small draws (mixing matrices, signs, check vectors) come from a ChaCha20 keystream;
/// noise tensors, millions of values, from AES-256 in counter mode (BoringSSL, on the CPU's AES
/// instructions, several times the rate of the scalar ChaCha20).
package struct SecretStream: RandomNumberGenerator {
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
            precondition(counter < UInt32.max, "keystream exhausted: use a new SecretStream per message")
            let (a, b, c, d) = cipher.block(counter: counter)
            counter += 1
            words = [a, b, c, d].flatMap { v in (0..<4).map { v[$0] } }
        }
        let lo = words.removeLast(), hi = words.removeLast()
        return UInt64(hi) << 32 | UInt64(lo)
    }

    /// Fills `p` with values of random sign and magnitude uniform in [1, 2), one keystream word
    /// each (for the integrity checks' secret vectors): a magnitude of at least 1 makes any
    /// single corrupted value show in a combination at full size; a continuous magnitude
    /// leaves a forger no cancellation to aim at.
    package mutating func fillSigned(_ p: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            let pair = next()
            for w in [UInt32(truncatingIfNeeded: pair), UInt32(truncatingIfNeeded: pair >> 32)] where i < count {
                p[i] = Float(bitPattern: (w & 0x8000_0000) | 0x3F80_0000 | (w & 0x007F_FFFF))
                i += 1
            }
        }
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
        precondition(bulkCalls < UInt32.max, "keystream exhausted: use a new SecretStream per message")
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
                            SecretStream.boxMuller(w1, w2, scale: scale, into: p + lo + i)
                        } else {
                            withUnsafeMutableBytes(of: &last) { v in
                                let values = v.baseAddress!.assumingMemoryBound(to: Float.self)
                                SecretStream.boxMuller(w1, w2, scale: scale, into: values)
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
    /// 1/sqrt, all accurate to about 1e-7 relative (`SecretStreamTests.testVectorBoxMullerMatchesLibm`).
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
