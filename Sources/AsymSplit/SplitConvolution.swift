import AsymKernels
import AsymIntegrity
#if canImport(Glibc)
import Glibc
#endif

/// Per-layer settings of a split convolution.
package struct SplitSettings: Equatable {
    package enum Basis: String, CaseIterable { case sample, batch }
    /// The largest rank; the `energy` policy may stop earlier.
    package var maxRank: Int
    /// `energy` policy: stop once ||R||^2 / ||X||^2 <= tau.
    package var tau: Double?
    package var iterations: Int
    package var basis: Basis
    /// Check every untrusted result (design §8); `onFailure` says what a failed check does.
    package var verify: Bool
    package var onFailure: IntegrityPolicy
    /// Micro-batches per layer pass (`asym.microbatches`, docs/DESIGN.md §4.3).
    package var microbatches: Int
    package init(maxRank: Int, tau: Double? = nil, iterations: Int = 2, basis: Basis = .sample, verify: Bool = false,
                onFailure: IntegrityPolicy = .report, microbatches: Int = 1) {
        self.maxRank = maxRank; self.tau = tau; self.iterations = iterations; self.basis = basis
        self.verify = verify; self.onFailure = onFailure; self.microbatches = microbatches
    }
}

/// Swaps the two leading axes of a [a][b][inner] array into [b][a][inner] (or adds into it).
@inline(__always)
func swapLeadingAxes(_ src: UnsafePointer<Float>, a: Int, b: Int, inner: Int,
                     into dst: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
    for i in 0..<a {
        for j in 0..<b {
            let s = src + (i * b + j) * inner, d = dst + (j * a + i) * inner
            if accumulate { for t in 0..<inner { d[t] += s[t] } } else { d.update(from: s, count: inner) }
        }
    }
}

/// The trusted half of a split convolution (docs/DESIGN.md §2).
///
/// Forward: X = U V + R by the light SVD; R goes to the untrusted executor, which returns
/// conv(R, W) + b; meanwhile the trusted side computes conv(U V, W) in the cheaper order:
/// combined kernels W~ = W U and a conv on V's r channels, or (when r is large against the
/// map) U V rebuilt and convolved in full. Backward: the executor returns dX and keeps its
/// share corr(R, dY) of dW; the trusted side adds U (x) corr(V, dY) and db.
///
/// With `settings.verify`, forward checks Y_U before the merge, backward checks dX, and the
/// caller hands the weight-gradient share to `verifyGradientShare` before it enters any sum
/// (once per step: the check retires the step's secret filter). A batch sharded across
/// several untrusted ranks has each rank's share checked on its own, by sample range
/// (`verifyGradientShare(_:samples:)`, then `finishGradientShareChecks`).
package final class SplitConvolution {
    package let info: SplitLayerInfo
    package let settings: SplitSettings
    let executor: UntrustedExecutor
    let svd: LightSVD
    /// Shared with the model's other layers (they run one at a time): im2col buffers live
    /// once per model, not once per layer. Slots 0 and 1 belong to the conv kernels (the
    /// integrity checker borrows them between kernel calls); this class uses 2 (SVD work),
    /// 3 (kernel temporaries), 4 (the batch basis estimate's residual, then the projection's
    /// sample when R overwrites X), 5 (the combined kernels W~ forward, the kernel gradients G
    /// backward) and 6 (W reordered forward, the product U G backward).
    let scratch: Scratch
    /// The model's arena (or one of its own): the low-rank output Y_T lives there during the
    /// forward pass, and R too when `residualsLeave`.
    let arena: ActivationArena

    /// The rank used in the last forward pass, and the residual energy ||R||^2 / ||X||^2.
    package private(set) var lastRank = 0
    package private(set) var lastResidualEnergy = 0.0
    /// Whether the last forward rebuilt U V instead of using combined kernels.
    package fileprivate(set) var lastRebuilt = false
    /// Set when a ReLU follows this layer: the merge applies it (the ReLU layer then passes
    /// its input through), which saves a pass over the output and the ReLU's own buffer.
    package var fusedReLU = false

    private var residual: Tensor?, ut: Tensor?, v: Tensor?
    /// The buffers R was written to: one, except under `.recompute` with several passes per
    /// share check (each pending pass keeps its R).
    private var residualBuffers: [Tensor] = []
    /// Set when the executor keeps no reference to R once this layer's forward pass ends
    /// (MPI): R then goes to the arena, or over X when the caller lets forward overwrite it,
    /// instead of `residualBuffers` (except under `.recompute`, which keeps each pass's R).
    package var residualsLeave = false
    private var rebuilt: Tensor?
    /// The batch basis of the last training step, which warm-starts the next one. Saved in
    /// checkpoints so that a resumed run continues exactly.
    package var warmBasis: Tensor?

    /// The integrity checks, when `settings.verify` is on.
    package let checker: IntegrityChecker?
    /// Receives every failed check. Under `.report` without a handler a failure stops the
    /// process: an unchecked result must never be used silently.
    package var failureHandler: ((IntegrityFailure) -> Void)?
    /// Failed checks so far (under `.recompute` each was replaced by a trusted result).
    package private(set) var integrityFailures = 0
    /// Under `.recompute`, each backward pass's R (by reference: a later pass writes its R to
    /// another buffer) and a copy of dY (the caller's) since the last share check: what the
    /// trusted side needs to recompute a failed weight-gradient share.
    private var sharePasses: [(residual: Tensor, outputGrad: Tensor, batch: Int)] = []
    private var sharePassCount = 0

    /// Samples the batch basis is estimated on (the projection then covers the whole batch).
    package static let basisSamples = 8
    /// Samples a warm batch basis is refined on (`LightSVD.refine`). Its GEMM rounds on 16
    /// samples cost a third of the greedy light SVD on 8, and left as little residual energy
    /// (fmnist-cnn, 300 steps: 0.200 / 0.011 / 0.018 on conv2-4, against the greedy's
    /// 0.205 / 0.010 / 0.020; on 8 samples conv3 kept 0.017).
    package static let refinedSamples = 16
    /// Per-sample kernel gradients are combined with U this many samples at a time.
    static let kernelChunk = 8

    package init(info: SplitLayerInfo, settings: SplitSettings, executor: UntrustedExecutor, scratch: Scratch = Scratch(),
                 arena: ActivationArena = ActivationArena()) {
        self.info = info
        self.scratch = scratch
        self.arena = arena
        self.settings = settings
        self.executor = executor
        let g = info.geometry
        svd = LightSVD(channels: g.inChannels, positions: g.height * g.width, iterations: settings.iterations)
        checker = settings.verify ? IntegrityChecker(layer: info.layer, geometry: g) : nil
    }

    var geometry: ConvGeometry { info.geometry }
    var perSample: Bool { settings.basis == .sample }

    /// True when convolving V with combined kernels costs less than rebuilding U V.
    package static func combinedCheaper(geometry g: ConvGeometry, rank r: Int, batch: Int, perSample: Bool) -> Bool {
        let k2 = g.kernel * g.kernel, P = g.height * g.width
        let kernels = (perSample ? batch : 1) * g.outChannels * g.inChannels * k2 * r
        let combined = kernels + batch * g.outChannels * r * k2 * g.outPositions
        let rebuild = batch * (g.inChannels * r * P + g.outChannels * g.inChannels * k2 * g.outPositions)
        return combined <= rebuild
    }

    /// `training` passes update the warm-start basis; evaluation passes only read it. `bias`
    /// is the layer's bias (which the untrusted side adds); the output check needs it. `into`
    /// is where the caller wants Y (not `x`); an executor may keep Y in a buffer of its own
    /// instead, so use the tensor returned. `overwritingInput`: nothing reads `x` once this
    /// pass is done, so R may take its place when `residualsLeave`.
    ///
    /// Micro-batches (docs/DESIGN.md §4.3): each one's residual leaves as soon as it is
    /// computed, so the untrusted side convolves it while the next one is decomposed, and each
    /// one's merge waits for its own result only.
    package func forward(_ x: Tensor, batch: Int, weight: Tensor, bias: Tensor? = nil, training: Bool = true,
                         into output: Tensor? = nil, overwritingInput: Bool = false) -> Tensor {
        precondition(checker == nil || (bias != nil) == info.hasBias, "layer \(info.layer): the output check needs the bias")
        let g = geometry, rmax = min(settings.maxRank, g.inChannels)
        let R = residualBuffer(x, output: output, overwritingInput: overwritingInput); residual = R
        let U = Tensor.reuse(ut, shape: [perSample ? batch : 1, rmax, g.inChannels]); ut = U
        let V = Tensor.reuse(v, shape: [batch, rmax, g.height, g.width]); v = V
        let cuts = microbatches(batch)

        // 1. The light SVD, per sample or for the whole batch, and the hand-over of R.
        let rank = decompose(x, batch: batch, cuts: cuts, training: training, U: U, V: V, R: R, output: output)
        // 2. The output check's probes, right after the hand-over, while R may still be in cache.
        checker?.prepareForward(residual: R.data, batch: batch, weight: weight.data, bias: bias?.data, training: training,
                                scratch: scratch, progress: { executor.progress() })
        // 3. The low-rank share Y_T = conv(U V, W), in the cheaper order, micro-batch by
        // micro-batch; 4. each merged with Y_U as soon as it arrives. With the check, which
        // covers the whole batch at once, the merge waits for every micro-batch's Y_U.
        let yT = arena.tensor(shape: [batch * g.outputSize], avoiding: [x, R, output]).data
        let low = LowRankForward(self, rank: rank, batch: batch, weight: weight, U: U, V: V)
        var merged: Tensor?
        for cut in cuts {
            low.compute(cut, into: yT)
            if checker == nil { merged = merge(cut, lowShare: yT, chunk: low.chunk, batch: batch, weight: weight, bias: bias, residual: R) }
        }
        if checker != nil {
            for cut in cuts.dropLast() { _ = executor.finishForward(layer: info.layer, samples: cut) }
            merged = merge(cuts.last!, lowShare: yT, chunk: low.chunk, batch: batch, weight: weight, bias: bias, residual: R)
        }
        return merged!
    }

    /// Phase 1 of `forward`: U, V and R = X - U V of every sample, each micro-batch's R handed to
    /// the executor as soon as it is computed. Sets `lastRank`, `lastResidualEnergy` and (for
    /// training passes of the batch basis) `warmBasis`; returns the rank.
    private func decompose(_ x: Tensor, batch: Int, cuts: [Range<Int>], training: Bool, U: Tensor, V: Tensor, R: Tensor,
                           output: Tensor?) -> Int {
        let g = geometry, C = g.inChannels, P = g.height * g.width, rmax = min(settings.maxRank, C)
        let work = scratch.buffer(2, count: C)
        var rank = 0, residualEnergy = 0.0, totalEnergy = 0.0
        if !perSample {
            // The batch basis (docs/DESIGN.md §2): estimate U on a few samples, warm-started from the
            // last step's U, orthonormalise it, then project every sample with two GEMMs (the
            // estimate's residual is dropped: the projection computes R).
            if let warm = warmBasis, settings.tau == nil, svd.rowsAreNonZero(warm.data, rows: rmax) {
                // A full warm basis and a fixed rank: subspace iteration from it (GEMMs, V as room).
                U.copy(from: warm)
                rank = svd.refine(x: x.data, blocks: min(batch, SplitConvolution.refinedSamples), ut: U.data, rows: rmax, projections: V.data,
                                  product: scratch.buffer(3, count: rmax * C))
            } else {
                let estimated = min(batch, SplitConvolution.basisSamples)
                let estimate = svd.decompose(x: x.data, blocks: estimated, maxRank: rmax, tau: settings.tau, warmU: warmBasis?.data,
                                             ut: U.data, v: V.data, residual: scratch.buffer(4, count: estimated * C * P),
                                             scratch: work)
                rank = svd.orthonormalize(U.data, rows: estimate.rank)
            }
            if training {
                let w = warmBasis ?? Tensor(shape: [rmax, C])
                w.copy(from: U)
                warmBasis = w
            }
        }
        for cut in cuts {
            if perSample {
                for s in cut {
                    let r = svd.decompose(x: x.data + s * C * P, blocks: 1, maxRank: rmax, tau: settings.tau, warmU: nil,
                                          ut: U.data + s * rmax * C, v: V.data + s * rmax * P, residual: R.data + s * C * P,
                                          scratch: work)
                    rank = max(rank, r.rank)
                    residualEnergy += r.residualEnergy
                    totalEnergy += r.totalEnergy
                }
            } else {
                let e = svd.project(x: x.data + cut.lowerBound * C * P, blocks: cut.count, ut: U.data, rank: rank,
                                    v: V.data + cut.lowerBound * rank * P, residual: R.data + cut.lowerBound * C * P,
                                    sample: R === x ? scratch.buffer(4, count: C * P) : nil)
                residualEnergy += e.residualEnergy
                totalEnergy += e.totalEnergy
            }
            // The residual goes to the untrusted side; the low-rank part stays here.
            executor.startForward(Residual(layer: info.layer, tensor: R, batch: batch, samples: cut, output: output, training: training))
            executor.progress()
        }
        if perSample {
            compact(U, rows: rmax, to: rank, rowSize: C, count: batch)
            compact(V, rows: rmax, to: rank, rowSize: P, count: batch)
        }
        lastRank = rank
        lastResidualEnergy = totalEnergy > 0 ? residualEnergy / totalEnergy : 0
        return rank
    }

    /// Phase 3 of `forward`: Y_T = conv(U V, W) of one micro-batch at a time, by combined
    /// kernels W~ = W U and a convolution on V's r channels, or (when r is large against the
    /// map) by U V rebuilt and convolved in full. Sets the layer's `lastRebuilt`.
    private struct LowRankForward {
        let layer: SplitConvolution, rank: Int, weight: Tensor, U: Tensor, V: Tensor
        /// U V when it is rebuilt; nil with combined kernels (or rank 0).
        let rebuiltInput: Tensor?
        /// Y_T's layout: samples in chunks of `chunk`, each chunk [Cout][samples][Po] as the
        /// GEMM leaves it (NCHW when it is 1), so no pass reorders it before the merge reads
        /// it. The checker merges NCHW shares. Chunks never straddle micro-batches (both align to 8).
        let chunk: Int
        /// W~ ([Cout][r][k*k]) and W as [C][Cout][k*k]: one W~ buffer serves every sample, each
        /// sample's kernels built right before its convolution (storing them all would cost
        /// batch * Cout * r * k^2 floats).
        let combined: UnsafeMutablePointer<Float>, reordered: UnsafeMutablePointer<Float>

        init(_ layer: SplitConvolution, rank: Int, batch: Int, weight: Tensor, U: Tensor, V: Tensor) {
            self.layer = layer; self.rank = rank; self.weight = weight; self.U = U; self.V = V
            let g = layer.geometry, k2 = g.kernel * g.kernel, Cout = g.outChannels
            let rebuilt = !SplitConvolution.combinedCheaper(geometry: g, rank: rank, batch: batch, perSample: layer.perSample)
            layer.lastRebuilt = rebuilt
            chunk = rank == 0 || rebuilt || layer.perSample || layer.checker != nil ? 1 : chunkSamples(g.with(inChannels: rank))
            rebuiltInput = rebuilt && rank > 0 ? layer.rebuild(U, V, rank: rank, batch: batch) : nil
            let useCombined = rank > 0 && !rebuilt
            combined = layer.scratch.buffer(5, count: useCombined ? Cout * rank * k2 : 0)
            reordered = layer.scratch.buffer(6, count: useCombined ? g.inChannels * Cout * k2 : 0)
            if useCombined {
                swapLeadingAxes(weight.data, a: Cout, b: g.inChannels, inner: k2, into: reordered)
                if !layer.perSample { combineKernels(basis: 0) }
            }
        }

        /// W~'[j][(o,t)] = sum_c U[c][j] W[o][c][t], then reordered to W~[o][j][t].
        func combineKernels(basis: Int) {
            let g = layer.geometry, C = g.inChannels, Cout = g.outChannels, k2 = g.kernel * g.kernel
            let tmp = layer.scratch.buffer(3, count: rank * Cout * k2)
            BLAS.gemm(m: rank, n: Cout * k2, k: C, a: U.data + basis * rank * C, lda: C, b: reordered, ldb: Cout * k2,
                      c: tmp, ldc: Cout * k2)
            swapLeadingAxes(tmp, a: rank, b: Cout, inner: k2, into: combined)
        }

        func compute(_ cut: Range<Int>, into yT: UnsafeMutablePointer<Float>) {
            let g = layer.geometry, Cout = g.outChannels, P = g.height * g.width, low = g.with(inChannels: rank)
            let lowShare = yT + cut.lowerBound * g.outputSize
            if rank == 0 {
                lowShare.update(repeating: 0, count: cut.count * g.outputSize)
            } else if let L = rebuiltInput {
                conv2dForward(g, x: L.data + cut.lowerBound * g.inChannels * P, batch: cut.count, weight: weight.data, bias: nil,
                              y: lowShare, scratch: layer.scratch)
            } else {
                for first in stride(from: cut.lowerBound, to: cut.upperBound, by: chunk) {
                    let n = min(chunk, cut.upperBound - first)
                    if layer.perSample { combineKernels(basis: first) }
                    // conv(V, W~) by im2col and one GEMM, as conv2dForward computes it per chunk.
                    let columns = n * g.outPositions, col = layer.scratch.buffer(0, count: low.patchSize * columns)
                    im2col(low, x: V.data + first * rank * P, samples: n, col: col)
                    BLAS.gemm(m: Cout, n: columns, k: low.patchSize, a: combined, lda: low.patchSize, b: col, ldb: columns,
                              c: yT + first * g.outputSize, ldc: columns)
                    if layer.perSample { layer.executor.progress() }
                }
            }
        }
    }

    /// Phase 4 of `forward`: Y = Y_U + Y_T in place for the samples `cut` (the untrusted side
    /// added the bias), and the ReLU after this layer when it is fused here. The result lives
    /// in the executor's per-layer buffer until this layer's next forward pass. The check
    /// merges as it goes (Y_U is read once); a recompute merges again.
    private func merge(_ cut: Range<Int>, lowShare yT: UnsafeMutablePointer<Float>, chunk: Int, batch: Int, weight: Tensor,
                       bias: Tensor?, residual R: Tensor) -> Tensor {
        let y = executor.finishForward(layer: info.layer, samples: cut)
        if let checker {
            resolve(checker.checkOutputShare(y.data, adding: yT)) {
                conv2dForward(geometry, x: R.data, batch: batch, weight: weight.data, bias: bias?.data, y: y.data, scratch: scratch)
                accumulate(yT, into: y.data, count: y.count)
            }
            if fusedReLU { reluForward(y.data, y.data, count: y.count) }
        } else {
            merge(yT, chunk: chunk, into: y.data, samples: cut)
        }
        return y
    }

    /// The micro-batches of a batch (`settings.microbatches`, cut at multiples of
    /// `convChunkAlignment`, so that every sample's convolutions are those of the whole
    /// batch). The config's feature rules keep micro-batches away from executors that take
    /// whole batches; a layer never falls back to whole batches silently.
    private func microbatches(_ batch: Int) -> [Range<Int>] {
        let parts = settings.microbatches
        precondition(parts == 1 || executor.pipelines,
                     "layer \(info.layer): \(parts) micro-batches with an executor that takes whole batches")
        return (0..<parts).map { shardRange(batch, shards: parts, index: $0) }.filter { !$0.isEmpty }
    }

    /// Y += Y_T for the samples `samples`, then max(Y, 0) with `fusedReLU`; Y_T in chunks of
    /// `chunk` samples, each [Cout][samples][Po] (no chunk straddles `samples`' ends).
    private func merge(_ low: UnsafePointer<Float>, chunk: Int, into y: UnsafeMutablePointer<Float>, samples: Range<Int>) {
        let Cout = geometry.outChannels, Po = geometry.outPositions
        parallelRanges(samples.count * Cout, grain: 16) { rows in
            for r in rows {
                let row = samples.lowerBound * Cout + r, s = row / Cout, o = row % Cout
                let first = s - s % chunk, n = min(chunk, samples.upperBound - first)
                let from = low + first * Cout * Po + (o * n + s - first) * Po
                if fusedReLU { addReLU(from, into: y + row * Po, count: Po) } else { accumulate(from, into: y + row * Po, count: Po) }
            }
        }
    }

    /// `weight` is needed only to check dX; without a checker it may be nil. `into` is where
    /// the caller wants dX (not `dy`); as in `forward`, use the tensor returned.
    package func backward(_ dy: Tensor, batch: Int, weight: Tensor? = nil, weightGrad: Tensor, biasGrad: Tensor?,
                          into inputGrad: Tensor? = nil) -> Tensor {
        let g = geometry, C = g.inChannels, P = g.height * g.width, Cout = g.outChannels, k2 = g.kernel * g.kernel
        let rank = lastRank, cuts = microbatches(batch)
        for cut in cuts {
            executor.startBackward(OutputGradient(layer: info.layer, tensor: dy, batch: batch, samples: cut, inputGrad: inputGrad))
        }
        if let checker {
            guard let weight else { preconditionFailure("layer \(info.layer): the input-gradient check needs the weight") }
            let kept = settings.onFailure == .recompute ? keepSharePass(dy, batch: batch) : nil
            checker.prepareBackward(outputGrad: dy.data, batch: batch, weight: weight.data, biasGrad: biasGrad?.data,
                                    copy: kept?.data, scratch: scratch, progress: { executor.progress() })
        } else if let biasGrad {
            accumulateChannelSums(dy.data, batch: batch, channels: Cout, positions: g.outPositions, into: biasGrad.data)
        }
        if rank > 0 {
            if lastRebuilt {
                conv2dBackward(g, x: rebuilt!.data, batch: batch, weight: weightGrad.data, dy: dy.data,
                               dWeight: weightGrad.data, dBias: nil, dx: nil, scratch: scratch)
            } else {
                // G = corr(V, dY) per basis, [Cout][r][t]; dW[o][c][t] += sum_j U[c][j] G[o][j][t].
                // Bases go in chunks: each chunk's G's and U's are stacked, Gp[(basis, j)][(o, t)]
                // and U[(basis, j)][c], so that one GEMM sums them while memory stays bounded.
                let bases = perSample ? batch : 1
                let chunk = min(bases, SplitConvolution.kernelChunk)
                let low = g.with(inChannels: rank)
                // G is [chunk][Cout][r][k*k]; dWp is [C][Cout][k*k].
                let G = scratch.buffer(5, count: chunk * Cout * rank * k2), dWp = scratch.buffer(6, count: C * Cout * k2)
                var first = 0
                while first < bases {
                    let n = min(chunk, bases - first)
                    G.update(repeating: 0, count: chunk * Cout * rank * k2)
                    if perSample {
                        for i in 0..<n {
                            let s = first + i
                            conv2dBackward(low, x: v!.data + s * rank * P, batch: 1, weight: G, dy: dy.data + s * g.outputSize,
                                           dWeight: G + i * Cout * rank * k2, dBias: nil, dx: nil, scratch: scratch)
                            executor.progress()
                        }
                    } else {
                        conv2dBackward(low, x: v!.data, batch: batch, weight: G, dy: dy.data,
                                       dWeight: G, dBias: nil, dx: nil, scratch: scratch)
                    }
                    let Gp = scratch.buffer(3, count: n * rank * Cout * k2)
                    for i in 0..<n {
                        swapLeadingAxes(G + i * Cout * rank * k2, a: Cout, b: rank, inner: k2, into: Gp + i * rank * Cout * k2)
                    }
                    BLAS.gemm(transA: true, m: C, n: Cout * k2, k: n * rank, a: ut!.data + first * rank * C, lda: C,
                              b: Gp, ldb: Cout * k2, beta: first == 0 ? 0 : 1, c: dWp, ldc: Cout * k2)
                    first += n
                }
                swapLeadingAxes(dWp, a: C, b: Cout, inner: k2, into: weightGrad.data, accumulate: true)
            }
        }
        var dx: Tensor!
        for cut in cuts { dx = executor.finishBackward(layer: info.layer, samples: cut) }
        if let checker, let weight {
            resolve(checker.checkInputGradient(dx.data)) {
                conv2dBackward(g, x: dy.data, batch: batch, weight: weight.data, dy: dy.data, dWeight: nil, dBias: nil,
                               dx: dx.data, scratch: scratch)
            }
        }
        return dx
    }

    /// Values per sample that an integrity failure's `index` counts in (it is
    /// sample * positions + position for the output share and the input gradient).
    package func positions(of check: IntegrityCheck) -> Int {
        switch check {
        case .outputShare: return geometry.outPositions
        case .inputGradient: return geometry.height * geometry.width
        case .gradientShare: return max(1, geometry.outChannels)
        }
    }

    /// Checks this layer's weight-gradient share G ([Cout, C, k, k], summed over the step's
    /// backward passes) before it enters any sum; under `.recompute` a failed share is
    /// replaced in place by corr(R, dY) computed here. Returns the failure, if any.
    @discardableResult
    package func verifyGradientShare(_ share: UnsafeMutablePointer<Float>) -> IntegrityFailure? {
        let failure = verifyGradientShare(share, samples: 0..<(checker?.shareSamples ?? 0))
        finishGradientShareChecks()
        return failure
    }

    /// Checks the weight-gradient share of samples `samples` only ([Cout, C, k, k], summed
    /// over the step's backward passes): the share of one untrusted rank when the batch is
    /// sharded across several, each returning the share of its own samples. Check every rank's
    /// share this way before any of them enters a sum, then call `finishGradientShareChecks`;
    /// the ranges must cover the batch without overlap (an idle rank's is empty, and its share
    /// must be zero). Under `.recompute` a failed share is replaced in place by corr(R, dY)
    /// over its samples, computed here. Returns the failure, if any.
    @discardableResult
    package func verifyGradientShare(_ share: UnsafeMutablePointer<Float>, samples: Range<Int>) -> IntegrityFailure? {
        guard let checker else { preconditionFailure("layer \(info.layer): verifyGradientShare without settings.verify") }
        return resolve(checker.checkGradientShare(share, samples: samples)) {
            let g = geometry
            share.update(repeating: 0, count: g.weightCount)
            for pass in sharePasses.prefix(sharePassCount) {
                let n = min(samples.upperBound, pass.batch) - samples.lowerBound
                if n <= 0 { continue }
                conv2dBackward(g, x: pass.residual.data + samples.lowerBound * g.inputSize, batch: n, weight: share,
                               dy: pass.outputGrad.data + samples.lowerBound * g.outputSize, dWeight: share, dBias: nil,
                               dx: nil, scratch: scratch)
            }
        }
    }

    /// Ends the step's share checks once every sample's share was checked (a precondition):
    /// the secret filter retires, and the next training pass draws a new one.
    package func finishGradientShareChecks() {
        guard let checker else { preconditionFailure("layer \(info.layer): finishGradientShareChecks without settings.verify") }
        checker.finishShareChecks()
        sharePassCount = 0
    }

    /// Keeps this pass's R (by reference) and returns the buffer for its copy of dY (reusing
    /// the buffers of earlier steps), which the checker fills as it reads dY.
    private func keepSharePass(_ dy: Tensor, batch: Int) -> Tensor {
        if sharePassCount == sharePasses.count {
            sharePasses.append((residual!, Tensor(shape: dy.shape), batch))
        }
        sharePasses[sharePassCount].residual = residual!
        sharePasses[sharePassCount].batch = batch
        let copy = Tensor.reuse(sharePasses[sharePassCount].outputGrad, shape: dy.shape)
        sharePassCount += 1
        return copy
    }

    /// A buffer for this pass's R: X itself or one of the arena's when R leaves and X may be
    /// overwritten, else one that no pending share pass keeps for a recompute (with one pass
    /// per share check, always the same one).
    private func residualBuffer(_ x: Tensor, output: Tensor?, overwritingInput: Bool) -> Tensor {
        let shape = x.shape
        if residualsLeave && (settings.onFailure != .recompute || checker == nil) {
            return overwritingInput ? x : arena.tensor(shape: shape, avoiding: [x, output])
        }
        let kept = sharePasses.prefix(sharePassCount)
        let free = residualBuffers.first { buffer in !kept.contains { $0.residual === buffer } }
        let buffer = free ?? Tensor(shape: shape)
        if free == nil { residualBuffers.append(buffer) }
        return Tensor.reuse(buffer, shape: shape)
    }

    /// Counts and reports a failed check; under `.recompute`, replaces the result first.
    @discardableResult
    private func resolve(_ failure: IntegrityFailure?, recompute: () -> Void) -> IntegrityFailure? {
        if failure != nil { integrityFailures += 1 }
        return settle(failure, policy: settings.onFailure, handler: failureHandler, recompute: recompute)
    }

    /// The low-rank part U V and the residual R of sample `s` in the last forward pass,
    /// each C*H*W values (for pictures of what each side sees; X = L + R).
    package func lastDecomposition(sample s: Int) -> (lowRank: [Float], residual: [Float]) {
        let g = geometry, C = g.inChannels, P = g.height * g.width, rank = lastRank
        var low = [Float](repeating: 0, count: C * P)
        if rank > 0 {
            let u = ut!.data + (perSample ? s : 0) * rank * C
            low.withUnsafeMutableBufferPointer {
                BLAS.gemm(transA: true, m: C, n: P, k: rank, a: u, lda: C, b: v!.data + s * rank * P, ldb: P,
                          c: $0.baseAddress!, ldc: P)
            }
        }
        return (low, Array(UnsafeBufferPointer(start: residual!.data + s * C * P, count: C * P)))
    }

    /// L = U V per sample, [batch, C, H, W] (the rebuild order).
    private func rebuild(_ U: Tensor, _ V: Tensor, rank: Int, batch: Int) -> Tensor {
        let g = geometry, C = g.inChannels, P = g.height * g.width
        let L = Tensor.reuse(rebuilt, shape: [batch, C, g.height, g.width]); rebuilt = L
        for s in 0..<batch {
            let u = U.data + (perSample ? s : 0) * rank * C
            BLAS.gemm(transA: true, m: C, n: P, k: rank, a: u, lda: C, b: V.data + s * rank * P, ldb: P,
                      c: L.data + s * C * P, ldc: P)
        }
        return L
    }

    /// Moves `count` blocks of `rows` x `rowSize` values to blocks of `to` rows, in place.
    private func compact(_ t: Tensor, rows: Int, to: Int, rowSize: Int, count: Int) {
        guard to < rows else { return }
        for i in 1..<max(count, 1) {
            memmove(t.data + i * to * rowSize, t.data + i * rows * rowSize, to * rowSize * MemoryLayout<Float>.size)
        }
    }
}
