import AsymKernels

// Test inputs shared by the split, integrity and privacy tests (a library target, so each
// test target that mirrors a module can use them).

/// A tensor of normal values of standard deviation `scale`.
package func randomTensor(_ shape: [Int], _ rng: inout RNG, scale: Float = 1) -> Tensor {
    let t = Tensor(shape: shape)
    for i in 0..<t.count { t[i] = rng.normal() * scale }
    return t
}

/// A batch of feature maps of rank `rank` per sample plus a little noise: what the light
/// SVD sees after a ReLU in a trained network (a few dominant channel directions).
package func lowRankMaps(batch: Int, channels: Int, positions: Int, rank: Int, noise: Float, _ rng: inout RNG) -> Tensor {
    let x = Tensor(shape: [batch, channels, positions])
    for b in 0..<batch {
        let u = randomTensor([channels, rank], &rng), v = randomTensor([rank, positions], &rng)
        BLAS.gemm(m: channels, n: positions, k: rank, a: u.data, lda: rank, b: v.data, ldb: positions,
                  c: x.data + b * channels * positions, ldc: positions)
    }
    for i in 0..<x.count { x[i] += noise * rng.normal() }
    return x
}
