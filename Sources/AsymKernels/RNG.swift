/// The project's seeded random number generator: xoshiro256** (Blackman & Vigna).
///
/// Every random choice in training (initialisation, shuffling, synthetic data) draws from
/// an `RNG`, never from the system generator, so a run is reproducible from its seed and
/// its state can be saved in a checkpoint and restored bit-exactly.
package struct RNG: RandomNumberGenerator, Equatable, Sendable {
    /// The four 64-bit words of state; save and restore them to continue a stream exactly.
    package var state: (UInt64, UInt64, UInt64, UInt64)

    /// Seeds the four state words from `seed` with splitmix64, as the xoshiro authors advise.
    package init(seed: UInt64) {
        var s = seed
        func splitmix() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    /// Restores a generator from saved state words (see `stateWords`).
    package init(stateWords w: [UInt64]) {
        precondition(w.count == 4, "RNG state has 4 words")
        state = (w[0], w[1], w[2], w[3])
    }

    package var stateWords: [UInt64] { [state.0, state.1, state.2, state.3] }

    /// A derived, independent stream: used to give each purpose (init, shuffling, ...) its own.
    package init(seed: UInt64, stream: UInt64) {
        self.init(seed: seed &+ stream &* 0xD1B5_4A32_D192_ED03)
    }

    package mutating func next() -> UInt64 {
        let result = rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotl(state.3, 45)
        return result
    }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 {
        (x << k) | (x >> (64 - k))
    }

    /// Uniform in [0, 1) with 24 random bits (every value exactly representable as Float).
    package mutating func uniform() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Standard normal by Box-Muller (one value per call; simple and deterministic).
    package mutating func normal() -> Float {
        let u1 = Double((next() >> 11) + 1) * (1.0 / 9_007_199_254_740_993.0)  // (0, 1]
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return Float((-2.0 * _log(u1)).squareRoot() * _cos(2.0 * Double.pi * u2))
    }

    /// A uniformly random integer in 0..<n without modulo bias.
    package mutating func below(_ n: Int) -> Int {
        precondition(n > 0)
        return Int(next(upperBound: UInt64(n)))
    }

    /// A seeded Fisher-Yates permutation of 0..<n.
    package mutating func permutation(_ n: Int) -> [Int32] {
        var p = (0..<Int32(n)).map { $0 }
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) {
                p.swapAt(i, below(i + 1))
            }
        }
        return p
    }

    package static func == (a: RNG, b: RNG) -> Bool { a.stateWords == b.stateWords }
}

#if canImport(Glibc)
import Glibc
@inline(__always) private func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Darwin
@inline(__always) private func _log(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
