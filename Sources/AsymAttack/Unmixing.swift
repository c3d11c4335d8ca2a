import AsymKernels
import Foundation

/// Blind source separation of one mask group, the attack that masking's L = k + 2
/// combinations invite: they are k + 1 sources (k residuals or output gradients and one
/// Gaussian noise vector) under one fresh mixing, and every position of the C x H x W map
/// is one observation of that mixing. Residuals are far from Gaussian (a ReLU's sparse
/// output minus a low-rank part), so independent component analysis finds them; only the
/// noise, the one Gaussian source, stays a direction like any other.
package enum FastICA {
    /// Symmetric FastICA (Hyvärinen 1999) with the logcosh contrast, g = tanh: centres and
    /// whitens the `rows` observations of `positions` values each (row-major), keeping the
    /// `sources` strongest principal directions, then rotates them to maximal
    /// non-Gaussianity. Returns the estimated sources, `sources` x `positions` row-major,
    /// each of zero mean and unit variance, in no particular order and of arbitrary sign.
    /// The rotation is fitted on at most `fitPositions` positions drawn at random (a few
    /// thousand pin down a small matrix), then applied to all of them.
    package static func separate(_ x: UnsafePointer<Float>, rows: Int, positions: Int, sources m: Int,
                                 fitPositions: Int = 4096, iterations: Int = 200, seed: UInt64 = 0) -> [Float] {
        precondition(m >= 1 && m <= rows && positions > m, "FastICA of \(m) sources from \(rows) x \(positions)")
        var rng = RNG(seed: seed, stream: 11)
        let n = min(positions, fitPositions)
        let picked = positions <= fitPositions ? Array(0..<positions) : (0..<n).map { _ in Int(rng.next() % UInt64(positions)) }
        let mean = (0..<rows).map { r in (0..<positions).reduce(0.0) { $0 + Double(x[r * positions + $1]) } / Double(positions) }

        // Whitening V = D^-1/2 E^T on the top m eigenpairs of the covariance (the rest is
        // rounding: the mixtures span exactly the sources).
        var cov = [Double](repeating: 0, count: rows * rows)
        for a in 0..<rows {
            for b in a..<rows {
                var s = 0.0
                for p in 0..<positions { s += (Double(x[a * positions + p]) - mean[a]) * (Double(x[b * positions + p]) - mean[b]) }
                cov[a * rows + b] = s / Double(positions); cov[b * rows + a] = cov[a * rows + b]
            }
        }
        let (values, vectors) = symmetricEigen(cov, size: rows)
        let top = (0..<rows).sorted { values[$0] > values[$1] }.prefix(m)
        let whiten = top.flatMap { e in (0..<rows).map { vectors[$0 * rows + e] / max(values[e], 1e-300).squareRoot() } }
        var z = [Double](repeating: 0, count: m * n)
        for (t, p) in picked.enumerated() {
            for a in 0..<m {
                z[a * n + t] = (0..<rows).reduce(0.0) { $0 + whiten[a * rows + $1] * (Double(x[$1 * positions + p]) - mean[$1]) }
            }
        }

        var w = decorrelated((0..<(m * m)).map { _ in Double(rng.normal()) }, size: m)
        var y = [Double](repeating: 0, count: n)
        for _ in 0..<iterations {
            // W+ = E{g(W z) z^T} - diag(E{g'(W z)}) W, then W = (W+ W+^T)^-1/2 W+.
            var next = [Double](repeating: 0, count: m * m)
            for a in 0..<m {
                for t in 0..<n { y[t] = (0..<m).reduce(0.0) { $0 + w[a * m + $1] * z[$1 * n + t] } }
                var slope = 0.0
                for t in 0..<n {
                    let g = tanh(y[t])
                    slope += 1 - g * g
                    for b in 0..<m { next[a * m + b] += g * z[b * n + t] }
                }
                for b in 0..<m { next[a * m + b] = next[a * m + b] / Double(n) - slope / Double(n) * w[a * m + b] }
            }
            next = decorrelated(next, size: m)
            // Converged when every row keeps its direction (up to sign).
            let change = (0..<m).map { a in abs(1 - abs((0..<m).reduce(0.0) { $0 + next[a * m + $1] * w[a * m + $1] })) }.max()!
            w = next
            if change < 1e-7 { break }
        }

        // Sources = W V (x - mean) at every position.
        let unmix = (0..<m).flatMap { a in (0..<rows).map { r in (0..<m).reduce(0.0) { $0 + w[a * m + $1] * whiten[$1 * rows + r] } } }
        var out = [Float](repeating: 0, count: m * positions)
        for a in 0..<m {
            let offset = (0..<rows).reduce(0.0) { $0 + unmix[a * rows + $1] * mean[$1] }
            for p in 0..<positions {
                out[a * positions + p] = Float((0..<rows).reduce(0.0) { $0 + unmix[a * rows + $1] * Double(x[$1 * positions + p]) } - offset)
            }
        }
        return out
    }

    /// (W W^T)^-1/2 W for a square W: the nearest matrix with orthonormal rows, so that all
    /// rows are updated alike (symmetric FastICA) rather than one after another.
    static func decorrelated(_ w: [Double], size m: Int) -> [Double] {
        var gram = [Double](repeating: 0, count: m * m)
        for a in 0..<m { for b in 0..<m { gram[a * m + b] = (0..<m).reduce(0.0) { $0 + w[a * m + $1] * w[b * m + $1] } } }
        let (values, vectors) = symmetricEigen(gram, size: m)
        // E diag(1/sqrt(d)) E^T W.
        var inverseRoot = [Double](repeating: 0, count: m * m)
        for a in 0..<m {
            for b in 0..<m {
                inverseRoot[a * m + b] = (0..<m).reduce(0.0) { $0 + vectors[a * m + $1] * vectors[b * m + $1] / values[$1].squareRoot() }
            }
        }
        return (0..<m).flatMap { a in (0..<m).map { b in (0..<m).reduce(0.0) { $0 + inverseRoot[a * m + $1] * w[$1 * m + b] } } }
    }
}

/// Eigenvalues and eigenvectors of a symmetric n x n matrix (row-major) by cyclic Jacobi
/// rotations: small matrices only. Column e of `vectors` (row-major n x n) belongs to values[e].
func symmetricEigen(_ matrix: [Double], size n: Int) -> (values: [Double], vectors: [Double]) {
    var a = matrix
    var v = (0..<(n * n)).map { $0 / n == $0 % n ? 1.0 : 0.0 }
    let scale = max((0..<(n * n)).reduce(0.0) { $0 + a[$1] * a[$1] }.squareRoot(), 1e-300)
    for _ in 0..<100 {
        let off = (0..<n).reduce(0.0) { s, p in s + (0..<n).reduce(0.0) { $1 == p ? $0 : $0 + a[p * n + $1] * a[p * n + $1] } }
        if off.squareRoot() <= 1e-15 * scale { break }
        for p in 0..<n {
            for q in (p + 1)..<n where a[p * n + q] != 0 {
                // The rotation that zeroes a[p][q] (Golub & Van Loan, symmetric Schur).
                let theta = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q])
                let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                let c = 1 / (t * t + 1).squareRoot(), s = t * c
                for k in 0..<n {
                    let akp = a[k * n + p], akq = a[k * n + q]
                    a[k * n + p] = c * akp - s * akq; a[k * n + q] = s * akp + c * akq
                }
                for k in 0..<n {
                    let apk = a[p * n + k], aqk = a[q * n + k]
                    a[p * n + k] = c * apk - s * aqk; a[q * n + k] = s * apk + c * aqk
                }
                for k in 0..<n {
                    let vkp = v[k * n + p], vkq = v[k * n + q]
                    v[k * n + p] = c * vkp - s * vkq; v[k * n + q] = s * vkp + c * vkq
                }
            }
        }
    }
    return ((0..<n).map { a[$0 * n + $0] }, v)
}

/// What the unmixing attack recovers from a masked capture, one entry per sample in sample
/// order: the recovered source that best matches the sample (by |correlation| with the
/// truth, an oracle pairing like the dominant-sample labels), its sign, scale and offset
/// fitted to the truth by least squares (a tiny bit of side information), and that
/// |correlation|.
package struct Unmixed {
    package var features: Features
    package var correlations: [Double]
    package var meanCorrelation: Double { correlations.reduce(0, +) / Double(max(correlations.count, 1)) }
}

/// Runs FastICA on every mask group of `received` (the combinations that crossed, in group
/// order, with `groups[j]` the first sample of combination j's group; every group of the
/// capture present, as a group's size is where the next one starts) and pairs the recovered
/// sources with `truth`, the tensors before masking, one per sample. A group of k samples
/// mixes k + p sources (p = 1 noise vector, or k with `spread`); FastICA looks for as many as
/// the group's received combinations can hold: k + 1 from the k + 2 of a whole group, k from
/// one rank's k combinations of a spread group (fewer observations than sources: the best it
/// can do is the k most non-Gaussian directions of that span).
package func unmix(_ received: Features, groups: [Int], truth: Features, spread: Bool = false, seed: Int = 0) -> Unmixed {
    let size = truth.sampleSize
    var out = Unmixed(features: Features(shape: truth.shape, values: [Float](repeating: 0, count: truth.values.count)),
                      correlations: [Double](repeating: 0, count: truth.count))
    var j0 = 0
    while j0 < groups.count {
        let first = groups[j0]
        let L = groups[j0...].prefix { $0 == first }.count
        let k = (j0 + L < groups.count ? groups[j0 + L] : truth.count) - first
        let m = min(L, k + (spread ? k : 1))
        let sources = received.values.withUnsafeBufferPointer {
            FastICA.separate($0.baseAddress! + j0 * size, rows: L, positions: size, sources: m,
                             seed: UInt64(truncatingIfNeeded: seed &+ first))
        }
        for i in first..<(first + k) {
            let t = truth.values[(i * size)..<((i + 1) * size)]
            let fits = (0..<m).map { affineFit(sources[($0 * size)..<(($0 + 1) * size)], to: t) }
            let best = fits.indices.max { fits[$0].correlation < fits[$1].correlation }!
            out.correlations[i] = fits[best].correlation
            let s = sources[(best * size)..<((best + 1) * size)]
            for (p, v) in zip((i * size)..<((i + 1) * size), s) { out.features.values[p] = fits[best].scale * v + fits[best].offset }
        }
        j0 += L
    }
    return out
}

/// The least-squares a s + b of source `s` to target `t`, and |Pearson correlation| of s and t.
package func affineFit(_ s: ArraySlice<Float>, to t: ArraySlice<Float>) -> (correlation: Double, scale: Float, offset: Float) {
    let n = Double(s.count)
    var ss = 0.0, st = 0.0, tt = 0.0, ms = 0.0, mt = 0.0
    for (a, b) in zip(s, t) { ms += Double(a); mt += Double(b) }
    ms /= n; mt /= n
    for (a, b) in zip(s, t) {
        let da = Double(a) - ms, db = Double(b) - mt
        ss += da * da; st += da * db; tt += db * db
    }
    let scale = ss > 0 ? st / ss : 0
    return (abs(st) / max((ss * tt).squareRoot(), 1e-300), Float(scale), Float(mt - scale * ms))
}
