import AsymKernels

/// The light SVD of docs/DESIGN.md §2: greedy rank-1 deflation with a few power steps.
///
/// The matrix is X = [X_1 | X_2 | ... | X_n]: n blocks of C x P, each block contiguous (one
/// sample's C x H*W feature map in NCHW). With one block per call this is the per-sample
/// basis; with a whole batch of blocks it is the batch basis (one U for all samples).
///
/// Outputs: `ut` holds U transposed, [r][C] (row j is u_j); `v` holds, per block, V_i as
/// [rmax][P] (rows beyond the rank are zero); `residual` per block R_i = X_i - U V_i.
/// X = U V + R holds exactly by construction: R is computed as X minus the subtracted parts.
package struct LightSVD {
    package var channels: Int, positions: Int
    package var iterations: Int
    package static let epsilon: Float = 1e-12

    package init(channels: Int, positions: Int, iterations: Int) {
        self.channels = channels; self.positions = positions; self.iterations = iterations
    }

    /// Decomposes `blocks` blocks starting at `x` (block stride C*P), adding components until
    /// `maxRank` or until ||R||^2 / ||X||^2 <= tau (when tau is given), whichever comes first.
    /// `warmU` ([maxRank][C]), when given and non-zero, seeds component j's u (the batch basis passes the
    /// previous step's U, which changes slowly). Returns the rank used, ||R||^2 and ||X||^2.
    @discardableResult
    package func decompose(x: UnsafePointer<Float>, blocks: Int, maxRank: Int, tau: Double?,
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
        // Cold starts take the channels in order of decreasing energy, measured once (when
        // first needed): the strongest remaining direction is usually close to one of them.
        var starts: [Int] = []
        var energy = total
        var rank = 0
        while rank < maxRank {
            if let tau, energy / total <= tau { break }
            let j = rank
            if let warmU, BLAS.dot(C, warmU + j * C, warmU + j * C) > 0 {
                u.update(from: warmU + j * C, count: C)
            } else {
                if starts.isEmpty { starts = channelsByEnergy(blocks: blocks, x: x) }
                u.update(repeating: 0, count: C)
                u[starts[j % C]] = 1
            }
            // v = R^T u / (u.u); then q power steps: u = R v / (v.v), v = R^T u / (u.u).
            // Ending on v makes u v^T the least-squares rank-1 fit for the final u.
            projectOntoU(blocks: blocks, residual: residual, u: u, v: v, row: j, maxRank: maxRank)
            for _ in 0..<iterations {
                let vv = squaredNorm(v, row: j, blocks: blocks, maxRank: maxRank) + LightSVD.epsilon
                u.update(repeating: 0, count: C)
                for i in 0..<blocks {
                    BLAS.gemv(m: C, n: P, alpha: 1 / vv, a: residual + i * block, lda: P,
                              x: v + (i * maxRank + j) * P, beta: 1, y: u)
                }
                projectOntoU(blocks: blocks, residual: residual, u: u, v: v, row: j, maxRank: maxRank)
            }
            // Deflate: R_i -= u v_i^T. Since v is R^T u / (u.u), this removes exactly
            // (u.u)(v.v) of the energy, so no pass over R is needed to track it.
            for i in 0..<blocks {
                BLAS.ger(m: C, n: P, alpha: -1, x: u, y: v + (i * maxRank + j) * P, a: residual + i * block, lda: P)
            }
            (ut + j * C).update(from: u, count: C)
            rank += 1
            let removed = Double(BLAS.dot(C, u, u)) * Double(squaredNorm(v, row: j, blocks: blocks, maxRank: maxRank))
            energy = max(0, energy - removed)
        }
        // The exact residual energy, for the metrics (the running value drifts by rounding).
        energy = rank > 0 ? sumOfSquares(residual, count: blocks * block) : total
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

    /// Makes the first `rows` rows of `ut` ([rows][C]) orthonormal (modified Gram-Schmidt),
    /// dropping rows that are (nearly) dependent on earlier ones. Returns the rows kept;
    /// the rows after them are zero.
    package func orthonormalize(_ ut: UnsafeMutablePointer<Float>, rows: Int) -> Int {
        let C = channels
        var kept = 0
        for j in 0..<rows {
            let u = ut + j * C
            let original = BLAS.dot(C, u, u)
            for i in 0..<kept {
                let q = ut + i * C
                BLAS.axpy(C, alpha: -BLAS.dot(C, q, u), x: q, y: u)
            }
            let norm = BLAS.dot(C, u, u)
            if norm > 1e-10 * max(original, 1e-30) {
                let scale = 1 / norm.squareRoot()
                let target = ut + kept * C
                for c in 0..<C { target[c] = u[c] * scale }
                kept += 1
            }
        }
        (ut + kept * C).update(repeating: 0, count: (rows - kept) * C)
        return kept
    }

    /// Subspace iteration from a warm basis (the batch basis, between training steps): with
    /// Q the `rows` rows of `ut` ([rows][C], row j is u_j), `iterations` rounds of
    /// Q <- orth(Q X X^T) over the `blocks` blocks, each round two GEMMs per block rather than
    /// `decompose`'s matrix-vector products per component. `projections` holds Q X_i
    /// ([blocks][rows][P]) and `product` Q X X^T ([rows][C]). Leaves Q orthonormal and returns
    /// the rows kept (`orthonormalize` drops dependent ones).
    package func refine(x: UnsafePointer<Float>, blocks: Int, ut: UnsafeMutablePointer<Float>, rows: Int,
                        projections: UnsafeMutablePointer<Float>, product: UnsafeMutablePointer<Float>) -> Int {
        let C = channels, P = positions
        var rank = orthonormalize(ut, rows: rows)
        for _ in 0..<iterations where rank > 0 {
            for i in 0..<blocks {
                BLAS.gemm(m: rank, n: P, k: C, a: ut, lda: C, b: x + i * C * P, ldb: P, c: projections + i * rank * P, ldc: P)
            }
            for i in 0..<blocks {
                BLAS.gemm(transB: true, m: rank, n: C, k: P, a: projections + i * rank * P, lda: P, b: x + i * C * P, ldb: P,
                          beta: i == 0 ? 0 : 1, c: product, ldc: C)
            }
            ut.update(from: product, count: rank * C)
            rank = orthonormalize(ut, rows: rank)
        }
        return rank
    }

    /// Whether each of the first `rows` rows of `ut` ([rows][C]) has a non-zero value.
    package func rowsAreNonZero(_ ut: UnsafePointer<Float>, rows: Int) -> Bool {
        (0..<rows).allSatisfy { j in BLAS.dot(channels, ut + j * channels, ut + j * channels) > 0 }
    }

    /// With an orthonormal basis Q (`ut`, [rank][C]) for every block: V_i = Q X_i and
    /// R_i = X_i - Q^T V_i, as GEMMs. `v` gets [blocks][rank][P]. Returns ||R||^2 and ||X||^2.
    /// Block by block (a block stays in cache), and R's energy in the same pass that adds X;
    /// ||X||^2 = ||R||^2 + ||V||^2 because R is orthogonal to Q. R may overwrite X (`residual`
    /// == `x`) given `sample`, room for one block, where each block's R is formed first.
    package func project(x: UnsafePointer<Float>, blocks: Int, ut: UnsafePointer<Float>, rank: Int,
                        v: UnsafeMutablePointer<Float>, residual: UnsafeMutablePointer<Float>,
                        sample: UnsafeMutablePointer<Float>? = nil) -> (residualEnergy: Double, totalEnergy: Double) {
        let C = channels, P = positions
        precondition(sample != nil || UnsafePointer(residual) != x || rank == 0, "R over X needs room for a block")
        guard rank > 0 else {
            residual.update(from: x, count: blocks * C * P)
            let e = sumOfSquares(x, count: blocks * C * P)
            return (e, e)
        }
        var residualEnergy = 0.0
        for i in 0..<blocks {
            let vi = v + i * rank * P, ri = residual + i * C * P, xi = x + i * C * P
            let r = sample ?? ri
            BLAS.gemm(m: rank, n: P, k: C, a: ut, lda: C, b: xi, ldb: P, c: vi, ldc: P)
            BLAS.gemm(transA: true, m: C, n: P, k: rank, alpha: -1, a: ut, lda: C, b: vi, ldb: P, c: r, ldc: P)
            residualEnergy += addAndSumSquares(xi, into: r, count: C * P)
            if sample != nil { ri.update(from: r, count: C * P) }
        }
        return (residualEnergy, residualEnergy + sumOfSquares(v, count: blocks * rank * P))
    }

    /// ||v_j||^2 summed over the blocks.
    private func squaredNorm(_ v: UnsafePointer<Float>, row j: Int, blocks: Int, maxRank: Int) -> Float {
        var s: Float = 0
        for i in 0..<blocks { let vi = v + (i * maxRank + j) * positions; s += BLAS.dot(positions, vi, vi) }
        return s
    }

    /// Channel indices sorted by their energy in X (summed over the blocks), largest first.
    private func channelsByEnergy(blocks: Int, x: UnsafePointer<Float>) -> [Int] {
        let C = channels, P = positions
        var norms = [Float](repeating: 0, count: C)
        for c in 0..<C {
            for i in 0..<blocks { let row = x + i * C * P + c * P; norms[c] += BLAS.dot(P, row, row) }
        }
        return (0..<C).sorted { norms[$0] > norms[$1] }
    }
}
