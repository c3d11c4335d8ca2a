import AsymKernels

/// FLOPs and bytes of one split convolution per training step, by side (docs/DESIGN.md §2, "Cost").
///
/// The model counts multiply-adds as two FLOPs and follows the code path the trusted side
/// takes: light SVD, then combined kernels or the rebuild of U V, whichever is cheaper.
package struct SplitCost {
    package var trustedForward = 0.0, untrustedForward = 0.0
    package var trustedBackward = 0.0, untrustedBackward = 0.0
    /// Residuals and output gradients sent; output shares and input gradients received.
    package var bytesToUntrusted = 0.0, bytesFromUntrusted = 0.0

    package init(geometry g: ConvGeometry, rank r: Int, iterations q: Int, basis: SplitSettings.Basis, batch B: Int) {
        let C = Double(g.inChannels), Cout = Double(g.outChannels), k2 = Double(g.kernel * g.kernel)
        let P = Double(g.height * g.width), Po = Double(g.outPositions), rank = Double(r), b = Double(B)
        let full = 2 * Cout * C * k2 * Po * b
        let bases = basis == .sample ? b : 1
        // Light SVD per component: the start channel, (2q + 1) matrix-vector products, the
        // deflation and the energy check, each a pass of 2*C*P.
        // The batch basis runs it on a few samples, then projects all: V = Q X, R = X - Q^T V.
        let estimated = basis == .sample ? b : min(b, Double(SplitConvolution.basisSamples))
        let svd = rank * (4 * Double(q) + 8) * C * P * estimated + (basis == .sample ? 0 : 4 * rank * C * P * b + 4 * C * P * b)
        let kernels = 2 * Cout * C * k2 * rank * bases
        let combined = kernels + 2 * Cout * rank * k2 * Po * b
        let rebuild = 2 * C * rank * P * b + full
        let split = SplitConvolution.combinedCheaper(geometry: g, rank: r, batch: B, perSample: basis == .sample)
        trustedForward = svd + (split ? combined : rebuild) + Cout * Po * b  // + the merge
        untrustedForward = full
        // Backward: corr(V, dY) and the GEMM with U (or corr(U V, dY) in full), and db.
        trustedBackward = (split ? combined : full) + Cout * Po * b
        untrustedBackward = 2 * full  // dX and the share corr(R, dY)
        bytesToUntrusted = 4 * b * (C * P + Cout * Po)
        bytesFromUntrusted = 4 * b * (Cout * Po + C * P)
    }
}
