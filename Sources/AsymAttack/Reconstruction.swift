import AsymData
import AsymKernels
import AsymModel
import AsymTrain

/// Mean squared error of `batch` predictions of `size` values each. Returns the sum over the
/// batch of each sample's mean, and writes dL/dy = 2 (y - t) / (size * normalizer), the
/// gradient of that sum divided by `normalizer` (the batch size: a mean over the batch).
@discardableResult
package func meanSquaredError(_ y: UnsafePointer<Float>, _ t: UnsafePointer<Float>, batch: Int, size: Int,
                             normalizer: Int, dY: UnsafeMutablePointer<Float>?) -> Double {
    var sum = 0.0
    let scale = 2 / Float(size * normalizer)
    for i in 0..<(batch * size) {
        let e = y[i] - t[i]
        sum += Double(e) * Double(e)
        dY?[i] = scale * e
    }
    return sum / Double(size)
}

/// Rearranges images [n][C, H, W] into [n][C f f, H/f, W/f]: each position of a map that is
/// f times smaller than the image gets the f x f pixels it covers as channels, so that a
/// decoder from that map predicts them locally with convolutions alone.
/// Channel (c f + dy) f + dx at (h, w) holds pixel (c, h f + dy, w f + dx).
package func spaceToDepth(_ images: Features, factor f: Int) -> Features {
    let (c, h, w) = (images.shape[0], images.shape[1], images.shape[2])
    var out = Features(shape: [c * f * f, h / f, w / f], values: images.values)
    forEachPixel(c, h, w, f, samples: images.count) { image, block in out.values[block] = images.values[image] }
    return out
}

/// The inverse of `spaceToDepth`, back to [n][C, H, W] with C = channels / f^2.
package func depthToSpace(_ blocks: Features, factor f: Int) -> Features {
    let (c, h, w) = (blocks.shape[0] / (f * f), blocks.shape[1] * f, blocks.shape[2] * f)
    var out = Features(shape: [c, h, w], values: blocks.values)
    forEachPixel(c, h, w, f, samples: blocks.count) { image, block in out.values[image] = blocks.values[block] }
    return out
}

/// Calls `body(image index, block index)` for every pixel of `samples` images [C, H, W].
private func forEachPixel(_ c: Int, _ h: Int, _ w: Int, _ f: Int, samples: Int, _ body: (Int, Int) -> Void) {
    let size = c * h * w, hb = h / f, wb = w / f
    for s in 0..<samples {
        for ch in 0..<c {
            for y in 0..<h {
                for x in 0..<w {
                    let channel = (ch * f + y % f) * f + x % f
                    body(s * size + (ch * h + y) * w + x, s * size + (channel * hb + y / f) * wb + x / f)
                }
            }
        }
    }
}

/// The ridge decoder: from the 3 x 3 patch of the map around each position (and a constant
/// 1), a linear prediction of the target channels at that position, fitted in closed form
/// on the normal equations (A^T A + lambda I) W = A^T T with lambda = 1e-3 of A^T A's mean
/// diagonal. The products use BLAS; the solve is our own Cholesky in double precision.
/// The normal equations come from the first `ridgeFitSamples` samples only: that is already
/// ~200k rows for a few hundred unknowns, and each sample costs a (patch+1)^2 x P product.
package func ridgeDecode(_ inputs: Features, targets: Features, fitCount: Int) -> Features {
    let g = ConvGeometry(inChannels: inputs.shape[0], height: inputs.shape[1], width: inputs.shape[2],
                         outChannels: targets.shape[0], kernel: 3, stride: 1, padding: 1)
    let d = g.patchSize + 1, outputs = targets.shape[0], P = g.outPositions
    var gram = [Double](repeating: 0, count: d * d), cross = [Double](repeating: 0, count: d * outputs)
    forEachChunk(g, inputs, targets, 0..<min(fitCount, ridgeFitSamples)) { col, target, ld, _ in
        let gg = Tensor(shape: [d, d]), gt = Tensor(shape: [d, outputs])
        BLAS.gemm(transB: true, m: d, n: d, k: ld, a: col, lda: ld, b: col, ldb: ld, c: gg.data, ldc: d)
        BLAS.gemm(transB: true, m: d, n: outputs, k: ld, a: col, lda: ld, b: target, ldb: ld, c: gt.data, ldc: outputs)
        for i in 0..<(d * d) { gram[i] += Double(gg[i]) }
        for i in 0..<(d * outputs) { cross[i] += Double(gt[i]) }
    }
    let lambda = 1e-3 * (0..<d).map { gram[$0 * d + $0] }.reduce(0, +) / Double(d)
    for i in 0..<d { gram[i * d + i] += lambda }
    let weights = Tensor(shape: [d, outputs], values: choleskySolve(gram, cross, size: d, columns: outputs).map(Float.init))
    var predicted = Features(shape: targets.shape,
                             values: [Float](repeating: 0, count: (inputs.count - fitCount) * targets.sampleSize))
    forEachChunk(g, inputs, nil, fitCount..<inputs.count) { col, _, ld, samples in
        let out = Tensor(shape: [outputs, ld])
        BLAS.gemm(transA: true, m: outputs, n: ld, k: d, a: weights.data, lda: outputs, b: col, ldb: ld, c: out.data, ldc: ld)
        // `out` is [channel][chunk sample][P]; the predictions are [sample][channel][P].
        predicted.values.withUnsafeMutableBufferPointer { p in
            for (k, s) in samples.enumerated() {
                for o in 0..<outputs {
                    (p.baseAddress! + (s - fitCount) * targets.sampleSize + o * P).update(from: out.data + o * ld + k * P, count: P)
                }
            }
        }
    }
    return predicted
}

package let ridgeFitSamples = 256

/// Runs `body(columns, targets, ld, samples)` over chunks of `range`: the im2col matrix of
/// the chunk's 3 x 3 patches with a last row of ones, [patch + 1][ld = chunk * P], and the
/// targets in the same column order, [target channels][ld] (empty without targets).
private func forEachChunk(_ g: ConvGeometry, _ inputs: Features, _ targets: Features?, _ range: Range<Int>,
                          _ body: (UnsafePointer<Float>, UnsafePointer<Float>, Int, Range<Int>) -> Void) {
    let d = g.patchSize + 1, P = g.outPositions, chunk = max(1, (4 << 20) / (d * P))
    let outputs = targets?.shape[0] ?? 0
    for start in stride(from: range.lowerBound, to: range.upperBound, by: chunk) {
        let samples = start..<min(start + chunk, range.upperBound), ld = samples.count * P
        let col = Tensor(shape: [d, ld]), target = Tensor(shape: [outputs, ld])
        inputs.values.withUnsafeBufferPointer {
            im2col(g, x: $0.baseAddress! + start * inputs.sampleSize, samples: samples.count, col: col.data)
        }
        (col.data + (d - 1) * ld).update(repeating: 1, count: ld)
        targets?.values.withUnsafeBufferPointer { t in
            for (k, s) in samples.enumerated() {
                for o in 0..<outputs {
                    (target.data + o * ld + k * P).update(from: t.baseAddress! + s * targets!.sampleSize + o * P, count: P)
                }
            }
        }
        body(col.data, target.data, ld, samples)
    }
}

/// Solves A X = B for a symmetric positive definite A [n x n] and B [n x columns] (row
/// major) by Cholesky, A = L L^T, then forward and back substitution per column.
package func choleskySolve(_ a: [Double], _ b: [Double], size n: Int, columns: Int) -> [Double] {
    var l = [Double](repeating: 0, count: n * n)
    for j in 0..<n {
        var diagonal = a[j * n + j]
        for k in 0..<j { diagonal -= l[j * n + k] * l[j * n + k] }
        precondition(diagonal > 0, "choleskySolve: the matrix is not positive definite")
        let root = diagonal.squareRoot()
        l[j * n + j] = root
        for i in (j + 1)..<n {
            var v = a[i * n + j]
            for k in 0..<j { v -= l[i * n + k] * l[j * n + k] }
            l[i * n + j] = v / root
        }
    }
    var x = b
    for c in 0..<columns {
        for i in 0..<n {  // L y = b
            var v = x[i * columns + c]
            for k in 0..<i { v -= l[i * n + k] * x[k * columns + c] }
            x[i * columns + c] = v / l[i * n + i]
        }
        for i in stride(from: n - 1, through: 0, by: -1) {  // L^T x = y
            var v = x[i * columns + c]
            for k in (i + 1)..<n { v -= l[k * n + i] * x[k * columns + c] }
            x[i * columns + c] = v / l[i * n + i]
        }
    }
    return x
}

extension Features {
    /// Copies samples `indices` into `batch` (which holds at least that many).
    func gather(_ indices: some Collection<Int32>, into batch: Tensor) {
        values.withUnsafeBufferPointer { v in
            for (k, i) in indices.enumerated() {
                (batch.data + k * sampleSize).update(from: v.baseAddress! + Int(i) * sampleSize, count: sampleSize)
            }
        }
    }
}

/// The convolutional decoder: conv(16)-relu-conv(16)-relu-conv(target channels)-flatten, all
/// 3 x 3, trained with SGD on the mean squared error over the first `fitCount` samples.
/// Returns its predictions for the other samples.
package func convDecode(_ inputs: Features, targets: Features, fitCount: Int, epochs: Int, seed: Int = 0) throws -> Features {
    let layers = [LayerSpec(name: "dec_conv1", type: .conv, out: 16, kernel: 3, padding: 1),
                  LayerSpec(name: "dec_relu1", type: .relu),
                  LayerSpec(name: "dec_conv2", type: .conv, out: 16, kernel: 3, padding: 1),
                  LayerSpec(name: "dec_relu2", type: .relu),
                  LayerSpec(name: "dec_conv3", type: .conv, out: targets.shape[0], kernel: 3, padding: 1),
                  LayerSpec(name: "dec_flatten", type: .flatten)]
    let batch = 32
    let config = attackerConfig(input: inputs.shape, layers: layers, batch: batch, epochs: epochs, lr: 0.05, seed: seed)
    let model = try Model(config.model)
    model.initialize(seed: UInt64(seed), scheme: config.model.initScheme)
    let order = try EpochOrder(count: fitCount, batchSize: batch, seed: UInt64(seed), shuffle: true)
    let optimizer = SGDOptimizer(config.optimizer, stepsPerEpoch: order.batchesPerEpoch,
                                 totalSteps: epochs * order.batchesPerEpoch)
    let x = Tensor(shape: [batch] + inputs.shape), t = Tensor(shape: [batch, targets.sampleSize])
    let dY = Tensor(shape: [batch, targets.sampleSize])
    var permutation: (epoch: Int, order: [Int32])?
    for step in 0..<optimizer.totalSteps {
        let epoch = step / order.batchesPerEpoch
        if permutation?.epoch != epoch { permutation = (epoch, order.permutation(epoch: epoch)) }
        let indices = order.batch(permutation!.order, index: step % order.batchesPerEpoch)
        inputs.gather(indices, into: x)
        targets.gather(indices, into: t)
        model.zeroGradients()
        let y = model.forward(x, batch: batch, training: true)
        meanSquaredError(y.data, t.data, batch: batch, size: targets.sampleSize, normalizer: batch, dY: dY.data)
        model.backward(dY, batch: batch)
        optimizer.apply(learningRate: optimizer.learningRate(step: step), to: model.parameters)
    }
    var predicted = Features(shape: targets.shape)
    for range in try evaluationBatches(count: inputs.count - fitCount, batchSize: batch) {
        let indices = (range.lowerBound + Int32(fitCount))..<(range.upperBound + Int32(fitCount))
        inputs.gather(indices, into: x)
        predicted.values += model.forward(x, batch: indices.count, training: false).buffer
    }
    return predicted
}
