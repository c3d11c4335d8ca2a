import AsymKernels

/// FLOPs and bytes of one split convolution per training step, by side (docs/DESIGN.md §2, "Cost").
///
/// The model counts multiply-adds as two FLOPs and follows the code path the trusted side
/// takes: light SVD, then combined kernels or the rebuild of U V, whichever is cheaper.
package struct SplitCost {
    package var trustedForward = 0.0, untrustedForward = 0.0
    package var trustedBackward = 0.0, untrustedBackward = 0.0
    /// The convolution whole, as tee-only computes it (the untrusted side's work unmasked).
    package var wholeForward = 0.0, wholeBackward = 0.0
    /// Residuals and output gradients sent; output shares and input gradients received.
    package var bytesToUntrusted = 0.0, bytesFromUntrusted = 0.0
    /// The integrity checks' trusted work (`asym.verify`, docs/DESIGN.md §8): a training
    /// step's forward pass, an inference pass, and the backward pass (dX and the share).
    package var verifyForward = 0.0, verifyInference = 0.0, verifyBackward = 0.0

    /// Masking (docs/DESIGN.md §9): each group of K samples crosses as `rows` combinations per
    /// sample (3 with spread, (K + 2) / K without) mixing `mixed` sources per combination
    /// (K data and K noise vectors with spread), and `members` untrusted ranks return a share.
    package struct Masking {
        package let rows: Double, mixed: Double, members: Double, spread: Bool
        package init(groupSize K: Int, spread: Bool, members: Int) {
            rows = spread ? 3 : Double(K + 2) / Double(K)
            mixed = spread ? Double(2 * K) : Double(K + 1)
            self.members = Double(members); self.spread = spread
        }
    }
    /// The masking layer's own trusted work: the encode and decode products, and the noise
    /// values it draws (counted as FLOPs, about what a Gaussian from the AES keystream costs).
    package var codingForward = 0.0, codingBackward = 0.0

    package init(geometry g: ConvGeometry, rank r: Int, iterations q: Int, basis: SplitSettings.Basis, batch B: Int,
                 masking: Masking? = nil) {
        let C = Double(g.inChannels), Cout = Double(g.outChannels), k2 = Double(g.kernel * g.kernel)
        let P = Double(g.height * g.width), Po = Double(g.outPositions), rank = Double(r), b = Double(B)
        let full = 2 * Cout * C * k2 * Po * b
        let bases = basis == .sample ? b : 1
        // Light SVD per component: the start channel, (2q + 1) matrix-vector products, the
        // deflation and the energy check, each a pass of 2*C*P. The batch basis instead refines
        // the last step's U on a few samples (q rounds of two GEMMs, `LightSVD.refine`), then
        // projects all: V = Q X, R = X - Q^T V.
        let refined = min(b, Double(SplitConvolution.refinedSamples))
        let svd = basis == .sample ? rank * (4 * Double(q) + 8) * C * P * b
            : 4 * Double(q) * rank * C * P * refined + 4 * rank * C * P * b + 4 * C * P * b
        let kernels = 2 * Cout * C * k2 * rank * bases
        let combined = kernels + 2 * Cout * rank * k2 * Po * b
        let rebuild = 2 * C * rank * P * b + full
        let split = SplitConvolution.combinedCheaper(geometry: g, rank: r, batch: B, perSample: basis == .sample)
        trustedForward = svd + (split ? combined : rebuild) + Cout * Po * b  // + the merge
        wholeForward = full
        wholeBackward = 2 * full  // dX and dW
        untrustedForward = wholeForward
        // Backward: corr(V, dY) and the GEMM with U (or corr(U V, dY) in full), and db.
        trustedBackward = (split ? combined : full) + Cout * Po * b
        untrustedBackward = wholeBackward  // dX and the share corr(R, dY)
        bytesToUntrusted = 4 * b * (C * P + Cout * Po)
        bytesFromUntrusted = 4 * b * (Cout * Po + C * P)

        // The checks of IntegrityChecker, per pass: the secret combination of W (a GEMV);
        // per sample, the patch norms (squares of every value, then a box sum over the taps),
        // the probe (a GEMM of the combined taps with the sample, then a shifted sum over the
        // taps) and the comparison (the secret combination of the returned rows, its sum and
        // sum of squares). A training forward pass also convolves R with the filter z; the
        // backward pass adds the share's reference (a GEMV of dY with q per sample) and the
        // share's comparison (G z, sum and squares).
        let K = C * k2
        func forwardChecks(taps: Double) -> Double {
            2 * Cout * K + b * (2 * C * P + k2 * Po + 2 * taps * C * P + taps * Po + 4 * Cout * Po)
        }
        verifyForward = forwardChecks(taps: 2 * k2)
        verifyInference = forwardChecks(taps: k2)
        verifyBackward = 2 * Cout * K + b * (2 * Cout * Po + k2 * P + 2 * k2 * Cout * Po + k2 * P + 4 * C * P + 2 * Cout * Po)
            + 4 * Cout * K
        guard let m = masking else { return }
        // The untrusted side computes every combination; the checks cover every combination;
        // the combinations cross both ways, and the shares come back once per member (twice as
        // wide with spread) or once per combination.
        untrustedForward *= m.rows
        untrustedBackward *= m.rows
        verifyForward *= m.rows; verifyInference *= m.rows; verifyBackward *= m.rows
        bytesToUntrusted *= m.rows
        let shares = m.spread ? 2 * m.members : m.rows * b
        bytesFromUntrusted = bytesFromUntrusted * m.rows + 4 * shares * Cout * K
        // Encode: each combination a product over the mixed sources; noise: one Gaussian per
        // value of each noise vector (~10 FLOPs); decode: each sample a product over its
        // group's combinations. Forward R -> Y, backward dY -> dX.
        let noise = 10 * (m.mixed / 2)
        func coding(_ input: Double, _ output: Double) -> Double {
            b * (2 * m.rows * m.mixed * input + noise * input + 2 * m.rows * output)
        }
        codingForward = coding(C * P, Cout * Po)
        codingBackward = coding(Cout * Po, C * P)
        trustedForward += codingForward
        trustedBackward += codingBackward
    }
}
