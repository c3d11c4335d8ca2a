import AsymKernels
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

/// The randomness of one masked message: a ChaCha20 keystream under a fresh 256-bit key from
/// the system CSPRNG (getrandom on Linux). One system call per message, not per value: noise
/// tensors have millions of values, and the keystream is as unpredictable as its key.
package struct MaskStream: RandomNumberGenerator {
    private let cipher: ChaCha20
    private var counter: UInt32 = 0
    private var words: [UInt32] = []

    package init() {
        var system = SystemRandomNumberGenerator()
        cipher = ChaCha20(key: (0..<8).map { _ in UInt32(truncatingIfNeeded: system.next()) }, nonce: [0, 0, 0])
    }

    /// Takes `count` keystream blocks, returning the first one's counter.
    private mutating func reserve(blocks count: Int) -> UInt32 {
        precondition(Int(counter) + count <= Int(UInt32.max), "keystream exhausted: use a new MaskStream per message")
        defer { counter += UInt32(count) }
        return counter
    }

    package mutating func next() -> UInt64 {
        if words.count < 2 {
            let (a, b, c, d) = cipher.block(counter: reserve(blocks: 1))
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

    /// Fills `p[0..<count]` with normal values of standard deviation `scale`: 16 values per
    /// keystream block (Box-Muller on 24-bit uniforms), blocks in parallel.
    package mutating func fillNormal(_ p: UnsafeMutablePointer<Float>, count: Int, scale: Float) {
        let blocks = (count + 15) / 16
        let first = reserve(blocks: blocks)
        let cipher = self.cipher
        parallelRanges(blocks, grain: 256) { range in
            for blk in range {
                let (a, b, c, d) = cipher.block(counter: first + UInt32(blk))
                let out = p + blk * 16, n = min(16, count - blk * 16)
                MaskStream.boxMuller(a, b, scale: scale, into: out, count: n)
                if n > 8 { MaskStream.boxMuller(c, d, scale: scale, into: out + 8, count: n - 8) }
            }
        }
    }

    /// Up to 8 normal values from two blocks' rows: lane i of `w1` and of `w2` make values 2i, 2i + 1.
    @inline(__always)
    private static func boxMuller(_ w1: SIMD4<UInt32>, _ w2: SIMD4<UInt32>, scale: Float,
                                  into out: UnsafeMutablePointer<Float>, count n: Int) {
        for lane in 0..<4 where 2 * lane < n {
            let u1 = (Float(w1[lane] >> 8) + 1) * 0x1p-24, u2 = Float(w2[lane] >> 8) * 0x1p-24
            let r = scale * (-2 * logf(u1)).squareRoot(), t = 2 * Float.pi * u2
            out[2 * lane] = r * cosf(t)
            if 2 * lane + 1 < n { out[2 * lane + 1] = r * sinf(t) }
        }
    }
}
