import AsymKernels
import AsymSplit
import AsymTestSupport
import XCTest

final class SplitTests: XCTestCase {
    /// Split forward and backward equal the unsplit convolution, over random shapes, strides,
    /// paddings, ranks, both bases, with random and with low-rank inputs.
    func testSplitConvolutionEqualsUnsplit() throws {
        setThreads(1)
        var rng = RNG(seed: 11)
        var worst: Float = 0
        for trial in 0..<24 {
            let C = 2 + rng.below(10), H = 3 + rng.below(8), W = 3 + rng.below(8)
            let k = [1, 3, 3, 5][rng.below(4)], stride = 1 + rng.below(2), pad = rng.below(k / 2 + 2)
            guard H + 2 * pad >= k, W + 2 * pad >= k else { continue }
            let g = ConvGeometry(inChannels: C, height: H, width: W, outChannels: 1 + rng.below(9),
                                 kernel: k, stride: stride, padding: pad)
            let batch = 1 + rng.below(4)
            let basis: SplitSettings.Basis = trial % 2 == 0 ? .sample : .batch
            let settings = SplitSettings(maxRank: 1 + rng.below(C), tau: trial % 3 == 0 ? 0.2 : nil,
                                         iterations: 1 + rng.below(3), basis: basis)
            let x = trial % 4 < 2 ? randomTensor([batch, C, H, W], &rng)
                : lowRankMaps(batch: batch, channels: C, positions: H * W, rank: 2, noise: 0.01, &rng)
            x.reshape([batch, C, H, W])
            let w = randomTensor([g.outChannels, C, k, k], &rng), b = randomTensor([g.outChannels], &rng)
            let dy = randomTensor([batch, g.outChannels, g.outHeight, g.outWidth], &rng)

            // Reference: the plain kernels.
            let scratch = Scratch()
            let yRef = Tensor(shape: dy.shape), dxRef = Tensor(shape: x.shape)
            let dwRef = Tensor(shape: w.shape), dbRef = Tensor(shape: b.shape)
            conv2dForward(g, x: x.data, batch: batch, weight: w.data, bias: b.data, y: yRef.data, scratch: scratch)
            conv2dBackward(g, x: x.data, batch: batch, weight: w.data, dy: dy.data, dWeight: dwRef.data,
                           dBias: dbRef.data, dx: dxRef.data, scratch: scratch)

            // Split: trusted half here, untrusted half in the local executor.
            let executor = LocalUntrusted()
            let info = SplitLayerInfo(layer: 0, geometry: g, hasBias: true)
            executor.register(info, weight: w, bias: b)
            let split = SplitConvolution(info: info, settings: settings, executor: executor)
            let y = split.forward(x, batch: batch, weight: w)
            let dw = Tensor(shape: w.shape), db = Tensor(shape: b.shape)
            let dx = split.backward(dy, batch: batch, weightGrad: dw, biasGrad: db)
            try executor.addGradientShares(into: [0: dw])

            let errors = [relativeDifference(y, yRef), relativeDifference(dx, dxRef),
                          relativeDifference(dw, dwRef), relativeDifference(db, dbRef)]
            worst = max(worst, errors.max()!)
            XCTAssertLessThan(errors.max()!, 1e-4, "trial \(trial) \(g) \(settings) rank \(split.lastRank) rebuilt \(split.lastRebuilt): \(errors)")
        }
        print("split vs unsplit: max relative difference \(worst) over 24 random layers")
    }

    /// The energy policy stops at the first rank whose residual energy is within tau.
    /// An untrusted worker fed micro-batches: each fills its samples of the layer's output and
    /// input gradient, and when the first pass grows those buffers, the earlier samples stay,
    /// in the new buffer and in the old one (an MPI reply may still be sending from it).
    /// Micro-batches are cut at multiples of `convChunkAlignment`, so the results equal the
    /// whole batch's bit for bit.
    func testWorkerMicroBatchesKeepEarlierSamples() {
        setThreads(1)
        var rng = RNG(seed: 5)
        let g = ConvGeometry(inChannels: 3, height: 6, width: 6, outChannels: 4, kernel: 3, stride: 1, padding: 1)
        let cut = convChunkAlignment, batch = 2 * cut
        let w = randomTensor([4, 3, 3, 3], &rng), b = randomTensor([4], &rng)
        let r = randomTensor([batch, 3, 6, 6], &rng), dy = randomTensor([batch, 4, 6, 6], &rng)
        let whole = UntrustedWorker(), parts = UntrustedWorker()
        for worker in [whole, parts] { worker.register(SplitLayerInfo(layer: 0, geometry: g, hasBias: true), weight: w, bias: b) }
        let y = whole.forward(layer: 0, residual: r, samples: 0..<batch, batch: batch).array
        let dx = whole.backward(layer: 0, outputGrad: dy, samples: 0..<batch, batch: batch).array

        let first = parts.forward(layer: 0, residual: r, samples: 0..<cut, batch: cut), sent = first.array
        let both = parts.forward(layer: 0, residual: r, samples: cut..<batch, batch: batch)
        XCTAssertEqual(Array(first.array.prefix(cut * g.outputSize)), sent, "the first micro-batch's output changed under its reply")
        XCTAssertEqual(both.array, y, "micro-batched output differs from the whole batch's")
        let firstGrad = parts.backward(layer: 0, outputGrad: dy, samples: 0..<cut, batch: cut), sentGrad = firstGrad.array
        let bothGrad = parts.backward(layer: 0, outputGrad: dy, samples: cut..<batch, batch: batch)
        XCTAssertEqual(Array(firstGrad.array.prefix(cut * g.inputSize)), sentGrad, "the first micro-batch's dX changed under its reply")
        XCTAssertEqual(bothGrad.array, dx, "micro-batched dX differs from the whole batch's")
    }

    /// The batch basis between steps: subspace iteration from a warm basis (a perturbed copy of
    /// the true one) leaves Q orthonormal and as little residual energy as the greedy light
    /// SVD, on maps that share one channel subspace.
    func testRefiningAWarmBasisMatchesTheGreedySVD() {
        setThreads(1)
        var rng = RNG(seed: 21)
        let (B, C, P, r) = (8, 48, 100, 5)
        let basis = randomTensor([C, r], &rng), x = Tensor(shape: [B, C, P])
        for b in 0..<B {
            let v = randomTensor([r, P], &rng)
            BLAS.gemm(m: C, n: P, k: r, a: basis.data, lda: r, b: v.data, ldb: P, c: x.data + b * C * P, ldc: P)
        }
        for i in 0..<x.count { x[i] += 0.05 * rng.normal() }
        let svd = LightSVD(channels: C, positions: P, iterations: 2)
        let ut = Tensor(shape: [r, C]), v = Tensor(shape: [B, r, P]), res = Tensor(shape: [B, C, P]), work = Tensor(shape: [C])
        func residualRatio(_ q: Tensor, rank: Int) -> Double {
            let e = svd.project(x: x.data, blocks: B, ut: q.data, rank: rank, v: v.data, residual: res.data)
            return e.residualEnergy / e.totalEnergy
        }
        let greedy = svd.decompose(x: x.data, blocks: B, maxRank: r, tau: nil, warmU: nil, ut: ut.data, v: v.data,
                                   residual: res.data, scratch: work.data)
        let greedyRatio = residualRatio(ut, rank: svd.orthonormalize(ut.data, rows: greedy.rank))

        let warm = Tensor(shape: [r, C])
        for j in 0..<r { for c in 0..<C { warm[j * C + c] = basis[c * r + j] + 0.5 * rng.normal() } }
        let product = Tensor(shape: [r, C])
        let rank = withExtendedLifetime(product) {
            svd.refine(x: x.data, blocks: B, ut: warm.data, rows: r, projections: v.data, product: product.data)
        }
        XCTAssertEqual(rank, r)
        var worst: Float = 0
        for i in 0..<r {
            for j in 0..<r {
                let dot = BLAS.dot(C, warm.data + i * C, warm.data + j * C)
                worst = max(worst, abs(dot - (i == j ? 1 : 0)))
            }
        }
        XCTAssertLessThan(worst, 1e-5, "Q Q^T differs from I")
        let refinedRatio = residualRatio(warm, rank: rank)
        print("residual energy: greedy \(greedyRatio), refined warm basis \(refinedRatio); |Q Q^T - I| \(worst)")
        XCTAssertLessThan(refinedRatio, greedyRatio * 1.001 + 1e-6)
    }

    func testEnergyPolicyMeetsItsThreshold() {
        var rng = RNG(seed: 12)
        let (C, P) = (16, 49)
        let x = lowRankMaps(batch: 1, channels: C, positions: P, rank: 4, noise: 0.1, &rng)
        let svd = LightSVD(channels: C, positions: P, iterations: 2)
        let ut = Tensor(shape: [C, C]), v = Tensor(shape: [C, P]), r = Tensor(shape: [C, P]), work = Tensor(shape: [C])
        for tau in [0.5, 0.1, 0.02] {
            let result = svd.decompose(x: x.data, blocks: 1, maxRank: C, tau: tau, warmU: nil, ut: ut.data, v: v.data,
                                       residual: r.data, scratch: work.data)
            let ratio = result.residualEnergy / result.totalEnergy
            XCTAssertLessThanOrEqual(ratio, tau, "tau \(tau)")
            // One component fewer would not have met it.
            let fewer = svd.decompose(x: x.data, blocks: 1, maxRank: result.rank - 1, tau: nil, warmU: nil, ut: ut.data,
                                      v: v.data, residual: r.data, scratch: work.data)
            XCTAssertGreaterThan(fewer.residualEnergy / fewer.totalEnergy, tau, "tau \(tau) rank \(result.rank)")
            print("energy policy tau \(tau): rank \(result.rank), residual energy \(ratio)")
        }
    }

    /// X = U V + R holds to float precision, and two power steps leave no more residual energy
    /// than one (summed over a batch of realistic maps).
    func testDecompositionIsExactAndMoreIterationsHelp() {
        var rng = RNG(seed: 13)
        let (B, C, P, r) = (8, 32, 64, 4)
        let x = lowRankMaps(batch: B, channels: C, positions: P, rank: 8, noise: 0.3, &rng)
        var energies: [Int: Double] = [:]
        for q in [1, 2] {
            let svd = LightSVD(channels: C, positions: P, iterations: q)
            var residual = 0.0, total = 0.0
            for b in 0..<B {
                let ut = Tensor(shape: [r, C]), v = Tensor(shape: [r, P]), res = Tensor(shape: [C, P]), work = Tensor(shape: [C])
                let xb = x.data + b * C * P
                let out = svd.decompose(x: xb, blocks: 1, maxRank: r, tau: nil, warmU: nil, ut: ut.data, v: v.data,
                                        residual: res.data, scratch: work.data)
                residual += out.residualEnergy; total += out.totalEnergy
                // U V + R == X
                let l = Tensor(shape: [C, P])
                BLAS.gemm(transA: true, m: C, n: P, k: r, a: ut.data, lda: C, b: v.data, ldb: P, c: l.data, ldc: P)
                var err: Float = 0
                for i in 0..<(C * P) { err = max(err, abs(l[i] + res[i] - xb[i])) }
                XCTAssertLessThan(err, 1e-4)
            }
            energies[q] = residual / total
        }
        print("residual energy at rank \(r): q=1 \(energies[1]!), q=2 \(energies[2]!)")
        XCTAssertLessThanOrEqual(energies[2]!, energies[1]!)
    }
}
