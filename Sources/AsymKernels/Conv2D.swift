/// 2-D convolution (cross-correlation, as in PyTorch) on NCHW tensors (channel-blocked ones
/// too on oneDNN, `ConvBlocks`): on oneDNN's kernels (`DNNL.swift`, the default), or by
/// im2col + OpenBLAS GEMM (`ASYMML_CONV=blas`, and any shape oneDNN cannot build a
/// primitive for).
///
/// For a chunk of `nb` samples, im2col lays the input patches out as a matrix
/// `col[C*k*k, nb*P]` (P = Ho*Wo output positions), so one GEMM with the weight matrix
/// `W[Cout, C*k*k]` computes the whole chunk: `out[Cout, nb*P] = W * col`. Chunks bound the
/// size of `col`, so the GEMM stays large (fast) while the buffer stays in memory budget.
///
/// A GEMM's result for one column may change in the last bits with the number of columns
/// and the column's position (OpenBLAS's Haswell kernels do, and its Cooperlake kernels on
/// small products). So the chunks never depend on the batch size: sample i of a batch is in
/// chunk i / c, c = `chunkSamples(g)`, a power of two that divides `convChunkAlignment`, and
/// a batch cut at multiples of `convChunkAlignment` (`shardRange` in AsymCluster) gives every
/// sample the same chunk, at the same position, as the whole batch: its output (and its dX)
/// is bit for bit the same, whatever the cut.
///
/// oneDNN keeps the same property the same way: forward and backward-data primitives are
/// built for exactly `convChunkAlignment` samples and run chunk by chunk; a batch's last,
/// shorter chunk gets a primitive of its own size, and since cuts fall on multiples of the
/// alignment, only the batch's own last chunk is ever that short, in every cut alike. The
/// weight gradient runs in the same chunks, each added to the sum in sample order, so that a
/// batch cut into micro-batches at multiples of the alignment (`asym.microbatches`) sums
/// the same terms in the same order as the whole batch (64-sample chunks measured no faster).

/// Which kernels run the convolutions.
package enum ConvKernels: String, CaseIterable, Sendable {
    case dnnl, blas

    /// From `ASYMML_CONV` (unset or empty: dnnl).
    package init(environment value: String?) throws {
        guard let value, !value.isEmpty else { self = .dnnl; return }
        guard let k = ConvKernels(rawValue: value) else {
            throw KernelSettingError(description: "ASYMML_CONV: '\(value)' is not one of \(ConvKernels.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = k
    }
}

package struct KernelSettingError: Error, CustomStringConvertible {
    package let description: String
}

/// The kernels `conv2dForward` and `conv2dBackward` use (the CLI sets it from `ASYMML_CONV`).
package nonisolated(unsafe) var convKernels = ConvKernels.dnnl

/// Whether models keep maps channel-blocked after oneDNN convolutions (`Model.planLayouts`;
/// the CLI clears it when `ASYMML_BLOCKED=0`, which gives bit-identical results, slower).
package nonisolated(unsafe) var blockedMaps = true

/// The layouts of a convolution's input and output maps, as channel blocks: 1 is NCHW, and
/// b > 1 is [N][C/b][H][W][b] (oneDNN's nChw8c, nChw16c) with b dividing C. A sample takes
/// C*H*W floats either way, so chunks of samples start where they do in NCHW. Only the
/// oneDNN path takes blocked maps.
package struct ConvBlocks: Hashable, Sendable {
    package var input, output: Int
    package init(input: Int, output: Int) { self.input = input; self.output = output }
    package static let nchw = ConvBlocks(input: 1, output: 1)
}

/// Copies maps `x` [batch, channels, positions] from channel blocks of `from` into channel
/// blocks of `to` in `y` (1: NCHW; see `ConvBlocks`): value (s, c, p) of a layout in blocks
/// of b is at s*C*P + (c - c%b)*P + p*b + c%b.
package func convertChannelBlocks(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                                  channels: Int, positions: Int, from: Int, to: Int) {
    precondition(channels % from == 0 && channels % to == 0, "\(channels) channels in blocks of \(from) and \(to)")
    @inline(__always) func at(_ sc: Int, _ p: Int, _ b: Int) -> Int { (sc - sc % b) * positions + p * b + sc % b }
    parallelRanges(batch * channels, grain: 16) { r in
        for sc in r {
            for p in 0..<positions { y[at(sc, p, to)] = x[at(sc, p, from)] }
        }
    }
}

/// The vector unit oneDNN's kernels use in this process (avx2, avx512_core, ...).
package var dnnlISA: String { DNNLRuntime.shared.isa }

/// oneDNN primitives built plus buffers grown since the process started: constant over
/// steady-state training steps.
package var dnnlAllocations: Int { DNNLRuntime.shared.exclusive { DNNLRuntime.shared.allocations } }

/// The shapes of one convolution.
package struct ConvGeometry: Hashable, Sendable {
    package var inChannels, height, width: Int
    package var outChannels, kernel, stride, padding: Int

    package init(inChannels: Int, height: Int, width: Int, outChannels: Int,
                kernel: Int, stride: Int = 1, padding: Int = 0) {
        self.inChannels = inChannels; self.height = height; self.width = width
        self.outChannels = outChannels; self.kernel = kernel
        self.stride = stride; self.padding = padding
    }

    package var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
    package var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
    /// Output positions per channel (P).
    package var outPositions: Int { outHeight * outWidth }
    /// Rows of the im2col matrix (C*k*k), the inner dimension of the GEMM.
    package var patchSize: Int { inChannels * kernel * kernel }
    package var inputSize: Int { inChannels * height * width }
    package var outputSize: Int { outChannels * outPositions }
    package var weightCount: Int { outChannels * patchSize }
    /// Multiply-adds of the forward pass for one sample, times two.
    package var forwardFlops: Int { 2 * outChannels * patchSize * outPositions }

    /// The same geometry with another number of input channels (the low-rank conv on V).
    package func with(inChannels c: Int) -> ConvGeometry {
        var g = self; g.inChannels = c; return g
    }
}

/// im2col and col2im are memory-bound; this bounds their matrix (in floats): 4M = 16 MiB.
package nonisolated(unsafe) var convColumnBudget = 4 << 20

/// The most samples in one chunk, and the alignment of every chunk: a power of two. A batch
/// cut at multiples of it leaves each sample's convolution result unchanged (see above).
package let convChunkAlignment = 8

/// Samples per chunk: the largest power of two up to `convChunkAlignment` whose columns fit
/// the column budget (at least 1). It depends on the geometry only, never on the batch.
@inline(__always)
package func chunkSamples(_ g: ConvGeometry) -> Int {
    let fit = convColumnBudget / max(1, g.patchSize * g.outPositions)
    var c = convChunkAlignment
    while c > 1 && c > fit { c >>= 1 }
    return c
}

/// The output columns `ow` whose input column `ow*stride - pad + kj` lies inside 0..<width.
@inline(__always)
private func validColumns(_ g: ConvGeometry, kj: Int) -> Range<Int> {
    let lo = max(0, (g.padding - kj + g.stride - 1) / g.stride)
    let hi = min(g.outWidth, (g.width + g.padding - kj + g.stride - 1) / g.stride)
    return lo..<max(lo, hi)
}

/// Writes the patches of samples `x[0..<nb]` into `col[C*k*k, ld]`, sample s at column
/// offset s*P (ld = nb*P).
package func im2col(_ g: ConvGeometry, x: UnsafePointer<Float>, samples nb: Int,
                   col: UnsafeMutablePointer<Float>) {
    let k = g.kernel, P = g.outPositions, Wo = g.outWidth, Ho = g.outHeight, ld = nb * P
    parallelRanges(nb * g.inChannels, grain: 1) { range in
        for sc in range {
            let s = sc / g.inChannels, c = sc % g.inChannels
            let xc = x + s * g.inputSize + c * g.height * g.width
            for ki in 0..<k {
                for kj in 0..<k {
                    let row = (c * k + ki) * k + kj
                    let dst = col + row * ld + s * P
                    let cols = validColumns(g, kj: kj)
                    for oh in 0..<Ho {
                        let ih = oh * g.stride - g.padding + ki
                        let d = dst + oh * Wo
                        if ih < 0 || ih >= g.height || cols.isEmpty {
                            d.update(repeating: 0, count: Wo)
                            continue
                        }
                        d.update(repeating: 0, count: cols.lowerBound)
                        let src = xc + ih * g.width - g.padding + kj
                        if g.stride == 1 {
                            (d + cols.lowerBound).update(from: src + cols.lowerBound, count: cols.count)
                        } else {
                            for ow in cols { d[ow] = src[ow * g.stride] }
                        }
                        (d + cols.upperBound).update(repeating: 0, count: Wo - cols.upperBound)
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: accumulates `col[C*k*k, nb*P]` into `dx[0..<nb]` (which the
/// caller zeroes first).
package func col2im(_ g: ConvGeometry, col: UnsafePointer<Float>, samples nb: Int,
                   dx: UnsafeMutablePointer<Float>) {
    let k = g.kernel, P = g.outPositions, Wo = g.outWidth, Ho = g.outHeight, ld = nb * P
    parallelRanges(nb * g.inChannels, grain: 1) { range in
        for sc in range {
            let s = sc / g.inChannels, c = sc % g.inChannels
            let xc = dx + s * g.inputSize + c * g.height * g.width
            for ki in 0..<k {
                for kj in 0..<k {
                    let src = col + ((c * k + ki) * k + kj) * ld + s * P
                    let cols = validColumns(g, kj: kj)
                    if cols.isEmpty { continue }
                    for oh in 0..<Ho {
                        let ih = oh * g.stride - g.padding + ki
                        if ih < 0 || ih >= g.height { continue }
                        let d = xc + ih * g.width - g.padding + kj
                        let r = src + oh * Wo
                        if g.stride == 1 {
                            for ow in cols { d[ow] += r[ow] }
                        } else {
                            for ow in cols { d[ow * g.stride] += r[ow] }
                        }
                    }
                }
            }
        }
    }
}

/// Copies `out[Cout, nb*P]` (GEMM layout) into NCHW `y[nb, Cout, P]`, adding the bias.
@inline(__always)
private func scatterChannels(_ out: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                             samples nb: Int, channels: Int, positions P: Int,
                             bias: UnsafePointer<Float>?) {
    parallelRanges(nb * channels, grain: 8) { range in
        for so in range {
            let s = so / channels, o = so % channels
            let src = out + o * nb * P + s * P, dst = y + (s * channels + o) * P
            let b = bias?[o] ?? 0
            for p in 0..<P { dst[p] = src[p] + b }
        }
    }
}

/// Copies NCHW `dy[nb, Cout, P]` into GEMM layout `out[Cout, nb*P]`.
@inline(__always)
private func gatherChannels(_ dy: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                            samples nb: Int, channels: Int, positions P: Int) {
    parallelRanges(nb * channels, grain: 8) { range in
        for so in range {
            let s = so / channels, o = so % channels
            (out + o * nb * P + s * P).update(from: dy + (s * channels + o) * P, count: P)
        }
    }
}

/// y = conv(x, w) + bias for a batch. x: [batch, C, H, W], w: [Cout, C, k, k], y: [batch, Cout, Ho, Wo];
/// x and y in the layouts `blocks`.
package func conv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, batch: Int,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          y: UnsafeMutablePointer<Float>, scratch: Scratch, blocks: ConvBlocks = .nchw) {
    if convKernels == .dnnl, dnnlChunks(.forward, g, batch: batch, chunk: convChunkAlignment, bias: bias != nil, blocks: blocks, { conv, b0, ready in
        let xs = UnsafeRawPointer(x + b0 * g.inputSize), ys = UnsafeRawPointer(y + b0 * g.outputSize)
        if let bias { conv.execute(weight, xs, ys, bias, firstReady: ready) } else { conv.execute(weight, xs, ys, firstReady: ready) }
    }) { return }
    precondition(blocks == .nchw, "channel-blocked maps need the oneDNN path")
    let P = g.outPositions, K = g.patchSize
    let chunk = chunkSamples(g), widest = min(chunk, batch)
    let col = scratch.buffer(0, count: K * widest * P)
    let out = scratch.buffer(1, count: g.outChannels * widest * P)
    var b0 = 0
    while b0 < batch {
        let nb = min(chunk, batch - b0)
        im2col(g, x: x + b0 * g.inputSize, samples: nb, col: col)
        if nb == 1 {
            // One sample: the GEMM layout already is NCHW.
            BLAS.gemm(m: g.outChannels, n: P, k: K, a: weight, lda: K, b: col, ldb: P,
                      c: y + b0 * g.outputSize, ldc: P)
            if let bias { addChannelBias(y + b0 * g.outputSize, bias: bias, channels: g.outChannels, positions: P) }
        } else {
            BLAS.gemm(m: g.outChannels, n: nb * P, k: K, a: weight, lda: K, b: col, ldb: nb * P,
                      c: out, ldc: nb * P)
            scatterChannels(out, y: y + b0 * g.outputSize, samples: nb, channels: g.outChannels,
                            positions: P, bias: bias)
        }
        b0 += nb
    }
}

@inline(__always)
private func addChannelBias(_ y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>,
                            channels: Int, positions P: Int) {
    for o in 0..<channels {
        let b = bias[o], row = y + o * P
        for p in 0..<P { row[p] += b }
    }
}

/// Backward of `conv2dForward`. Accumulates into `dWeight` and `dBias` (as PyTorch
/// accumulates .grad); writes `dx` when it is given (the first layer needs none). The chunks
/// are those of the forward pass, so each sample's dx is as independent of the batch cut as
/// its output; `dWeight` and `dBias` are sums over the samples, added chunk by chunk, whose
/// rounding does depend on the cut. x and dx have the layout `blocks.input`, dy `blocks.output`.
package func conv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, batch: Int,
                           weight: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                           dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
                           dx: UnsafeMutablePointer<Float>?, scratch: Scratch, blocks: ConvBlocks = .nchw) {
    var dWeight = dWeight, dx = dx
    if convKernels == .dnnl {
        if let d = dx, dnnlChunks(.backwardData, g, batch: batch, chunk: convChunkAlignment, blocks: blocks, { conv, b0, ready in
            conv.execute(weight, dy + b0 * g.outputSize, d + b0 * g.inputSize, firstReady: ready)
        }) { dx = nil }
        if let d = dWeight, dnnlChunks(.backwardWeights, g, batch: batch, chunk: convChunkAlignment, blocks: blocks, { conv, b0, _ in
            conv.execute(x + b0 * g.inputSize, dy + b0 * g.outputSize, d)
        }) { dWeight = nil }
        if dx == nil && dWeight == nil {
            if let dBias {
                accumulateChannelSums(dy, batch: batch, channels: g.outChannels, positions: g.outPositions, block: blocks.output, into: dBias)
            }
            return
        }
    }
    precondition(blocks == .nchw, "channel-blocked maps need the oneDNN path")
    let P = g.outPositions, K = g.patchSize
    let chunk = chunkSamples(g), widest = min(chunk, batch)
    let col = scratch.buffer(0, count: K * widest * P)
    let dOut = scratch.buffer(1, count: g.outChannels * widest * P)
    if let dx { dx.update(repeating: 0, count: batch * g.inputSize) }
    var b0 = 0
    while b0 < batch {
        let nb = min(chunk, batch - b0), ld = nb * P
        let dyChunk: UnsafePointer<Float>
        if nb == 1 {
            dyChunk = dy + b0 * g.outputSize
        } else {
            gatherChannels(dy + b0 * g.outputSize, out: dOut, samples: nb, channels: g.outChannels, positions: P)
            dyChunk = UnsafePointer(dOut)
        }
        if let dBias {
            accumulateChannelSums(dy + b0 * g.outputSize, batch: nb, channels: g.outChannels, positions: P, into: dBias)
        }
        if let dWeight {
            im2col(g, x: x + b0 * g.inputSize, samples: nb, col: col)
            // dW[Cout, K] += dY[Cout, ld] * col[K, ld]^T
            BLAS.gemm(transB: true, m: g.outChannels, n: K, k: ld, a: dyChunk, lda: ld,
                      b: col, ldb: ld, beta: 1, c: dWeight, ldc: K)
        }
        if let dx {
            // dcol[K, ld] = W[Cout, K]^T * dY[Cout, ld], then scatter-add the patches back.
            BLAS.gemm(transA: true, m: K, n: ld, k: g.outChannels, a: weight, lda: K,
                      b: dyChunk, ldb: ld, c: col, ldc: ld)
            col2im(g, col: col, samples: nb, dx: dx + b0 * g.inputSize)
        }
        b0 += nb
    }
}

/// Runs `body(primitive, firstSample, weightsReady)` over `batch` samples in chunks of
/// `chunk` on oneDNN, the last, shorter chunk on a primitive of its own size. The weights are
/// reordered once per call: `weightsReady` says a chunk may use the copy an earlier one made.
/// Returns false, having run nothing, when oneDNN cannot build a primitive for the shapes.
private func dnnlChunks(_ pass: ConvPass, _ g: ConvGeometry, batch: Int, chunk: Int, bias: Bool = false,
                        blocks: ConvBlocks, _ body: (DNNLConvolution, Int, Bool) -> Void) -> Bool {
    let runtime = DNNLRuntime.shared
    return runtime.exclusive {
        let tail = batch % chunk
        let full = batch >= chunk ? runtime.convolution(pass, g, samples: chunk, bias: bias, blocks: blocks) : nil
        let last = tail > 0 ? runtime.convolution(pass, g, samples: tail, bias: bias, blocks: blocks) : nil
        if (batch >= chunk && full == nil) || (tail > 0 && last == nil) { return false }
        var previous: DNNLConvolution?
        for b0 in stride(from: 0, to: batch, by: chunk) {
            let conv = batch - b0 >= chunk ? full! : last!
            let ready = pass != .backwardWeights && previous.map { $0 === conv || conv.sameFirstLayout(as: $0) } ?? false
            body(conv, b0, ready)
            previous = conv
        }
        return true
    }
}
