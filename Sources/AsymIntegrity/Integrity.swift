import AsymKernels
import AsymSecrets
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which untrusted result a check covers (design §8).
package enum IntegrityCheck: String, Sendable, CaseIterable {
    case outputShare = "output share"
    case inputGradient = "input gradient"
    case gradientShare = "weight-gradient share"
}

/// What a split layer does when an untrusted result fails its check.
package enum IntegrityPolicy: String, Sendable {
    /// Hand the failure to the layer's `failureHandler` (without one: stop the process).
    case report
    /// Compute the result on the trusted side, tell the `failureHandler` (for the log) and go on.
    case recompute
}

/// What a failed check leads to, wherever results are checked (a split layer, or the masking
/// layer for the combinations it sent): under `.recompute`, `recompute` replaces the result
/// first; then the failure goes to `handler`. Under `.report` without a handler the process
/// stops: an unchecked result must never be used silently. Returns the failure, if any.
@discardableResult
package func settle(_ failure: IntegrityFailure?, policy: IntegrityPolicy, handler: ((IntegrityFailure) -> Void)?,
                    recompute: () -> Void) -> IntegrityFailure? {
    guard let failure else { return nil }
    switch (policy, handler) {
    case (.recompute, let handler):
        recompute()
        handler?(failure)
    case (.report, let handler?):
        handler(failure)
    case (.report, nil):
        preconditionFailure("\(failure)")
    }
    return failure
}

/// An untrusted result that failed its check: the worst compared value and its tolerance.
package struct IntegrityFailure: Error, Equatable, CustomStringConvertible {
    package let check: IntegrityCheck
    package let layer: Int
    /// The worst compared value: sample * positions + position for the output share and the
    /// input gradient (positions of Y resp. X), the output channel for the weight-gradient share.
    package let index: Int
    /// |s^T result - trusted probe| there, and what float32 rounding allows there (a NaN or
    /// infinite value on either side fails).
    package let discrepancy: Float
    package let allowed: Float
    /// For a weight-gradient share checked by sample range (one untrusted rank's shard of the
    /// batch), those samples.
    package let samples: Range<Int>?

    init(check: IntegrityCheck, layer: Int, index: Int, discrepancy: Float, allowed: Float, samples: Range<Int>? = nil) {
        self.check = check; self.layer = layer; self.index = index
        self.discrepancy = discrepancy; self.allowed = allowed; self.samples = samples
    }

    /// The same failure with its sample renumbered by `map` (a check of a message that was a
    /// piece of its layer pass names the pass's row); `positions` per sample. A share's
    /// failure names pass rows already.
    package func renumbered(_ map: (Int) -> Int, positions: Int) -> IntegrityFailure {
        guard samples == nil else { return self }
        return IntegrityFailure(check: check, layer: layer, index: map(index / positions) * positions + index % positions,
                                discrepancy: discrepancy, allowed: allowed)
    }

    package var description: String {
        let shard = samples.map { ", share of samples \($0.lowerBound)..<\($0.upperBound)" } ?? ""
        return "integrity check failed: layer \(layer), \(check.rawValue)\(shard): discrepancy \(discrepancy) > allowed \(allowed) at index \(index)"
    }
}

/// Where the checks' trusted time goes (`IntegrityChecker.timing`).
package enum IntegritySection: String, Sendable, CaseIterable {
    case randomDraws = "random draws"
    case combinedKernels = "combined kernels, |W| maxima"
    case forwardProbe = "forward probe"
    case inputGradientProbe = "dX probe"
    case toleranceNorms = "tolerance norms"
    case shareReference = "share right-hand side"
    case compareOutput = "compare output share"
    case compareInputGradient = "compare dX"
    case compareShare = "compare weight-gradient share"
    case recomputeCopies = "recompute copies"
    /// Y = Y_U + Y_T: work of every split layer, done by the output check sample by sample
    /// while Y_U is in cache.
    case merge = "merge (not a check)"
    /// db += the channel sums of dY: work of every split layer, done by the input-gradient
    /// probe's pass sample by sample while dY is in cache.
    case biasGradient = "bias gradient (not a check)"
}

/// This thread's CPU seconds (for timings on a shared machine: time spent preempted does not count).
package func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// The float32 rounding allowed in one compared value (design §8).
///
/// Every check compares lhs = sum_i v_i A_i (A_i: untrusted dot products of length `inner`,
/// v: the secret vector of `terms` entries) with rhs, one trusted dot product of the same
/// length against the combined kernel. Rounding a length-n sum of products x_j adds about
/// u * sqrt(n) * sqrt(sum x_j^2) (a random walk of n roundings of size u = 2^-24; OpenBLAS
/// blocks its sums, and the probes sum their taps' partial sums, which only shortens the walk),
/// and sqrt(sum_j a_j^2 b_j^2) <= |a|_inf |b|_2.
/// With `scale` the trusted operand's norm (a patch of R, a transposed patch of dY, or
/// |dY_o|_inf), `sigma` = sqrt(sum_i v_i^2 |row_i|_inf^2) and `combined` the combined kernel's
/// largest |entry| (or |q|_2), the three sources are: the untrusted sums, sqrt(inner) *
/// sigma * scale; the trusted probe, sqrt(inner) * combined * scale, plus forming the
/// combined kernel, sqrt(terms) * sigma * scale; summing v_i A_i here, sqrt(terms) * |v o A|.
/// `safety` covers the random-walk model's tail: on realistic layers (fmnist-cnn conv2..4,
/// vgg 128->256, random and post-ReLU data) honest discrepancies stayed below 0.06 of the
/// tolerance (IntegrityTests.testHonestResultsNeverFail prints the worst ratio). The model
/// assumes float32 arithmetic on the untrusted side (TF32 or bf16 products would fail it).
///
/// Guaranteed detection: a single value off by e enters its combination as v_i e with
/// |v_i| >= 1, and raises that value's tolerance by at most safety * u * sqrt(terms) * 2|e|
/// (< 1e-3 |e| for terms < 10^5), so any single value off by more than 2.01 * tol (tol of
/// the compared value it enters, for the honest result) fails the check, whatever v is. For
/// a weight-gradient share checked by sample range (one untrusted rank's shard), tol is that
/// range's: its sums, norms and maxima cover only the range's samples. A value so large that
/// its square overflows makes the tolerance infinite, and a NaN or infinite discrepancy or
/// tolerance fails too, so no value escapes by being too large for float32.
enum RoundingModel {
    static let unitRoundoff: Float = 0x1p-24
    static let safety: Float = 8

    /// The unit of a wide share's check (`IntegrityChecker.wideShares`): both sides sum float
    /// products in double (2^-53 a rounding), and the member's double result crosses as float
    /// high + low parts, which hold it to 2^-48; 2^-47 covers both.
    static let wideUnitRoundoff: Float = 0x1p-47

    static func tolerance(scale: Float, sigma: Float, combined: Float, inner: Int, terms: Int,
                          weighted: Float, unit: Float = unitRoundoff) -> Float {
        Scales(sigma: sigma, combined: combined, inner: inner, terms: terms, unit: unit).tolerance(scale: scale, weighted: weighted)
    }

    /// The terms that every compared value of one message shares: tol = scale * perScale +
    /// weighted * perWeighted.
    struct Scales {
        let perScale: Float, perWeighted: Float
        init(sigma: Float, combined: Float, inner: Int, terms: Int, unit: Float = unitRoundoff) {
            let si = Float(inner).squareRoot(), st = Float(terms).squareRoot()
            perScale = safety * unit * (si * (sigma + combined) + st * sigma)
            perWeighted = safety * unit * st
        }
        @inline(__always)
        func tolerance(scale: Float, weighted: Float) -> Float { scale * perScale + weighted * perWeighted }
    }
}

/// The compared value with the largest |lhs - rhs| / tolerance so far; a NaN or infinite
/// discrepancy or tolerance counts as infinitely far.
struct WorstComparison {
    var index = 0, discrepancy: Float = 0, allowed: Float = 0, ratio: Float = -1

    @inline(__always)
    mutating func consider(index i: Int, discrepancy d: Float, allowed a: Float) {
        var r = d / max(a, .leastNormalMagnitude)
        if !(r.isFinite && a.isFinite) { r = .infinity }
        if r > ratio { (index, discrepancy, allowed, ratio) = (i, d, a, r) }
    }

    var failed: Bool { !(discrepancy <= allowed && allowed.isFinite) }
}

/// sqrt(sum_i v_i^2 m_i^2).
private func weightedNorm(_ v: UnsafePointer<Float>, _ m: UnsafePointer<Float>, count: Int) -> Float {
    var s: Float = 0
    for i in 0..<count { s += v[i] * v[i] * m[i] * m[i] }
    return s.squareRoot()
}

/// Where the rows of a message sit in its layer pass, when the pass crosses in pieces (spread
/// masking through one buffer): the weight-gradient share's state is kept per pass row, so
/// that each member's share is checked against its rows of every piece.
package struct PassRowMap {
    /// The pass row of each message row.
    package let rows: [Int]
    /// The pass's rows in all.
    package let passRows: Int
    /// Whether this is the pass's first piece (a forward pass starts its q there).
    package let opens: Bool
    package init(rows: [Int], passRows: Int, opens: Bool) { self.rows = rows; self.passRows = passRows; self.opens = opens }
}

/// Freivalds-style checks of one split layer's untrusted results (design §8), with fresh
/// secret vectors for every message:
///
/// * output share Y_U = conv(R, W) + b: s^T Y_U[n, :, p] against conv(R, s^T W)[n, p] + s.b;
/// * input gradient dX = conv_transpose(dY, W): t^T dX[n, :, x] against conv_transpose(dY, W t);
/// * weight-gradient share G = sum corr(R, dY): G z per output channel against
///   sum_n sum_p q[n, p] dY[n, o, p], q = conv(R, z) kept from the forward pass. One filter z
///   serves every pass until the share is checked (G sums those passes). The reference is kept
///   per sample, so that a batch sharded across untrusted ranks has each rank's share checked
///   against its own samples.
///
/// Each probe is a convolution with one output (or input) channel, computed tap by tap: one
/// GEMM of the combined kernels' taps with the sample's channels ([s^T W; z] as 2 k*k x C times
/// R as C x H*W; (W t)^T as k*k x Cout times dY as Cout x P), then `shiftedSum`. The patch
/// norms of the tolerances are box sums of sum_c R_c^2 (sum_o dY_o^2), read while the sample
/// is in cache.
package final class IntegrityChecker {
    let layer: Int
    let geometry: ConvGeometry
    private var random = SecretStream()
    /// The secret vectors of the latest messages: s (Cout), t (C), z (C*k*k).
    private let s: Tensor, t: Tensor, z: Tensor
    /// s^T W ([C][k*k]); the forward probe's taps as a matrix over input channels,
    /// [s^T W; z]: row kernel * k*k + tap, column c (2 k*k x C); and s.b.
    private let combined: Tensor, probeMatrix: Tensor
    private var probeBias: Float = 0
    /// W t, Cout x k*k: the input-gradient probe's kernel; and as (W t)^T, k*k x Cout.
    private let transposedKernel: Tensor, kernelTaps: Tensor
    /// |W_o|_inf per output channel (forward) or |W[:, c, :]|_inf per input channel (backward);
    /// the elementwise max of |W_o| over o, [C][k*k]; |z_c|^2 per input channel.
    private let rowMax: Tensor, columnMax: Tensor, filterNorms: Tensor
    /// Per-row energies or maxima of one sample.
    private let rowScratch: Tensor
    /// The latest message's probe and squared patch norms: [batch, P] forward, [batch, H*W]
    /// backward; and the combination of the untrusted rows at one sample's positions.
    private var probe: Tensor?, patchEnergy: Tensor?, sums: Tensor?, squares: Tensor?

    /// The sum of the values `pullIntoCache` read (kept, so that its loads are not optimised away).
    private var pulled: Float = 0

    /// The latest message's rounding scales, kept for its check.
    private var sigma: Float = 0, combinedMax: Float = 0, forwardBatch = 0

    /// Weight-gradient share state, per sample index, summed over the passes since the last
    /// share check (a pass with a smaller batch adds to its first samples only).
    private var filterDrawn = false
    private var q: Tensor?                     // conv(R, z) of the last training forward pass, [batch, P]
    private var shareReference: [Float] = []   // [n][o]: sum_p q dY
    private var outputGradMax: [Float] = []    // [n][o]: |dY[n, o]|_inf
    private var filterEnergy: [Double] = []    // [n]: rho^2 = sum_c |z_c|^2 |R[n, c]|^2
    private var probeEnergy: [Double] = []     // [n]: |q_n|^2
    private var samplePasses: [Int] = []       // [n]: the passes that had sample n
    private var checkedSamples: [Bool] = []    // [n]: its share checked since the last finish
    private var shareRight: [Double] = [], shareMax: [Float] = []  // one range's, [Cout]

    /// Set when the weight-gradient shares are double results that cross as float high + low
    /// parts (spread masking's wide shares, `OutputGradient.wideShares`). Their check then runs
    /// in double: q = conv(R, z) and the reference sum_p q dY are computed in double, G z from
    /// high + low, and the tolerance is double rounding's (`RoundingModel.wideUnitRoundoff`).
    /// With float rounding, the tolerance followed the noisy combinations' norms (noise 30
    /// makes a share about 900 times the gradient), and a member could move the decoded
    /// weight gradient by about 1e-3 of itself per step unseen; in double, by about 1e-10.
    package var wideShares = false
    /// Wide shares: q per sample and position ([batch, P]) and the reference per sample and
    /// output channel ([n][o]), in double; z's taps as a k*k x C matrix, and one sample's
    /// input and taps, in double.
    private var qWide: [Double] = [], shareReferenceWide: [Double] = []
    private var zTaps: [Double] = [], wideInput: [Double] = [], wideTaps: [Double] = []

    /// The largest discrepancy / allowed seen per check: how close honest runs come to a
    /// false alarm (a failed check shows > 1).
    package private(set) var highestRatio: [IntegrityCheck: Float] = [:]

    /// When set, each section's thread CPU seconds add up in `sectionSeconds` (the clock is
    /// read per chunk of samples, not per sample: a read costs about a microsecond).
    package var timing = false
    private var sectionTotals = [Double](repeating: 0, count: IntegritySection.allCases.count)
    package var sectionSeconds: [IntegritySection: Double] {
        Dictionary(uniqueKeysWithValues: IntegritySection.allCases.enumerated().map { ($1, sectionTotals[$0]) })
    }
    package func resetTiming() { for i in sectionTotals.indices { sectionTotals[i] = 0 } }

    @inline(__always)
    func timed<T>(_ section: IntegritySection, _ body: () -> T) -> T {
        guard timing else { return body() }
        let t0 = threadCPUSeconds()
        defer { sectionTotals[IntegritySection.allCases.firstIndex(of: section)!] += threadCPUSeconds() - t0 }
        return body()
    }

    package init(layer: Int, geometry g: ConvGeometry) {
        self.layer = layer
        geometry = g
        let k2 = g.kernel * g.kernel
        s = Tensor(shape: [g.outChannels]); t = Tensor(shape: [g.inChannels]); z = Tensor(shape: [g.patchSize])
        combined = Tensor(shape: [g.patchSize]); probeMatrix = Tensor(shape: [2 * k2, g.inChannels])
        transposedKernel = Tensor(shape: [g.outChannels, k2]); kernelTaps = Tensor(shape: [k2, g.outChannels])
        rowMax = Tensor(shape: [max(g.outChannels, g.inChannels)]); columnMax = Tensor(shape: [g.patchSize])
        filterNorms = Tensor(shape: [g.inChannels]); rowScratch = Tensor(shape: [max(g.outChannels, g.inChannels)])
        shareRight = [Double](repeating: 0, count: g.outChannels); shareMax = [Float](repeating: 0, count: g.outChannels)
    }

    /// The secret vector that the latest message of `check` was checked with (for tests).
    package func lastVector(_ check: IntegrityCheck) -> [Float] {
        switch check {
        case .outputShare: return s.array
        case .inputGradient: return t.array
        case .gradientShare: return z.array
        }
    }

    /// Runs `body` over chunks of the batch's samples, each of at most 256 KB (or one sample of
    /// `sampleSize` floats), so that a chunk stays in the core's cache from one section to the
    /// next: R and dY come from memory once.
    private func forEachChunk(_ batch: Int, sampleSize: Int, _ body: (Range<Int>) -> Void) {
        let size = max(1, (1 << 16) / max(1, sampleSize))
        for first in stride(from: 0, to: batch, by: size) { body(first..<min(batch, first + size)) }
    }

    // MARK: Output share

    /// Draws s (and, in a training pass with no filter pending, z), then computes the
    /// probes conv(R, s^T W) + s.b and q = conv(R, z) and the patch norms of R. Call it
    /// after handing R over, while the untrusted side computes; `progress` runs between chunks
    /// of samples (to let transfers advance).
    /// `piece`: the message is a piece of its pass (a training pass in pieces needs wide
    /// shares); nil: the whole pass.
    package func prepareForward(residual r: UnsafePointer<Float>, batch: Int, weight w: UnsafePointer<Float>,
                        bias b: UnsafePointer<Float>?, training: Bool, scratch: Scratch, piece: PassRowMap? = nil,
                        progress: () -> Void = {}) {
        let g = geometry, C = g.inChannels, K = g.patchSize, k2 = g.kernel * g.kernel, Cout = g.outChannels
        let HW = g.height * g.width, P = g.outPositions
        precondition(piece == nil || wideShares || !training, "layer \(layer): a pass in pieces needs wide shares")
        let passRows = piece?.passRows ?? batch, at: (Int) -> Int = { piece?.rows[$0] ?? $0 }
        if training { startPass(batch: passRows) }
        timed(.randomDraws) { random.fillSigned(s.data, count: Cout) }
        // z's taps join the float probe's GEMM, or, with wide shares, a double one of their own.
        let wideQ = training && wideShares
        let rows = (training && !wideShares ? 2 : 1) * k2
        timed(.combinedKernels) {
            // s^T W and |W_o|_inf, in blocks of rows that stay in cache for the second.
            let block = max(1, (1 << 16) / K)
            for first in stride(from: 0, to: Cout, by: block) {
                let count = min(block, Cout - first)
                BLAS.gemv(trans: true, m: count, n: K, a: w + first * K, lda: K, x: s.data + first, beta: first == 0 ? 0 : 1,
                          y: combined.data)
                let maxima = rowMax.data
                for o in first..<(first + count) { maxima[o] = maxMagnitude(w + o * K, count: K) }
            }
            sigma = weightedNorm(s.data, rowMax.data, count: Cout)
            combinedMax = maxMagnitude(combined.data, count: K)
            probeBias = b.map { BLAS.dot(Cout, s.data, $0) } ?? 0
            let m = probeMatrix.data, a = combined.data, f = z.data
            for c in 0..<C {
                for tap in 0..<k2 {
                    m[tap * C + c] = a[c * k2 + tap]
                    if training && !wideShares { m[(k2 + tap) * C + c] = f[c * k2 + tap] }
                }
            }
            if wideQ {
                zTaps = [Double](repeating: 0, count: k2 * C)
                for c in 0..<C { for tap in 0..<k2 { zTaps[tap * C + c] = Double(f[c * k2 + tap]) } }
            }
        }
        let y = Tensor.reuse(probe, shape: [batch, P]); probe = y
        let energy = Tensor.reuse(patchEnergy, shape: [batch, P]); patchEnergy = energy
        let kept = training && !wideShares ? Tensor.reuse(q, shape: [batch, P]) : nil
        if let kept { q = kept }
        if wideQ {
            if piece?.opens ?? true { qWide = [Double](repeating: 0, count: passRows * P) }
            if wideInput.count < C * HW { wideInput = [Double](repeating: 0, count: C * HW) }
            if wideTaps.count < k2 * HW { wideTaps = [Double](repeating: 0, count: k2 * HW) }
        }
        let taps = scratch.buffer(0, count: rows * HW), map = scratch.buffer(1, count: HW)
        forEachChunk(batch, sampleSize: C * HW) { chunk in
            timed(.toleranceNorms) {
                pulled += pullIntoCache(r + chunk.lowerBound * C * HW, count: chunk.count * C * HW)
                for n in chunk {
                    map.update(repeating: 0, count: HW)
                    accumulateSquares(r + n * C * HW, count: C, length: HW, into: map, sums: rowScratch.data, maxima: nil)
                    (energy.data + n * P).update(repeating: 0, count: P)
                    shiftedSum(g, taps: map, tapStride: 0, into: energy.data + n * P, transposed: false)
                    if training {
                        let norms = filterNorms.data, energies = rowScratch.data
                        var rho: Double = 0
                        for c in 0..<C { rho += Double(norms[c]) * Double(energies[c]) }
                        filterEnergy[at(n)] += rho
                    }
                }
            }
            timed(.forwardProbe) {
                for n in chunk {
                    probeProduct(m: rows, n: HW, k: C, a: probeMatrix.data, b: r + n * C * HW, ldb: HW, c: taps)
                    (y.data + n * P).update(repeating: probeBias, count: P)
                    shiftedSum(g, taps: taps, tapStride: HW, into: y.data + n * P, transposed: false)
                    if let kept {
                        (kept.data + n * P).update(repeating: 0, count: P)
                        shiftedSum(g, taps: taps + k2 * HW, tapStride: HW, into: kept.data + n * P, transposed: false)
                        probeEnergy[n] += sumOfSquares(kept.data + n * P, count: P)
                    }
                    if wideQ { probeEnergy[at(n)] += wideProbe(sample: r + n * C * HW, into: at(n) * P) }
                }
            }
            progress()
        }
        forwardBatch = batch
    }

    /// Checks Y_U ([batch, Cout, P]) against the forward probe and, sample by sample while
    /// it is in cache, adds the trusted share: y becomes Y_U + low, checked or not.
    package func checkOutputShare(_ y: UnsafeMutablePointer<Float>, adding low: UnsafePointer<Float>) -> IntegrityFailure? {
        let g = geometry
        return compareCombinations(of: y, rows: g.outChannels, length: g.outPositions, weights: s.data, inner: g.patchSize,
                                   check: .outputShare, section: .compareOutput, merge: (low, y))
    }

    /// Checks Y_U ([batch, Cout, P]) against the forward probe, without merging anything into
    /// it (masked combinations: the masking layer decodes them after the check).
    package func checkOutputShare(_ y: UnsafePointer<Float>) -> IntegrityFailure? {
        let g = geometry
        return compareCombinations(of: y, rows: g.outChannels, length: g.outPositions, weights: s.data, inner: g.patchSize,
                                   check: .outputShare, section: .compareOutput, merge: nil)
    }

    // MARK: Input gradient

    /// Draws t and computes the probe conv_transpose(dY, W t) and the transposed patch norms
    /// of dY; adds this pass's terms to the weight-gradient share's reference. Sample by sample
    /// while dY is in cache, also adds dY's channel sums to `biasGrad` (the same sums, in the
    /// same order, as accumulateChannelSums over the batch) and copies dY to `copy`.
    /// `progress` runs between chunks of samples.
    /// `piece`: the message is a piece of its pass, whose forward pass crossed in the same pieces.
    package func prepareBackward(outputGrad dy: UnsafePointer<Float>, batch: Int, weight w: UnsafePointer<Float>,
                         biasGrad: UnsafeMutablePointer<Float>?, copy: UnsafeMutablePointer<Float>?, scratch: Scratch,
                         piece: PassRowMap? = nil, progress: () -> Void = {}) {
        let g = geometry, C = g.inChannels, Cout = g.outChannels, K = g.patchSize, k2 = g.kernel * g.kernel
        let HW = g.height * g.width, P = g.outPositions
        precondition(!checkedSamples.contains(true), "layer \(layer): backward pass amid the checks of a weight-gradient share")
        timed(.randomDraws) { random.fillSigned(t.data, count: C) }
        timed(.combinedKernels) {
            // W t and |W[:, c, :]|_inf in one pass over W; W t also as (W t)^T, k*k x Cout.
            columnMax.zero()
            for o in 0..<Cout {
                transposedCombination(w + o * K, weights: t.data, channels: C, taps: k2, into: transposedKernel.data + o * k2)
                accumulateMagnitudeMax(w + o * K, into: columnMax.data, count: K)
            }
            let columns = columnMax.data, maxima = rowMax.data, wt = transposedKernel.data, taps = kernelTaps.data
            for c in 0..<C { maxima[c] = maxMagnitude(columns + c * k2, count: k2) }
            sigma = weightedNorm(t.data, maxima, count: C)
            combinedMax = maxMagnitude(wt, count: Cout * k2)
            for o in 0..<Cout { for tap in 0..<k2 { taps[tap * Cout + o] = wt[o * k2 + tap] } }
        }
        let share = filterDrawn, passRows = piece?.passRows ?? batch, at: (Int) -> Int = { piece?.rows[$0] ?? $0 }
        precondition(piece == nil || wideShares, "layer \(layer): a pass in pieces needs wide shares")
        if share {
            guard wideShares ? qWide.count == passRows * P : q?.count == passRows * P else {
                preconditionFailure("layer \(layer): backward without its forward pass")
            }
        }
        let x = Tensor.reuse(probe, shape: [batch, HW]); probe = x
        let energy = Tensor.reuse(patchEnergy, shape: [batch, HW]); patchEnergy = energy
        let taps = scratch.buffer(0, count: k2 * P), map = scratch.buffer(1, count: P)
        forEachChunk(batch, sampleSize: Cout * P) { chunk in
            timed(.toleranceNorms) {
                pulled += pullIntoCache(dy + chunk.lowerBound * Cout * P, count: chunk.count * Cout * P)
                for n in chunk {
                    map.update(repeating: 0, count: P)
                    accumulateSquares(dy + n * Cout * P, count: Cout, length: P, into: map, sums: nil,
                                      maxima: share ? rowScratch.data : nil)
                    (energy.data + n * HW).update(repeating: 0, count: HW)
                    shiftedSum(g, taps: map, tapStride: 0, into: energy.data + n * HW, transposed: true)
                    if share {
                        let maxima = rowScratch.data, row = at(n)
                        outputGradMax.withUnsafeMutableBufferPointer { m in
                            for o in 0..<Cout { m[row * Cout + o] = max(m[row * Cout + o], maxima[o]) }
                        }
                    }
                }
            }
            timed(.inputGradientProbe) {
                for n in chunk {
                    probeProduct(m: k2, n: P, k: Cout, a: kernelTaps.data, b: dy + n * Cout * P, ldb: P, c: taps)
                    (x.data + n * HW).update(repeating: 0, count: HW)
                    shiftedSum(g, taps: taps, tapStride: P, into: x.data + n * HW, transposed: true)
                }
            }
            if let copy {
                timed(.recomputeCopies) {
                    let first = chunk.lowerBound * Cout * P
                    (copy + first).update(from: dy + first, count: chunk.count * Cout * P)
                }
            }
            if let biasGrad {
                timed(.biasGradient) {
                    accumulateChannelSums(dy + chunk.lowerBound * Cout * P, batch: chunk.count, channels: Cout, positions: P,
                                          into: biasGrad)
                }
            }
            if share {
                timed(.shareReference) {
                    if wideShares {
                        qWide.withUnsafeBufferPointer { qw in
                            shareReferenceWide.withUnsafeMutableBufferPointer { ref in
                                for n in chunk {
                                    let row = at(n)
                                    for o in 0..<Cout { ref[row * Cout + o] += wideDot(dy + (n * Cout + o) * P, qw.baseAddress! + row * P, count: P) }
                                }
                            }
                        }
                    } else {
                        shareReference.withUnsafeMutableBufferPointer { ref in
                            for n in chunk {
                                BLAS.gemv(m: Cout, n: P, a: dy + n * Cout * P, lda: P, x: q!.data + n * P, beta: 1,
                                          y: ref.baseAddress! + n * Cout)
                            }
                        }
                    }
                }
            }
            progress()
        }
        if share { for n in 0..<batch { samplePasses[at(n)] += 1 } }
        forwardBatch = batch
    }

    /// Checks dX ([batch, C, H, W]) against the backward probe.
    package func checkInputGradient(_ dx: UnsafePointer<Float>) -> IntegrityFailure? {
        let g = geometry
        return compareCombinations(of: dx, rows: g.inChannels, length: g.height * g.width, weights: t.data,
                                   inner: g.outChannels * g.kernel * g.kernel, check: .inputGradient,
                                   section: .compareInputGradient, merge: nil)
    }

    // MARK: Weight-gradient share

    /// The samples whose share terms were gathered since the last share check (the largest
    /// batch of those passes); 0 when no training pass is pending.
    package var shareSamples: Int { filterDrawn ? samplePasses.count : 0 }

    /// Checks the share of samples `samples` of G ([Cout, C*k*k], summed over the passes since
    /// the last check) per output channel: G z against sum over those samples of
    /// sum_p q dY. With wide shares, G is high + `low` (in double). Every sample must be
    /// checked exactly once (one range per untrusted rank, or all at once) before
    /// `finishShareChecks`.
    package func checkGradientShare(_ share: UnsafePointer<Float>, low: UnsafePointer<Float>? = nil,
                                    samples: Range<Int>) -> IntegrityFailure? {
        precondition(filterDrawn, "layer \(layer): no training pass since the last weight-gradient share check")
        precondition(samples.lowerBound >= 0 && samples.upperBound <= samplePasses.count,
                     "layer \(layer): share of samples \(samples) outside the batch 0..<\(samplePasses.count)")
        precondition(!checkedSamples[samples].contains(true), "layer \(layer): samples of \(samples) already checked")
        precondition(wideShares == (low != nil), "layer \(layer): a wide share needs its low part, and only a wide share has one")
        for n in samples { checkedSamples[n] = true }
        return timed(.compareShare) { compareShare(share, low: low, samples: samples) }
    }

    /// Retires z after every sample's share was checked: the next training pass draws a new one.
    package func finishShareChecks() {
        precondition(filterDrawn, "layer \(layer): no training pass since the last weight-gradient share check")
        if let n = checkedSamples.firstIndex(of: false) {
            preconditionFailure("layer \(layer): the weight-gradient share of sample \(n) was not checked")
        }
        filterDrawn = false
        checkedSamples.removeAll(keepingCapacity: true)
    }

    private func compareShare(_ share: UnsafePointer<Float>, low: UnsafePointer<Float>?, samples: Range<Int>) -> IntegrityFailure? {
        let g = geometry, K = g.patchSize, Cout = g.outChannels, P = g.outPositions
        var rho2 = 0.0, q2 = 0.0, positions = 0
        for n in samples { rho2 += filterEnergy[n]; q2 += probeEnergy[n]; positions += samplePasses[n] * P }
        let rho = Float(rho2.squareRoot()), qNorm = Float(q2.squareRoot())
        var worst = WorstComparison()
        // (Loops over buffers, not the arrays: an access to a class's array property is
        // checked for exclusivity every time.)
        shareRight.withUnsafeMutableBufferPointer { right in
            shareMax.withUnsafeMutableBufferPointer { largest in
                shareReference.withUnsafeBufferPointer { reference in
                    outputGradMax.withUnsafeBufferPointer { maxima in
                        for o in 0..<Cout { right[o] = 0; largest[o] = 0 }
                        for n in samples {
                            for o in 0..<Cout {
                                right[o] += wideShares ? shareReferenceWide[n * Cout + o] : Double(reference[n * Cout + o])
                                largest[o] = max(largest[o], maxima[n * Cout + o])
                            }
                        }
                    }
                }
                let block = max(1, (1 << 16) / K), weights = z.data
                for o in 0..<Cout {
                    if o % block == 0 { pulled += pullIntoCache(share + o * K, count: min(block, Cout - o) * K) }
                    let (lhs, sq) = low.map { wideCombination(share + o * K, $0 + o * K, weights: weights, count: K) }
                        ?? { let (l, q) = combination(share + o * K, weights: weights, count: K); return (Double(l), q) }()
                    let allowed = RoundingModel.tolerance(scale: largest[o], sigma: rho, combined: qNorm, inner: positions,
                                                          terms: K, weighted: sq.squareRoot(),
                                                          unit: low == nil ? RoundingModel.unitRoundoff : RoundingModel.wideUnitRoundoff)
                    worst.consider(index: o, discrepancy: Float(abs(lhs - right[o])), allowed: allowed)
                }
            }
        }
        return verdict(worst, check: .gradientShare, samples: samples)
    }

    /// A training pass: draws z when no share is pending, and makes room for its samples.
    private func startPass(batch: Int) {
        precondition(!checkedSamples.contains(true), "layer \(layer): training pass amid the checks of a weight-gradient share")
        let Cout = geometry.outChannels
        if !filterDrawn {
            // A share row shifted by a constant d moves that row of G z by d * sum(z): z is
            // redrawn until |sum(z)| >= |z|_2 / 2 (about 1.6 draws), so such a shift (a
            // bias-like error, the `grad` fault) is caught like any other, instead of slipping
            // through whenever the signs nearly cancel. Other directions keep their odds.
            timed(.randomDraws) {
                repeat { random.fillSigned(z.data, count: geometry.patchSize) } while !constantShiftShows(z.data, count: geometry.patchSize)
            }
            let k2 = geometry.kernel * geometry.kernel, f = z.data, norms = filterNorms.data
            for c in 0..<geometry.inChannels {
                var e: Float = 0
                for j in 0..<k2 { e += f[c * k2 + j] * f[c * k2 + j] }
                norms[c] = e
            }
            filterDrawn = true
            shareReference.removeAll(keepingCapacity: true); outputGradMax.removeAll(keepingCapacity: true)
            shareReferenceWide.removeAll(keepingCapacity: true)
            filterEnergy.removeAll(keepingCapacity: true); probeEnergy.removeAll(keepingCapacity: true)
            samplePasses.removeAll(keepingCapacity: true); checkedSamples.removeAll(keepingCapacity: true)
        }
        let more = batch - samplePasses.count
        if more > 0 {
            // One reference per sample and output channel: in double with wide shares, else in float.
            shareReference.append(contentsOf: repeatElement(0, count: wideShares ? 0 : more * Cout))
            shareReferenceWide.append(contentsOf: repeatElement(0, count: wideShares ? more * Cout : 0))
            outputGradMax.append(contentsOf: repeatElement(0, count: more * Cout))
            filterEnergy.append(contentsOf: repeatElement(0, count: more))
            probeEnergy.append(contentsOf: repeatElement(0, count: more))
            samplePasses.append(contentsOf: repeatElement(0, count: more))
            checkedSamples.append(contentsOf: repeatElement(false, count: more))
        }
    }

    /// Wide shares: q of one sample in double, conv(x, z) with one output channel (z's taps
    /// times the sample's channels by dgemm, then `shiftedSum`), into qWide[offset...];
    /// returns |q|^2.
    private func wideProbe(sample x: UnsafePointer<Float>, into offset: Int) -> Double {
        let g = geometry, C = g.inChannels, HW = g.height * g.width, k2 = g.kernel * g.kernel, P = g.outPositions
        wideInput.withUnsafeMutableBufferPointer { w in for i in 0..<(C * HW) { w[i] = Double(x[i]) } }
        BLAS.dgemm(m: k2, n: HW, k: C, a: zTaps, lda: C, b: wideInput, ldb: HW, beta: 0, c: &wideTaps, ldc: HW)
        return qWide.withUnsafeMutableBufferPointer { q in
            let out = q.baseAddress! + offset
            wideTaps.withUnsafeBufferPointer { shiftedSum(g, taps: $0.baseAddress!, tapStride: HW, into: out, transposed: false) }
            var energy: Double = 0
            for p in 0..<P { energy += out[p] * out[p] }
            return energy
        }
    }

    /// Whether |sum(z)| >= |z|_2 / 2 (see `startPass`).
    private func constantShiftShows(_ z: UnsafePointer<Float>, count: Int) -> Bool {
        var sum: Double = 0, squares: Double = 0
        for i in 0..<count { sum += Double(z[i]); squares += Double(z[i]) * Double(z[i]) }
        return 4 * sum * sum >= squares
    }

    // MARK: Shared steps

    /// Compares v^T result[n, :, p] with the probe for every sample n and position p, each
    /// against its own tolerance; then, with `merge`, adds `low` into `into` chunk by chunk.
    private func compareCombinations(of result: UnsafePointer<Float>, rows: Int, length: Int,
                                     weights v: UnsafePointer<Float>, inner: Int, check: IntegrityCheck,
                                     section: IntegritySection,
                                     merge: (low: UnsafePointer<Float>, into: UnsafeMutablePointer<Float>)?) -> IntegrityFailure? {
        let sum = Tensor.reuse(sums, shape: [length]); sums = sum
        let sq = Tensor.reuse(squares, shape: [length]); squares = sq
        let scales = RoundingModel.Scales(sigma: sigma, combined: combinedMax, inner: inner, terms: rows)
        let reference = probe!.data, energy = patchEnergy!.data, sampleSize = rows * length
        var worst = WorstComparison()
        forEachChunk(forwardBatch, sampleSize: sampleSize) { chunk in
            timed(section) {
                pulled += pullIntoCache(result + chunk.lowerBound * sampleSize, count: chunk.count * sampleSize)
                for n in chunk {
                    let base = n * length
                    combineRows(result + n * sampleSize, count: rows, length: length, weights: v, sum: sum.data,
                                squares: sq.data)
                    // The exact scan only where a value may beat the worst so far.
                    let estimate = estimatedWorstRatio(sum: sum.data, reference: reference + base, energy: energy + base,
                                                       squares: sq.data, count: length, perScale: scales.perScale,
                                                       perWeighted: scales.perWeighted)
                    if estimate < worst.ratio * (1 - 1e-5) { continue }
                    for p in 0..<length {
                        let allowed = scales.tolerance(scale: energy[base + p].squareRoot(), weighted: sq[p].squareRoot())
                        worst.consider(index: base + p, discrepancy: abs(sum[p] - reference[base + p]), allowed: allowed)
                    }
                }
            }
            if let merge {
                timed(.merge) {
                    let first = chunk.lowerBound * sampleSize
                    accumulate(merge.low + first, into: merge.into + first, count: chunk.count * sampleSize)
                }
            }
        }
        return verdict(worst, check: check, samples: nil)
    }

    /// The failure at the worst compared value, if it is beyond its tolerance (NaN and
    /// infinities are).
    private func verdict(_ worst: WorstComparison, check: IntegrityCheck, samples: Range<Int>?) -> IntegrityFailure? {
        highestRatio[check] = max(highestRatio[check] ?? 0, worst.ratio)
        guard worst.failed else { return nil }
        return IntegrityFailure(check: check, layer: layer, index: worst.index, discrepancy: worst.discrepancy,
                                allowed: worst.allowed, samples: samples)
    }
}
