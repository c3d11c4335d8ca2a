import AsymKernels
import Crypto
import _CryptoExtras
import CNoise
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

    /// Fills `p[0..<count]` with normal values of standard deviation `scale`: Box-Muller
    /// (`asym_box_muller`, on the widest vector unit the CPU has) on AES-CTR keystream words,
    /// one word per value, in chunks of 2^13 values (each under its own nonce) in parallel, so
    /// each value depends only on its position, not on the thread count. A chunk's 32 KB of
    /// keystream stays under malloc's mmap threshold: no page faults per chunk.
    package mutating func fillNormal(_ p: UnsafeMutablePointer<Float>, count: Int, scale: Float) {
        precondition(bulkCalls < UInt32.max, "keystream exhausted: use a new SecretStream per message")
        let chunk = 1 << 13, chunks = (count + chunk - 1) / chunk
        let call = bulkCalls, key = bulkKey
        bulkCalls += 1
        // Box-Muller takes words in groups of 32: a short last chunk draws its group in full.
        let zeros = [UInt8](repeating: 0, count: 4 * min(chunk, (count + 31) / 32 * 32))
        parallelRanges(chunks, grain: 2) { range in
            for c in range {
                let lo = c * chunk, n = min(chunk, count - lo)
                let keystream: Data
                do {  // nonce (call, chunk, 0): 96 bits, then AES-CTR's 32-bit block counter from 0
                    let nonce = try AES._CTR.Nonce(nonceBytes: [call, UInt32(c), 0].withUnsafeBytes { Array($0) })
                    keystream = try AES._CTR.encrypt(zeros[0..<(4 * ((n + 31) / 32 * 32))], using: key, nonce: nonce)
                } catch {
                    fatalError("AES-CTR with a 256-bit key and a 96-bit nonce failed: \(error)")
                }
                keystream.withUnsafeBytes { words in
                    asym_box_muller(words.baseAddress!.assumingMemoryBound(to: UInt32.self), n, scale, p + lo)
                }
            }
        }
    }
}
