/// Fully connected layer: y[B, out] = x[B, in] * W[out, in]^T + b (PyTorch's nn.Linear layout).
package func linearForward(x: UnsafePointer<Float>, batch: Int, inFeatures: Int, outFeatures: Int,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          y: UnsafeMutablePointer<Float>) {
    BLAS.gemm(transB: true, m: batch, n: outFeatures, k: inFeatures, a: x, lda: inFeatures,
              b: weight, ldb: inFeatures, c: y, ldc: outFeatures)
    if let bias {
        for i in 0..<batch {
            let row = y + i * outFeatures
            for o in 0..<outFeatures { row[o] += bias[o] }
        }
    }
}

/// Backward of `linearForward`: accumulates dW += dy^T x and db += sum dy; writes dx = dy W.
package func linearBackward(x: UnsafePointer<Float>, batch: Int, inFeatures: Int, outFeatures: Int,
                           weight: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                           dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
                           dx: UnsafeMutablePointer<Float>?) {
    BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: batch, a: dy, lda: outFeatures,
              b: x, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures)
    if let dBias {
        for i in 0..<batch {
            let row = dy + i * outFeatures
            for o in 0..<outFeatures { dBias[o] += row[o] }
        }
    }
    if let dx {
        BLAS.gemm(m: batch, n: inFeatures, k: outFeatures, a: dy, lda: outFeatures,
                  b: weight, ldb: inFeatures, c: dx, ldc: inFeatures)
    }
}
