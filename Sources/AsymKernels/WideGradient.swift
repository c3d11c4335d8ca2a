/// The weight gradient corr(x, dY) of float inputs, accumulated in double.
///
/// Masked combinations carry noise many times the data (spread masking, AsymPrivacy), and
/// the noise terms of the weight gradient cancel only in the sum over a group's combinations,
/// which lie on different untrusted ranks. Each rank's share is then ~sigma^2 times the
/// gradient, and float accumulation would leave rounding of u * sigma^2 relative to it
/// (3.4e-5 after 5 steps at sigma = 30 on the smoke model, against 2e-6 in double). The
/// products of float inputs are exact in double, so the share comes out with the inputs'
/// own rounding only.
///
/// Accumulates into `dWeight` ([Cout, C*k*k], double); `x` is [batch, C, H, W], `dy`
/// [batch, Cout, Ho, Wo]. One GEMM per chunk of samples, as `conv2dBackward`.
package func conv2dWeightGradientWide(_ g: ConvGeometry, x: UnsafePointer<Float>, batch: Int, dy: UnsafePointer<Float>,
                                      into dWeight: UnsafeMutablePointer<Double>, scratch: Scratch) {
    let P = g.outPositions, K = g.patchSize, widest = min(chunkSamples(g), batch)
    let col = scratch.buffer(0, count: K * widest * P)
    // The double copies live in scratch slots 2 and 3 (two floats a double), kept from call to
    // call like the kernels' other buffers: no allocation per step.
    let colRoom = K * widest * P, dyRoom = g.outChannels * widest * P
    scratch.buffer(2, count: 2 * colRoom).withMemoryRebound(to: Double.self, capacity: colRoom) { wideCol in
        scratch.buffer(3, count: 2 * dyRoom).withMemoryRebound(to: Double.self, capacity: dyRoom) { wideDy in
            accumulateWide(g, x: x, batch: batch, dy: dy, col: col, wideCol: wideCol, wideDy: wideDy, into: dWeight)
        }
    }
}

/// `conv2dWeightGradientWide`'s loop: per chunk of samples, the patches and dY in double, one DGEMM.
private func accumulateWide(_ g: ConvGeometry, x: UnsafePointer<Float>, batch: Int, dy: UnsafePointer<Float>,
                            col: UnsafeMutablePointer<Float>, wideCol: UnsafeMutablePointer<Double>,
                            wideDy: UnsafeMutablePointer<Double>, into dWeight: UnsafeMutablePointer<Double>) {
    let P = g.outPositions, K = g.patchSize, Cout = g.outChannels, chunk = chunkSamples(g)
    var b0 = 0
    while b0 < batch {
        let nb = min(chunk, batch - b0), ld = nb * P
        im2col(g, x: x + b0 * g.inputSize, samples: nb, col: col)
        for i in 0..<(K * ld) { wideCol[i] = Double(col[i]) }
        // dY's samples side by side per channel, as the columns: [Cout][nb * P].
        for s in 0..<nb {
            for o in 0..<Cout {
                let from = dy + (b0 + s) * g.outputSize + o * P, to = wideDy + o * ld + s * P
                for p in 0..<P { to[p] = Double(from[p]) }
            }
        }
        BLAS.dgemm(transB: true, m: Cout, n: K, k: ld, a: wideDy, lda: ld, b: wideCol, ldb: ld, beta: 1, c: dWeight, ldc: K)
        b0 += nb
    }
}

/// Splits double values into a float high part and a float low part, hi + lo == v to about
/// 48 bits: how a wide share crosses a float wire.
package func splitWide(_ v: UnsafePointer<Double>, count: Int, high: UnsafeMutablePointer<Float>, low: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        let h = Float(v[i])
        high[i] = h
        low[i] = Float(v[i] - Double(h))
    }
}
