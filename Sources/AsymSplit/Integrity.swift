import AsymKernels

/// Which untrusted result a check covers (design §8).
public enum IntegrityCheck: String, Sendable, CaseIterable {
    case outputShare = "output share"
    case inputGradient = "input gradient"
    case gradientShare = "weight-gradient share"
}

/// What a split layer does when an untrusted result fails its check.
public enum IntegrityPolicy: String, Sendable {
    /// Hand the failure to the layer's `failureHandler` (without one: stop the process).
    case report
    /// Compute the result on the trusted side, tell the `failureHandler` (for the log) and go on.
    case recompute
}

/// An untrusted result that failed its check: the worst compared value and its tolerance.
public struct IntegrityFailure: Error, Equatable, CustomStringConvertible {
    public let check: IntegrityCheck
    public let layer: Int
    /// The worst compared value: sample * positions + position for the output share and the
    /// input gradient (positions of Y resp. X), the output channel for the weight-gradient share.
    public let index: Int
    /// |s^T result - trusted probe| there, and what float32 rounding allows there.
    public let discrepancy: Float
    public let allowed: Float

    public var description: String {
        "integrity check failed: layer \(layer), \(check.rawValue): discrepancy \(discrepancy) > allowed \(allowed) at index \(index)"
    }
}

/// Secret random vectors for the checks, from the operating system's CSPRNG (getrandom on
/// Linux): a rank that could predict them could forge results that pass, so the training
/// RNG (seeded, replicated) must never be used here.
public struct SecretRandom {
    private var generator = SystemRandomNumberGenerator()
    public init() {}

    /// Fills `p` with values of random sign and magnitude uniform in [1, 2). A magnitude of at
    /// least 1 makes any single corrupted value show in the combination at full size; a
    /// continuous magnitude leaves a forger no cancellation to aim at.
    public mutating func fillSigned(_ p: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            let bits = generator.next()
            for half in 0..<2 where i < count {
                let w = UInt32(truncatingIfNeeded: bits >> (32 * UInt64(half)))
                p[i] = Float(bitPattern: (w & 0x8000_0000) | 0x3F80_0000 | (w & 0x007F_FFFF))
                i += 1
            }
        }
    }
}

/// The float32 rounding allowed in one compared value (design §8).
///
/// Every check compares lhs = sum_i v_i A_i (A_i: untrusted dot products of length `inner`,
/// v: the secret vector of `terms` entries) with rhs, one trusted dot product of the same
/// length against the combined kernel. Rounding a length-n sum of products x_j adds about
/// u * sqrt(n) * sqrt(sum x_j^2) (a random walk of n roundings of size u = 2^-24; OpenBLAS
/// blocks its sums, which only shortens the walk), and sqrt(sum_j a_j^2 b_j^2) <= |a|_inf |b|_2.
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
/// the compared value it enters, for the honest result) fails the check, whatever v is.
enum RoundingModel {
    static let unitRoundoff: Float = 0x1p-24
    static let safety: Float = 8

    static func tolerance(scale: Float, sigma: Float, combined: Float, inner: Int, terms: Int,
                          weighted: Float) -> Float {
        let si = Float(inner).squareRoot(), st = Float(terms).squareRoot()
        return safety * unitRoundoff * (scale * (si * (sigma + combined) + st * sigma) + st * weighted)
    }
}

/// The compared value with the largest |lhs - rhs| / tolerance (NaN counts as infinite).
func worstComparison(lhs: UnsafePointer<Float>, rhs: UnsafePointer<Float>, tolerance: UnsafePointer<Float>,
                     count: Int) -> (index: Int, discrepancy: Float, allowed: Float, ratio: Float) {
    var worst = (index: 0, discrepancy: Float(0), allowed: tolerance[0], ratio: Float(0))
    for i in 0..<count {
        let d = abs(lhs[i] - rhs[i])
        var ratio = d / max(tolerance[i], .leastNormalMagnitude)
        if ratio.isNaN { ratio = .infinity }
        if ratio > worst.ratio || i == 0 { worst = (i, d, tolerance[i], ratio) }
    }
    return worst
}

/// sum[p] = sum_i v_i rows[i][p] and squares[p] = sum_i v_i^2 rows[i][p]^2: a random
/// combination of `count` rows of an untrusted result, and what its rounding depends on.
private func combineRows(_ rows: UnsafePointer<Float>, count: Int, length: Int, weights v: UnsafePointer<Float>,
                         sum: UnsafeMutablePointer<Float>, squares: UnsafeMutablePointer<Float>) {
    sum.update(repeating: 0, count: length)
    squares.update(repeating: 0, count: length)
    for i in 0..<count {
        let row = rows + i * length, w = v[i], w2 = w * w
        for p in 0..<length {
            let x = row[p]
            sum[p] += w * x
            squares[p] += w2 * x * x
        }
    }
}

/// The largest |entry| of each of `count` rows of `length` values, into `out`.
private func rowMaxima(_ a: UnsafePointer<Float>, count: Int, length: Int, into out: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        var m: Float = 0
        for j in 0..<length { m = max(m, abs(a[i * length + j])) }
        out[i] = m
    }
}

/// sqrt(sum_i v_i^2 m_i^2).
private func weightedNorm(_ v: UnsafePointer<Float>, _ m: UnsafePointer<Float>, count: Int) -> Float {
    var s: Float = 0
    for i in 0..<count { s += v[i] * v[i] * m[i] * m[i] }
    return s.squareRoot()
}

private func maxMagnitude(_ a: UnsafePointer<Float>, count: Int) -> Float {
    var m: Float = 0
    for i in 0..<count { m = max(m, abs(a[i])) }
    return m
}

/// Freivalds-style checks of one split layer's untrusted results (design §8), with fresh
/// secret vectors for every message:
///
/// * output share Y_U = conv(R, W) + b: s^T Y_U[n, :, p] against conv(R, s^T W)[n, p] + s.b;
/// * input gradient dX = conv_transpose(dY, W): t^T dX[n, :, x] against conv_transpose(dY, W t);
/// * weight-gradient share G = sum corr(R, dY): G z per output channel against
///   sum_n sum_p q[n, p] dY[n, o, p], q = conv(R, z) kept from the forward pass. One filter z
///   serves every pass until the share is checked (G sums those passes).
///
/// Each probe is a convolution with one output (or input) channel, computed by the
/// ordinary kernels; s's probe and z's run as one two-channel convolution of R.
public final class IntegrityChecker {
    let layer: Int
    let geometry: ConvGeometry
    private var random = SecretRandom()
    /// The secret vectors of the latest messages: s (Cout), t (C), z (C*k*k).
    private let s: Tensor, t: Tensor, z: Tensor
    /// [s^T W; z] and [s.b, 0]: the forward probe's kernels and bias.
    private let probeKernels: Tensor, probeBias: Tensor
    /// W t, Cout x 1 x k x k: the input-gradient probe's kernel.
    private let transposedKernel: Tensor
    private let ones: Tensor
    private let rowMax: Tensor
    private var probe: Tensor?, patchEnergy: Tensor?, energyMap: Tensor?
    private var lhs: Tensor?, squares: Tensor?, tolerances: Tensor?, reference: Tensor?

    /// The forward pass's rounding scales, kept for its check.
    private var sigma: Float = 0, combinedMax: Float = 0, forwardBatch = 0

    /// Weight-gradient share state, summed over the passes since the last share check.
    private var filterDrawn = false
    private let shareReference: Tensor   // sum_n sum_p q dY, per output channel
    private let outputGradMax: Tensor    // |dY_o|_inf, per output channel
    private var filterEnergy: Double = 0 // rho^2 = sum_c |z_c|^2 |R_c|^2
    private var probeEnergy: Double = 0  // |q|_2^2
    private var sharePositions = 0       // the sums' length: samples * output positions
    private var q: Tensor?               // conv(R, z) of the last training forward pass

    /// The largest discrepancy / allowed seen per check: how close honest runs come to a
    /// false alarm (a failed check shows > 1).
    public private(set) var highestRatio: [IntegrityCheck: Float] = [:]

    init(layer: Int, geometry g: ConvGeometry) {
        self.layer = layer
        geometry = g
        let k2 = g.kernel * g.kernel
        s = Tensor(shape: [g.outChannels]); t = Tensor(shape: [g.inChannels]); z = Tensor(shape: [g.patchSize])
        probeKernels = Tensor(shape: [2, g.patchSize]); probeBias = Tensor(shape: [2])
        transposedKernel = Tensor(shape: [g.outChannels, k2])
        ones = Tensor(shape: [k2]); ones.fill(1)
        rowMax = Tensor(shape: [max(g.outChannels, g.inChannels)])
        shareReference = Tensor(shape: [g.outChannels]); outputGradMax = Tensor(shape: [g.outChannels])
    }

    /// The secret vector that the latest message of `check` was checked with (for tests).
    public func lastVector(_ check: IntegrityCheck) -> [Float] {
        switch check {
        case .outputShare: return s.array
        case .inputGradient: return t.array
        case .gradientShare: return z.array
        }
    }

    /// One input channel and one output channel of the layer's geometry: sums over patches.
    private var patchGeometry: ConvGeometry {
        let g = geometry
        return ConvGeometry(inChannels: 1, height: g.height, width: g.width, outChannels: 1, kernel: g.kernel,
                            stride: g.stride, padding: g.padding)
    }

    // MARK: Output share

    /// Draws s (and, in a training pass with no filter pending, z), then computes the
    /// probes conv(R, s^T W) + s.b and q = conv(R, z) and the patch norms of R. Call it
    /// after handing R over, while the untrusted side computes.
    func prepareForward(residual r: UnsafePointer<Float>, batch: Int, weight w: UnsafePointer<Float>,
                        bias b: UnsafePointer<Float>?, training: Bool, scratch: Scratch) {
        let g = geometry, K = g.patchSize, Cout = g.outChannels, P = g.outPositions
        random.fillSigned(s.data, count: Cout)
        if training && !filterDrawn { startShare() }
        let channels = training ? 2 : 1
        BLAS.gemv(trans: true, m: Cout, n: K, a: w, lda: K, x: s.data, y: probeKernels.data)
        if training { (probeKernels.data + K).update(from: z.data, count: K) }
        probeBias[0] = b.map { BLAS.dot(Cout, s.data, $0) } ?? 0
        probeBias[1] = 0
        let y = Tensor.reuse(probe, shape: [batch, channels, P]); probe = y
        var pg = g
        pg.outChannels = channels
        conv2dForward(pg, x: r, batch: batch, weight: probeKernels.data,
                      bias: probeBias.data, y: y.data, scratch: scratch)

        rowMaxima(w, count: Cout, length: K, into: rowMax.data)
        sigma = weightedNorm(s.data, rowMax.data, count: Cout)
        combinedMax = maxMagnitude(probeKernels.data, count: K)
        forwardBatch = batch
        let channelEnergy = patchEnergies(of: r, batch: batch, channels: g.inChannels, transposed: false, scratch: scratch)
        if training { keepFilterProbe(y, batch: batch, channelEnergy: channelEnergy) }
    }

    /// Checks Y_U ([batch, Cout, P]) against the forward probe.
    func checkOutputShare(_ y: UnsafePointer<Float>) -> IntegrityFailure? {
        let g = geometry, P = g.outPositions, channels = probe!.count / (forwardBatch * P)
        return compareCombinations(of: y, batch: forwardBatch, rows: g.outChannels, length: P, weights: s.data,
                                   probe: probe!.data, probeStride: channels * P, inner: g.patchSize,
                                   check: .outputShare)
    }

    // MARK: Input gradient

    /// Draws t and computes the probe conv_transpose(dY, W t) and the transposed patch norms
    /// of dY; adds this pass's terms to the weight-gradient share's reference.
    func prepareBackward(outputGrad dy: UnsafePointer<Float>, batch: Int, weight w: UnsafePointer<Float>,
                         scratch: Scratch) {
        let g = geometry, C = g.inChannels, Cout = g.outChannels, k2 = g.kernel * g.kernel
        random.fillSigned(t.data, count: C)
        for o in 0..<Cout {
            BLAS.gemv(trans: true, m: C, n: k2, a: w + o * C * k2, lda: k2, x: t.data, y: transposedKernel.data + o * k2)
        }
        let dx = Tensor.reuse(probe, shape: [batch, g.height * g.width]); probe = dx
        conv2dBackward(g.with(inChannels: 1), x: dy, batch: batch, weight: transposedKernel.data, dy: dy,
                       dWeight: nil, dBias: nil, dx: dx.data, scratch: scratch)

        // sigma over input channels: |W[:, c, :]|_inf.
        for c in 0..<C {
            var m: Float = 0
            for o in 0..<Cout { m = max(m, maxMagnitude(w + (o * C + c) * k2, count: k2)) }
            rowMax[c] = m
        }
        sigma = weightedNorm(t.data, rowMax.data, count: C)
        combinedMax = maxMagnitude(transposedKernel.data, count: Cout * k2)
        forwardBatch = batch
        _ = patchEnergies(of: dy, batch: batch, channels: Cout, transposed: true, scratch: scratch)
        if filterDrawn { addShareReference(outputGrad: dy, batch: batch) }
    }

    /// Checks dX ([batch, C, H, W]) against the backward probe.
    func checkInputGradient(_ dx: UnsafePointer<Float>) -> IntegrityFailure? {
        let g = geometry, HW = g.height * g.width
        return compareCombinations(of: dx, batch: forwardBatch, rows: g.inChannels, length: HW, weights: t.data,
                                   probe: probe!.data, probeStride: HW, inner: g.outChannels * g.kernel * g.kernel,
                                   check: .inputGradient)
    }

    // MARK: Weight-gradient share

    /// Checks G ([Cout, C*k*k], summed over the passes since the last check) per output
    /// channel, then retires z: the next training pass draws a new one.
    func checkGradientShare(_ share: UnsafePointer<Float>) -> IntegrityFailure? {
        precondition(filterDrawn, "layer \(layer): no training pass since the last weight-gradient share check")
        filterDrawn = false
        let g = geometry, K = g.patchSize, Cout = g.outChannels
        let lhs = Tensor.reuse(self.lhs, shape: [Cout]); self.lhs = lhs
        let tol = Tensor.reuse(tolerances, shape: [Cout]); tolerances = tol
        let rho = Float(filterEnergy.squareRoot()), qNorm = Float(probeEnergy.squareRoot())
        for o in 0..<Cout {
            let row = share + o * K
            var sum: Float = 0, sq: Float = 0
            for j in 0..<K { sum += z[j] * row[j]; sq += z[j] * z[j] * row[j] * row[j] }
            lhs[o] = sum
            tol[o] = RoundingModel.tolerance(scale: outputGradMax[o], sigma: rho, combined: qNorm, inner: sharePositions,
                                             terms: K, weighted: sq.squareRoot())
        }
        return verdict(lhs: lhs.data, rhs: shareReference.data, tolerance: tol.data, count: Cout, check: .gradientShare)
    }

    private func startShare() {
        random.fillSigned(z.data, count: geometry.patchSize)
        filterDrawn = true
        shareReference.zero(); outputGradMax.zero()
        filterEnergy = 0; probeEnergy = 0; sharePositions = 0
    }

    /// Keeps q = conv(R, z) (the forward probe's second channel) and adds this pass's
    /// rho^2 = sum_c |z_c|^2 |R_c|^2 and |q|^2.
    private func keepFilterProbe(_ y: Tensor, batch: Int, channelEnergy: UnsafePointer<Float>) {
        let g = geometry, P = g.outPositions, k2 = g.kernel * g.kernel
        let kept = Tensor.reuse(q, shape: [batch, P]); q = kept
        for n in 0..<batch { (kept.data + n * P).update(from: y.data + (2 * n + 1) * P, count: P) }
        for c in 0..<g.inChannels {
            var zc: Float = 0
            for j in 0..<k2 { zc += z[c * k2 + j] * z[c * k2 + j] }
            filterEnergy += Double(zc) * Double(channelEnergy[c])
        }
        probeEnergy += sumOfSquares(kept.data, count: kept.count)
    }

    /// shareReference[o] += sum_n sum_p q[n, p] dY[n, o, p]; tracks |dY_o|_inf and the length.
    private func addShareReference(outputGrad dy: UnsafePointer<Float>, batch: Int) {
        let g = geometry, P = g.outPositions, Cout = g.outChannels
        guard let q, q.count == batch * P else { preconditionFailure("layer \(layer): backward without its forward pass") }
        for n in 0..<batch {
            let dyn = dy + n * Cout * P
            BLAS.gemv(m: Cout, n: P, a: dyn, lda: P, x: q.data + n * P, beta: 1, y: shareReference.data)
            for o in 0..<Cout { outputGradMax[o] = max(outputGradMax[o], maxMagnitude(dyn + o * P, count: P)) }
        }
        sharePositions += batch * P
    }

    // MARK: Shared steps

    /// Squared norms of the patches each compared value reads, into `patchEnergy`: of R per
    /// output position (a one-channel convolution of sum_c R_c^2 with ones), or of dY per
    /// input position (the transposed convolution of sum_o dY_o^2 with ones). Returns the
    /// per-channel energies sum over samples and positions of R_c^2 (or dY_o^2).
    @discardableResult
    private func patchEnergies(of a: UnsafePointer<Float>, batch: Int, channels: Int, transposed: Bool,
                               scratch: Scratch) -> UnsafePointer<Float> {
        let pg = patchGeometry
        let mapSize = transposed ? pg.outPositions : pg.height * pg.width
        let map = Tensor.reuse(energyMap, shape: [batch * mapSize + channels]); energyMap = map
        let perChannel = map.data + batch * mapSize
        perChannel.update(repeating: 0, count: channels)
        map.data.update(repeating: 0, count: batch * mapSize)
        for n in 0..<batch {
            for c in 0..<channels {
                let row = a + (n * channels + c) * mapSize, dst = map.data + n * mapSize
                var e: Float = 0
                for p in 0..<mapSize { let v = row[p] * row[p]; dst[p] += v; e += v }
                perChannel[c] += e
            }
        }
        let out = Tensor.reuse(patchEnergy, shape: [batch * (transposed ? pg.height * pg.width : pg.outPositions)])
        patchEnergy = out
        if transposed {
            conv2dBackward(pg, x: map.data, batch: batch, weight: ones.data, dy: map.data, dWeight: nil, dBias: nil,
                           dx: out.data, scratch: scratch)
        } else {
            conv2dForward(pg, x: map.data, batch: batch, weight: ones.data, bias: nil, y: out.data, scratch: scratch)
        }
        return UnsafePointer(perChannel)
    }

    /// Compares v^T result[n, :, p] with the probe for every sample and position.
    private func compareCombinations(of result: UnsafePointer<Float>, batch: Int, rows: Int, length: Int,
                                     weights v: UnsafePointer<Float>, probe: UnsafePointer<Float>, probeStride: Int,
                                     inner: Int, check: IntegrityCheck) -> IntegrityFailure? {
        let lhs = Tensor.reuse(self.lhs, shape: [batch * length]); self.lhs = lhs
        let sq = Tensor.reuse(squares, shape: [length]); squares = sq
        let tol = Tensor.reuse(tolerances, shape: [batch * length]); tolerances = tol
        let ref = Tensor.reuse(reference, shape: [batch * length]); reference = ref
        for n in 0..<batch {
            let base = n * length
            combineRows(result + n * rows * length, count: rows, length: length, weights: v, sum: lhs.data + base,
                        squares: sq.data)
            (ref.data + base).update(from: probe + n * probeStride, count: length)
            for p in 0..<length {
                tol[base + p] = RoundingModel.tolerance(scale: patchEnergy![base + p].squareRoot(), sigma: sigma,
                                                        combined: combinedMax, inner: inner, terms: rows,
                                                        weighted: sq[p].squareRoot())
            }
        }
        return verdict(lhs: lhs.data, rhs: ref.data, tolerance: tol.data, count: batch * length, check: check)
    }

    /// The failure at the worst compared value, if it is beyond its tolerance (NaN is).
    private func verdict(lhs: UnsafePointer<Float>, rhs: UnsafePointer<Float>, tolerance: UnsafePointer<Float>,
                         count: Int, check: IntegrityCheck) -> IntegrityFailure? {
        let worst = worstComparison(lhs: lhs, rhs: rhs, tolerance: tolerance, count: count)
        highestRatio[check] = max(highestRatio[check] ?? 0, worst.ratio)
        guard !(worst.discrepancy <= worst.allowed) else { return nil }
        return IntegrityFailure(check: check, layer: layer, index: worst.index, discrepancy: worst.discrepancy,
                                allowed: worst.allowed)
    }
}
