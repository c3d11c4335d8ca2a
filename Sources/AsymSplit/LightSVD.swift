import AsymKernels

/// The light SVD of design §2: greedy rank-1 deflation with a few power steps.
///
/// The matrix is X = [X_1 | X_2 | ... | X_n]: n blocks of C x P, each block contiguous (one
/// sample's C x H*W feature map in NCHW). With one block per call this is the per-sample
/// basis; with a whole batch of blocks it is the batch basis (one U for all samples).
///
/// Outputs: `ut` holds U transposed, [r][C] (row j is u_j); `v` holds, per block, V_i as
/// [rmax][P] (rows beyond the rank are zero); `residual` per block R_i = X_i - U V_i.
/// X = U V + R holds exactly by construction: R is computed as X minus the subtracted parts.
public struct LightSVD {
    public var channels: Int, positions: Int
    public var iterations: Int
    public static let epsilon: Float = 1e-12

    public init(channels: Int, positions: Int, iterations: Int) {
        self.channels = channels; self.positions = positions; self.iterations = iterations
    }

    /// Decomposes `blocks` blocks starting at `x` (block stride C*P), adding components until
    /// `maxRank` or until ||R||^2 / ||X||^2 <= tau (when tau is given), whichever comes first.
    /// `warmU` ([maxRank][C]), when given and non-zero, seeds component j's u (the batch basis passes the
    /// previous step's U, which changes slowly). Returns the rank used, ||R||^2 and ||X||^2.
    @discardableResult
    public func decompose(x: UnsafePointer<Float>, blocks: Int, maxRank: Int, tau: Double?,
                          warmU: UnsafePointer<Float>?, ut: UnsafeMutablePointer<Float>,
                          v: UnsafeMutablePointer<Float>, residual: UnsafeMutablePointer<Float>,
                          scratch: UnsafeMutablePointer<Float>) -> (rank: Int, residualEnergy: Double, totalEnergy: Double) {
        let C = channels, P = positions, block = C * P
        residual.update(from: x, count: blocks * block)
        v.update(repeating: 0, count: blocks * maxRank * P)
        ut.update(repeating: 0, count: maxRank * C)
        let total = sumOfSquares(x, count: blocks * block)
        if total == 0 { return (0, 0, 0) }
        let u = scratch  // C values
        var energy = total
        var rank = 0
        while rank < maxRank {
            if let tau, energy / total <= tau { break }
            let j = rank
            // Start: u from the warm basis, else from the residual's strongest channel.
            if let warmU, BLAS.dot(C, warmU + j * C, warmU + j * C) > 0 {
                u.update(from: warmU + j * C, count: C)
            } else {
                strongestChannelDirection(blocks: blocks, residual: residual, u: u)
            }
            // v = R^T u / (u.u); then q power steps: u = R v / (v.v), v = R^T u / (u.u).
            // Ending on v makes u v^T the least-squares rank-1 fit for the final u.
            projectOntoU(blocks: blocks, residual: residual, u: u, v: v, row: j, maxRank: maxRank)
            for _ in 0..<iterations {
                var vv: Float = LightSVD.epsilon
                for i in 0..<blocks { let vi = v + (i * maxRank + j) * P; vv += BLAS.dot(P, vi, vi) }
                u.update(repeating: 0, count: C)
                for i in 0..<blocks {
                    BLAS.gemv(m: C, n: P, alpha: 1 / vv, a: residual + i * block, lda: P,
                              x: v + (i * maxRank + j) * P, beta: 1, y: u)
                }
                projectOntoU(blocks: blocks, residual: residual, u: u, v: v, row: j, maxRank: maxRank)
            }
            // Deflate: R_i -= u v_i^T.
            for i in 0..<blocks {
                BLAS.ger(m: C, n: P, alpha: -1, x: u, y: v + (i * maxRank + j) * P, a: residual + i * block, lda: P)
            }
            (ut + j * C).update(from: u, count: C)
            rank += 1
            energy = sumOfSquares(residual, count: blocks * block)
        }
        return (rank, energy, total)
    }

    /// v_i = R_i^T u / (u.u) for every block, into row `row` of each V_i.
    private func projectOntoU(blocks: Int, residual: UnsafePointer<Float>, u: UnsafePointer<Float>,
                              v: UnsafeMutablePointer<Float>, row: Int, maxRank: Int) {
        let C = channels, P = positions
        let uu = BLAS.dot(C, u, u) + LightSVD.epsilon
        for i in 0..<blocks {
            BLAS.gemv(trans: true, m: C, n: P, alpha: 1 / uu, a: residual + i * C * P, lda: P, x: u,
                      y: v + (i * maxRank + row) * P)
        }
    }

    /// u = the residual row (channel) with the largest norm, summed over blocks: a start
    /// vector that already points along much of the remaining energy.
    private func strongestChannelDirection(blocks: Int, residual: UnsafePointer<Float>, u: UnsafeMutablePointer<Float>) {
        let C = channels, P = positions
        var best = 0, bestNorm: Float = -1
        for c in 0..<C {
            var n: Float = 0
            for i in 0..<blocks { let row = residual + i * C * P + c * P; n += BLAS.dot(P, row, row) }
            if n > bestNorm { bestNorm = n; best = c }
        }
        u.update(repeating: 0, count: C)
        u[best] = 1
    }
}
