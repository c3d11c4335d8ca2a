import AsymKernels
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Masking what crosses to the untrusted side (design §9): it sees only random mixtures of K
/// samples plus noise, and the trusted side decodes every result exactly.
///
/// Per group of k <= K samples, with L = k + 2 combinations and a fresh random orthogonal
/// L x L matrix Q (columns q_0 .. q_{k+1}):
///
///     forward:   x~_j = sum_i Q[j,i] R_i + Q[j,k] n            M = Q[:, 0...k]  (L x (k+1))
///     backward:  d~_j = (sum_i N~[j,i] dY_i + N~[j,k] m) / g_j  N~ = [q_0..q_{k-1} + z w^T | z],  z = q_{k+1}
///
/// with fresh noise n, m (standard deviation sigma times the group's RMS), fresh pair
/// weights g_j and a fresh vector w. The untrusted side convolves each x~_j (adding its bias),
/// transposes-convolves each d~_j and returns corr(x~_j, d~_j) per combination. Decoding:
///
/// * conv(R_i, W) = sum_j M[j,i] conv(x~_j, W): M has orthonormal columns, so M^T undoes it
///   (the bias comes back times sum_j M[j,i] and is corrected to b);
/// * dX_i = sum_j N+[i,j] dX~_j, N+ the left inverse of N = diag(1/g) N~;
/// * the weight gradient is bilinear: sum_j g_j corr(x~_j, d~_j) = sum_{a,b} (M^T N~)[a,b]
///   corr(X_a, Y_b) over the sources X = (R_1..R_k, n), Y = (dY_1..dY_k, m), and
///   M^T N~ = diag(1, .., 1, 0) because q_0..q_k are orthonormal and z is orthogonal to them:
///   every cross term (R_i with dY_i', noise with data, noise with noise) cancels, leaving
///   sum_i corr(R_i, dY_i) exactly.
///
/// Why L = k + 2: with L = k + 1 full-rank mixtures on both sides M^T diag(g) N is invertible
/// and cannot equal diag(1, .., 1, 0), so either dY would cross without noise (DarKnight's
/// choice) or the trusted side would have to compute corr(n, m) itself (a full correlation).
/// The pair weights g stay secret: with them the untrusted side could pick the combinations
/// of its d~ that are free of noise (those orthogonal to diag(1/g) z).
package final class MaskingExecutor: UntrustedExecutor {
    package let inner: UntrustedExecutor
    /// K, the samples mixed together (a last, smaller group takes the rest of the batch).
    package let groupSize: Int
    /// sigma: noise standard deviation relative to the RMS of the group's residuals (or dY).
    package let noiseScale: Float
    /// Seconds spent encoding and decoding (trusted work), since creation.
    package private(set) var codingSeconds = 0.0

    private final class LayerState {
        let bias: Tensor?
        let weightCount: Int
        var batch = 0
        var groups: [GroupMask] = []
        var encodedResidual: Tensor?, output: Tensor?, encodedGrad: Tensor?, inputGrad: Tensor?
        /// The decoded share sum_i corr(R_i, dY_i) of dW, summed over the step's backward passes.
        let share: Tensor
        init(bias: Tensor?, weightShape: [Int]) {
            self.bias = bias
            share = Tensor(shape: weightShape)
            weightCount = share.count
        }
    }
    private var layers: [Int: LayerState] = [:]
    private var noise: Tensor?

    package init(wrapping inner: UntrustedExecutor, groupSize: Int, noiseScale: Float) {
        precondition(groupSize >= 1, "mask groups need at least one sample")
        self.inner = inner
        self.groupSize = groupSize
        self.noiseScale = noiseScale
    }

    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        layers[info.layer] = LayerState(bias: bias, weightShape: weight.shape)
        inner.register(info, weight: weight, bias: bias)
    }

    /// Read-only, for measuring leakage (`asymml attack`), never sent anywhere: the secret
    /// mixing of the last message on `layer`, one entry per group in batch order, with k (the
    /// group's samples) and two L x (k + 1) row-major matrices, L = k + 2, whose row j gives
    /// combination j as sent: `forward` = M = Q[:, 0...k] (x~_j = sum_i M[j,i] R_i + M[j,k] n)
    /// and `backward` = N = diag(1/g) N~ (d~_j = sum_i N[j,i] dY_i + N[j,k] m; empty before
    /// the first backward pass). Column k multiplies the noise. Both stay valid until the
    /// next forward pass on `layer` draws new groups.
    package func lastMixing(layer: Int) -> [(samples: Int, forward: [Float], backward: [Float])] {
        layers[layer]?.groups.map { ($0.samples, $0.forwardMix, $0.backwardMix) } ?? []
    }

    /// The group sizes of a batch: K each, the last one smaller when K does not divide it.
    package static func groupSizes(batch: Int, groupSize K: Int) -> [Int] {
        (0..<((batch + K - 1) / K)).map { min(K, batch - $0 * K) }
    }

    package func startForward(_ r: Residual) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let st = layers[r.layer]!
        var stream = MaskStream()
        st.batch = r.batch
        st.groups = MaskingExecutor.groupSizes(batch: r.batch, groupSize: groupSize).map { GroupMask(samples: $0, &stream) }
        let encoded = encode(r.tensor, groups: st.groups, mixes: st.groups.map(\.forwardMix), reuse: st.encodedResidual, &stream)
        st.encodedResidual = encoded
        codingSeconds += seconds(since: t0)
        inner.startForward(Residual(layer: r.layer, tensor: encoded, batch: encoded.shape[0]))
    }

    package func finishForward(layer: Int) -> Tensor {
        let st = layers[layer]!
        let out = inner.finishForward(layer: layer)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let y = decode(out, groups: st.groups, unmixes: st.groups.map(\.forwardUnmix), batch: st.batch, reuse: st.output)
        st.output = y
        if let bias = st.bias { restoreBias(y, bias: bias, groups: st.groups) }
        codingSeconds += seconds(since: t0)
        return y
    }

    package func startBackward(_ g: OutputGradient) {
        backwardBatch = g.batch
        let t0 = DispatchTime.now().uptimeNanoseconds
        let st = layers[g.layer]!
        precondition(g.batch == st.batch, "backward batch \(g.batch) after a forward of \(st.batch)")
        var stream = MaskStream()
        for i in st.groups.indices { st.groups[i].drawBackward(&stream) }
        let encoded = encode(g.tensor, groups: st.groups, mixes: st.groups.map(\.backwardMix), reuse: st.encodedGrad, &stream)
        st.encodedGrad = encoded
        codingSeconds += seconds(since: t0)
        inner.startBackwardPerSample(OutputGradient(layer: g.layer, tensor: encoded, batch: encoded.shape[0]))
    }

    package func finishBackward(layer: Int) -> Tensor {
        let st = layers[layer]!
        let dxMixed = inner.finishBackward(layer: layer)
        let shares = inner.finishWeightShares(layer: layer)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let dx = decode(dxMixed, groups: st.groups, unmixes: st.groups.map(\.backwardUnmix), batch: st.batch, reuse: st.inputGrad)
        st.inputGrad = dx
        // share += sum_j g_j corr(x~_j, d~_j), group by group.
        var c0 = 0
        for group in st.groups {
            group.pairWeights.withUnsafeBufferPointer {
                BLAS.gemv(trans: true, m: group.combinations, n: st.weightCount, a: shares.data + c0 * st.weightCount,
                          lda: st.weightCount, x: $0.baseAddress!, beta: 1, y: st.share.data)
            }
            c0 += group.combinations
        }
        codingSeconds += seconds(since: t0)
        return dx
    }

    package func takeComputeSeconds() -> Double { inner.takeComputeSeconds() }
    /// The local batch of the last backward pass (the samples the decoded shares cover).
    private var backwardBatch = 0
    package func progress() { inner.progress() }

    /// Hands every layer's decoded weight-gradient share to `body` and zeroes it. The shares
    /// are decoded here from the per-combination correlations, so they cover the whole batch.
    package func collectGradientShares(_ body: (Int, UnsafeMutablePointer<Float>, Range<Int>) throws -> Void) throws {
        for layer in layers.keys.sorted() {
            let st = layers[layer]!
            try body(layer, st.share.data, 0..<backwardBatch)
            st.share.zero()
        }
    }

    package func publishWeights() throws { try inner.publishWeights() }
    package func source(ofSample sample: Int, batch: Int) -> String { inner.source(ofSample: sample, batch: batch) }
    package func exclude(sourcesOfSamples samples: [Int], batch: Int) throws -> String {
        try inner.exclude(sourcesOfSamples: samples, batch: batch)
    }

    /// The combinations of every group: out[L, size] = mix[:, 0..<k] x[k, size] + mix[:, k] noise,
    /// with fresh noise of standard deviation sigma times the group's RMS.
    private func encode(_ x: Tensor, groups: [GroupMask], mixes: [[Float]], reuse: Tensor?,
                        _ stream: inout MaskStream) -> Tensor {
        let size = x.count / x.shape[0]
        let total = groups.reduce(0) { $0 + $1.combinations }
        let out = Tensor.reuse(reuse, shape: [total] + x.shape.dropFirst())
        let n = Tensor.reuse(noise, shape: [size]); noise = n
        var s0 = 0, c0 = 0
        for (group, mix) in zip(groups, mixes) {
            let k = group.samples, L = group.combinations, src = x.data + s0 * size
            stream.fillNormal(n.data, count: size, scale: noiseScale * rms(src, count: k * size))
            let noiseColumn = (0..<L).map { mix[$0 * (k + 1) + k] }
            mix.withUnsafeBufferPointer { m in
                BLAS.gemm(m: L, n: size, k: k, a: m.baseAddress!, lda: k + 1, b: src, ldb: size, c: out.data + c0 * size, ldc: size)
            }
            BLAS.ger(m: L, n: size, alpha: 1, x: noiseColumn, y: n.data, a: out.data + c0 * size, lda: size)
            s0 += k; c0 += L
        }
        return out
    }

    /// The samples of every group: out[k, size] = unmix[k, L] y[L, size].
    private func decode(_ y: Tensor, groups: [GroupMask], unmixes: [[Float]], batch: Int, reuse: Tensor?) -> Tensor {
        let size = y.count / y.shape[0]
        let out = Tensor.reuse(reuse, shape: [batch] + y.shape.dropFirst())
        var s0 = 0, c0 = 0
        for (group, unmix) in zip(groups, unmixes) {
            let k = group.samples, L = group.combinations
            unmix.withUnsafeBufferPointer { u in
                BLAS.gemm(m: k, n: size, k: L, a: u.baseAddress!, lda: L, b: y.data + c0 * size, ldb: size,
                          c: out.data + s0 * size, ldc: size)
            }
            s0 += k; c0 += L
        }
        return out
    }

    /// Each combination's output carried the bias once, so sample i's decoded output carries it
    /// sum_j M[j,i] times: add (1 - that) b back per channel.
    private func restoreBias(_ y: Tensor, bias: Tensor, groups: [GroupMask]) {
        let channels = bias.count, positions = y.count / (y.shape[0] * channels)
        var s = 0
        for group in groups {
            for i in 0..<group.samples {
                let missing = 1 - group.forwardUnmix[(i * group.combinations)..<((i + 1) * group.combinations)].reduce(0, +)
                for o in 0..<channels {
                    let row = y.data + (s * channels + o) * positions, add = missing * bias[o]
                    for p in 0..<positions { row[p] += add }
                }
                s += 1
            }
        }
    }

    private func rms(_ x: UnsafePointer<Float>, count: Int) -> Float {
        count == 0 ? 0 : (BLAS.dot(count, x, x) / Float(count)).squareRoot()
    }

    private func seconds(since t0: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }
}

/// The secret mixing of one group (see `MaskingExecutor`); row-major Float matrices for the GEMMs.
struct GroupMask {
    /// k, the samples of the group; L = k + 2 combinations cross.
    let samples: Int
    var combinations: Int { samples + 2 }
    /// Q, L x L orthogonal, in double precision (the backward mixing is built from it).
    private let q: [Double]
    /// M = Q[:, 0...k], L x (k + 1): columns 0..<k mix the residuals, column k the noise.
    let forwardMix: [Float]
    /// M^T's first k rows, k x L.
    let forwardUnmix: [Float]
    /// N = diag(1/g) [Q[:, 0..<k] + z w^T | z], L x (k + 1); its left inverse's first k rows; g.
    private(set) var backwardMix: [Float] = []
    private(set) var backwardUnmix: [Float] = []
    private(set) var pairWeights: [Float] = []

    init(samples k: Int, _ stream: inout MaskStream) {
        samples = k
        let L = k + 2
        let q = maskingBasis(samples: k, &stream)
        self.q = q
        forwardMix = (0..<L).flatMap { j in (0...k).map { Float(q[j * L + $0]) } }
        forwardUnmix = (0..<k).flatMap { i in (0..<L).map { Float(q[$0 * L + i]) } }
    }

    /// Draws the backward pass's fresh pair weights g (random sign, magnitude in [1/2, 2]) and w.
    mutating func drawBackward(_ stream: inout MaskStream) {
        let k = samples, L = combinations
        let g = (0..<L).map { _ in
            (stream.next() & 1 == 0 ? 1.0 : -1.0) * exp2(2 * Double(stream.next() >> 11) * 0x1p-53 - 1)
        }
        let w = (0..<k).map { _ in stream.normal() }
        var n = [Double](repeating: 0, count: L * (k + 1))
        for j in 0..<L {
            let z = q[j * L + k + 1]
            for i in 0..<k { n[j * (k + 1) + i] = (q[j * L + i] + z * w[i]) / g[j] }
            n[j * (k + 1) + k] = z / g[j]
        }
        let plus = leftInverse(n, rows: L, cols: k + 1)
        backwardMix = n.map(Float.init)
        backwardUnmix = plus[0..<(k * L)].map(Float.init)
        pairWeights = g.map(Float.init)
    }
}

/// Q for a group of k samples: a random L x L orthogonal matrix (L = k + 2, row-major) whose
/// noise columns have no small entries, so that every combination that crosses carries
/// noise. A Gaussian random Q would, now and then, give a combination a noise weight near 0,
/// and with k = 1 that combination is the sample itself. Column k (the forward noise) is a
/// random-sign vector, every entry 1/sqrt(L) in size; column k + 1 (z, the backward noise) a
/// second random-sign vector s made orthogonal to it, s - (s.u / L) u, redrawn until
/// |s.u| <= L - 2, so its entries are at least 2/L before normalising. The data columns are a
/// random orthonormal completion.
func maskingBasis(samples k: Int, _ stream: inout MaskStream) -> [Double] {
    let L = k + 2
    func signs() -> [Double] { (0..<L).map { _ in stream.next() & 1 == 0 ? 1 : -1 } }
    let u = signs()
    var s: [Double]
    repeat { s = signs() } while abs(zip(s, u).reduce(0) { $0 + $1.0 * $1.1 }) > Double(L - 2)
    var a = (0..<(L * L)).map { _ in stream.normal() }
    for r in 0..<L { a[r * L + k] = u[r]; a[r * L + k + 1] = s[r] }
    return orthonormalized(a, n: L, order: [k, k + 1] + Array(0..<k))
}

/// The columns of the n x n matrix `a` (row-major) made orthonormal in `order`: Gram-Schmidt,
/// twice for orthogonality to double precision.
func orthonormalized(_ a: [Double], n: Int, order: [Int]) -> [Double] {
    var a = a
    for (i, c) in order.enumerated() {
        for _ in 0..<2 {
            for p in order[..<i] {
                let d = (0..<n).reduce(0.0) { $0 + a[$1 * n + c] * a[$1 * n + p] }
                for r in 0..<n { a[r * n + c] -= d * a[r * n + p] }
            }
        }
        let norm = (0..<n).reduce(0.0) { $0 + a[$1 * n + c] * a[$1 * n + c] }.squareRoot()
        for r in 0..<n { a[r * n + c] /= norm }
    }
    return a
}

/// (A^T A)^-1 A^T for a rows x cols matrix of full column rank (row-major, cols x rows).
func leftInverse(_ a: [Double], rows: Int, cols: Int) -> [Double] {
    // Gauss-Jordan with partial pivoting on [A^T A | A^T].
    let w = cols + rows
    var m = [Double](repeating: 0, count: cols * w)
    for i in 0..<cols {
        for j in 0..<cols { m[i * w + j] = (0..<rows).reduce(0.0) { $0 + a[$1 * cols + i] * a[$1 * cols + j] } }
        for r in 0..<rows { m[i * w + cols + r] = a[r * cols + i] }
    }
    for c in 0..<cols {
        let p = (c..<cols).max { abs(m[$0 * w + c]) < abs(m[$1 * w + c]) }!
        if p != c { for j in 0..<w { m.swapAt(c * w + j, p * w + j) } }
        let d = m[c * w + c]
        precondition(d != 0, "singular mixing matrix")
        for j in 0..<w { m[c * w + j] /= d }
        for r in 0..<cols where r != c {
            let f = m[r * w + c]
            if f != 0 { for j in 0..<w { m[r * w + j] -= f * m[c * w + j] } }
        }
    }
    return (0..<cols).flatMap { i in (0..<rows).map { m[i * w + cols + $0] } }
}
