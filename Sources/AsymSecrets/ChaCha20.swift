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

