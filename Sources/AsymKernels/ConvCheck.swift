/// The convolution kernels checked against plain loops, in the running process: the tests
/// call it, and so does `asymml selftest` (hidden), which a test starts as a child process
/// with `ONEDNN_MAX_CPU_ISA` set, since oneDNN reads that once, at its first use.

/// The naive 7-loop convolution (with bias) that the kernels are checked against.
package func referenceConv2d(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                             bias: UnsafePointer<Float>?, batch: Int) -> [Float] {
    var y = [Float](repeating: 0, count: batch * g.outputSize)
    for n in 0..<batch {
        for o in 0..<g.outChannels {
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    var s: Float = bias?[o] ?? 0
                    for c in 0..<g.inChannels {
                        for ki in 0..<g.kernel {
                            for kj in 0..<g.kernel {
                                let ih = oh * g.stride - g.padding + ki, iw = ow * g.stride - g.padding + kj
                                if ih < 0 || ih >= g.height || iw < 0 || iw >= g.width { continue }
                                s += x[((n * g.inChannels + c) * g.height + ih) * g.width + iw]
                                    * weight[((o * g.inChannels + c) * g.kernel + ki) * g.kernel + kj]
                            }
                        }
                    }
                    y[((n * g.outChannels + o) * g.outHeight + oh) * g.outWidth + ow] = s
                }
            }
        }
    }
    return y
}

/// `convertChannelBlocks` on an array of whole samples.
package func reblockMaps(_ x: [Float], channels: Int, positions: Int, from: Int, to: Int) -> [Float] {
    var y = x
    convertChannelBlocks(x, &y, batch: x.count / (channels * positions), channels: channels, positions: positions, from: from, to: to)
    return y
}

/// Odd shapes (strides, paddings, kernels, a padding wider than the kernel's reach) that
/// every convolution path is checked on.
package let convCheckShapes = [
    ConvGeometry(inChannels: 1, height: 5, width: 5, outChannels: 2, kernel: 3, stride: 1, padding: 1),
    ConvGeometry(inChannels: 3, height: 7, width: 6, outChannels: 4, kernel: 3, stride: 2, padding: 1),
    ConvGeometry(inChannels: 2, height: 9, width: 5, outChannels: 3, kernel: 5, stride: 3, padding: 2),
    ConvGeometry(inChannels: 4, height: 4, width: 4, outChannels: 5, kernel: 1, stride: 1, padding: 0),
    ConvGeometry(inChannels: 3, height: 6, width: 7, outChannels: 2, kernel: 2, stride: 2, padding: 0),
    ConvGeometry(inChannels: 2, height: 3, width: 3, outChannels: 3, kernel: 3, stride: 1, padding: 2),
]

/// Checks `convKernels` on odd and real-sized shapes, with 1 and 2 threads: the forward pass
/// against `referenceConv2d`; dX and dW through the adjoint identities
/// <dy, conv(x, w)> = <dX, x> = <dW, w> (bias-free); and each sample's output and dX bit for
/// bit the same whatever cut at multiples of `convChunkAlignment` the batch is run in; on
/// oneDNN, channel-blocked maps where it picks them (`checkBlockedMaps`).
/// Returns one line per failure (none: all passed).
package func checkConvolutionKernels() -> [String] {
    let shapes = convCheckShapes + [
        ConvGeometry(inChannels: 2, height: 6, width: 6, outChannels: 3, kernel: 3, stride: 2, padding: 0),
        ConvGeometry(inChannels: 16, height: 12, width: 12, outChannels: 32, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(inChannels: 5, height: 10, width: 10, outChannels: 16, kernel: 3, stride: 1, padding: 1),
    ]
    let threads = kernelThreads
    defer { setThreads(threads) }
    var failures: [String] = []
    let a = convChunkAlignment, batch = 2 * a + 3
    for t in [1, 2] {
        setThreads(t)
        for (i, g) in shapes.enumerated() {
            var rng = RNG(seed: UInt64(100 + i))
            func random(_ shape: [Int]) -> Tensor {
                Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in rng.normal() })
            }
            let x = random([batch, g.inChannels, g.height, g.width]), w = random([g.outChannels, g.inChannels, g.kernel, g.kernel])
            let b = random([g.outChannels]), dy = random([batch, g.outChannels, g.outHeight, g.outWidth])
            let name = "\(convKernels) \(g) threads \(t)"
            // Whole batch, then cut at a and 2a: outputs and dX must agree bit for bit.
            var runs: [(y: [Float], dx: [Float], dw: [Float])] = []
            for cut in [[batch], [a, 2 * a, batch]] {
                let y = Tensor(shape: dy.shape), dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape)
                let scratch = Scratch()
                var lo = 0
                for hi in cut {
                    conv2dForward(g, x: x.data + lo * g.inputSize, batch: hi - lo, weight: w.data, bias: b.data,
                                  y: y.data + lo * g.outputSize, scratch: scratch)
                    conv2dBackward(g, x: x.data + lo * g.inputSize, batch: hi - lo, weight: w.data, dy: dy.data + lo * g.outputSize,
                                   dWeight: dw.data, dBias: nil, dx: dx.data + lo * g.inputSize, scratch: scratch)
                    lo = hi
                }
                runs.append((y.array, dx.array, dw.array))
            }
            if runs[0].y.map(\.bitPattern) != runs[1].y.map(\.bitPattern) { failures.append("\(name): output depends on the batch cut") }
            if runs[0].dx.map(\.bitPattern) != runs[1].dx.map(\.bitPattern) { failures.append("\(name): dX depends on the batch cut") }
            failures += checkBlockedMaps(g, x: x, w: w, b: b, dy: dy, batch: batch, name: name)
            let reference = referenceConv2d(g, x: x.data, weight: w.data, bias: b.data, batch: batch)
            let scale = reference.map(abs).max() ?? 1
            let error = zip(runs[0].y, reference).map { abs($0 - $1) }.max() ?? 0
            if error > 1e-5 * scale { failures.append("\(name): forward off the reference by \(error / scale) (relative)") }
            // The adjoint identities, in Double, against the bias-free reference forward.
            func dot(_ u: [Float], _ v: [Float]) -> Double { zip(u, v).reduce(0) { $0 + Double($1.0) * Double($1.1) } }
            let yw = referenceConv2d(g, x: x.data, weight: w.data, bias: nil, batch: batch)
            let target = dot(dy.array, yw), size = (dot(dy.array, dy.array) * dot(yw, yw)).squareRoot()
            for (what, value) in [("dX", dot(runs[0].dx, x.array)), ("dW", dot(runs[0].dw, w.array))] where abs(value - target) > 1e-5 * size {
                failures.append("\(name): \(what) fails <dy, conv> = <\(what), input> by \(abs(value - target) / size) (relative)")
            }
        }
    }
    return failures
}

/// On oneDNN, where it picks channel-blocked maps for `g`: the convolution on maps in those
/// layouts gives exactly the NCHW results (output, dX, dW, and the bias gradient from blocked
/// dY), the layouts converted.
private func checkBlockedMaps(_ g: ConvGeometry, x: Tensor, w: Tensor, b: Tensor, dy: Tensor, batch: Int, name: String) -> [String] {
    let blocks = dnnlPreferredBlocks(g, bias: true)
    // Its direct kernels work on blocked maps: with whole blocks of 16 (or 8) channels on
    // both sides, NCHW would mean that models lose the reorders saved.
    let whole = convKernels == .dnnl && g.inChannels % 16 == 0 && g.outChannels % 16 == 0
    if whole && (blocks.input == 1 || blocks.output == 1) { return ["\(name): oneDNN picks blocks \(blocks)"] }
    guard blocks != .nchw else { return [] }
    func run(_ blocks: ConvBlocks) -> [[Float]] {
        let xs = reblockMaps(x.array, channels: g.inChannels, positions: g.height * g.width, from: 1, to: blocks.input)
        let dys = reblockMaps(dy.array, channels: g.outChannels, positions: g.outPositions, from: 1, to: blocks.output)
        var y = [Float](repeating: 0, count: dy.count), dx = [Float](repeating: 0, count: x.count)
        var dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: b.count)
        let scratch = Scratch()
        conv2dForward(g, x: xs, batch: batch, weight: w.data, bias: b.data, y: &y, scratch: scratch, blocks: blocks)
        conv2dBackward(g, x: xs, batch: batch, weight: w.data, dy: dys, dWeight: &dw, dBias: &db, dx: &dx, scratch: scratch, blocks: blocks)
        return [reblockMaps(y, channels: g.outChannels, positions: g.outPositions, from: blocks.output, to: 1),
                reblockMaps(dx, channels: g.inChannels, positions: g.height * g.width, from: blocks.input, to: 1), dw, db]
    }
    let blocked = run(blocks), plain = run(.nchw)
    return zip(["output", "dX", "dW", "dBias"], zip(blocked, plain)).compactMap { what, pair in
        pair.0.map(\.bitPattern) == pair.1.map(\.bitPattern) ? nil : "\(name): \(what) on maps in blocks \(blocks) differs from NCHW"
    }
}
