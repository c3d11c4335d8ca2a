import AsymKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The ChaCha20 block function (RFC 8439, §2.3), on four 4-lane rows so that a column round
/// is one vector quarter round and a diagonal round is the same after rotating rows' lanes.
public struct ChaCha20: Sendable {
    private static let constants = SIMD4<UInt32>(0x6170_7865, 0x3320_646E, 0x7962_2D32, 0x6B20_6574)
    private let key0: SIMD4<UInt32>, key1: SIMD4<UInt32>
    private let nonce: (UInt32, UInt32, UInt32)

    /// `key`: 8 little-endian words (256 bits); `nonce`: 3 words.
    public init(key: [UInt32], nonce: [UInt32]) {
        precondition(key.count == 8 && nonce.count == 3, "ChaCha20 takes 8 key words and 3 nonce words")
        key0 = SIMD4(key[0], key[1], key[2], key[3])
        key1 = SIMD4(key[4], key[5], key[6], key[7])
        self.nonce = (nonce[0], nonce[1], nonce[2])
    }

    /// Keystream block `counter`: 16 words, in serialisation order (each little-endian).
    @inline(__always)
    public func block(counter: UInt32) -> (SIMD4<UInt32>, SIMD4<UInt32>, SIMD4<UInt32>, SIMD4<UInt32>) {
        let d0 = SIMD4<UInt32>(counter, nonce.0, nonce.1, nonce.2)
        var a = ChaCha20.constants, b = key0, c = key1, d = d0
        for _ in 0..<10 {
            ChaCha20.quarterRound(&a, &b, &c, &d)
            b = ChaCha20.rotateLanes(b, 1); c = ChaCha20.rotateLanes(c, 2); d = ChaCha20.rotateLanes(d, 3)
            ChaCha20.quarterRound(&a, &b, &c, &d)
            b = ChaCha20.rotateLanes(b, 3); c = ChaCha20.rotateLanes(c, 2); d = ChaCha20.rotateLanes(d, 1)
        }
        return (a &+ ChaCha20.constants, b &+ key0, c &+ key1, d &+ d0)
    }

    @inline(__always)
    private static func quarterRound(_ a: inout SIMD4<UInt32>, _ b: inout SIMD4<UInt32>,
                                     _ c: inout SIMD4<UInt32>, _ d: inout SIMD4<UInt32>) {
        a &+= b; d ^= a; d = rotl(d, 16)
        c &+= d; b ^= c; b = rotl(b, 12)
        a &+= b; d ^= a; d = rotl(d, 8)
        c &+= d; b ^= c; b = rotl(b, 7)
    }

    @inline(__always)
    private static func rotl(_ v: SIMD4<UInt32>, _ k: UInt32) -> SIMD4<UInt32> {
        (v &<< SIMD4(repeating: k)) | (v &>> SIMD4(repeating: 32 - k))
    }

    /// Lane i of the result is lane (i + s) mod 4 of `v`.
    @inline(__always)
    private static func rotateLanes(_ v: SIMD4<UInt32>, _ s: Int) -> SIMD4<UInt32> {
        SIMD4(v[s & 3], v[(s + 1) & 3], v[(s + 2) & 3], v[(s + 3) & 3])
    }
}

/// The randomness of one masked message: a ChaCha20 keystream under a fresh 256-bit key from
/// the system CSPRNG (getrandom on Linux). One system call per message, not per value: noise
/// tensors have millions of values, and the keystream is as unpredictable as its key.
public struct MaskStream: RandomNumberGenerator {
    private let cipher: ChaCha20
    private var counter: UInt32 = 0
    private var words: [UInt32] = []

    public init() {
        var system = SystemRandomNumberGenerator()
        cipher = ChaCha20(key: (0..<8).map { _ in UInt32(truncatingIfNeeded: system.next()) }, nonce: [0, 0, 0])
    }

    /// Takes `count` keystream blocks, returning the first one's counter.
    private mutating func reserve(blocks count: Int) -> UInt32 {
        precondition(Int(counter) + count <= Int(UInt32.max), "keystream exhausted: use a new MaskStream per message")
        defer { counter += UInt32(count) }
        return counter
    }

    public mutating func next() -> UInt64 {
        if words.count < 2 {
            let (a, b, c, d) = cipher.block(counter: reserve(blocks: 1))
            words = [a, b, c, d].flatMap { v in (0..<4).map { v[$0] } }
        }
        let lo = words.removeLast(), hi = words.removeLast()
        return UInt64(hi) << 32 | UInt64(lo)
    }

    /// A standard normal value (Box-Muller), for the small mixing matrices.
    public mutating func normal() -> Double {
        let u1 = Double((next() >> 11) + 1) * 0x1p-53, u2 = Double(next() >> 11) * 0x1p-53
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Fills `p[0..<count]` with normal values of standard deviation `scale`: 16 values per
    /// keystream block (Box-Muller on 24-bit uniforms), blocks in parallel.
    public mutating func fillNormal(_ p: UnsafeMutablePointer<Float>, count: Int, scale: Float) {
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
