import AsymKernels
import XCTest

/// The naive 7-loop convolution that the im2col kernel is checked against.
func naiveConv(_ g: ConvGeometry, x: Tensor, w: Tensor, b: Tensor?, batch: Int) -> [Float] {
    var y = [Float](repeating: 0, count: batch * g.outputSize)
    for n in 0..<batch {
        for o in 0..<g.outChannels {
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    var s: Float = b?[o] ?? 0
                    for c in 0..<g.inChannels {
                        for ki in 0..<g.kernel {
                            for kj in 0..<g.kernel {
                                let ih = oh * g.stride - g.padding + ki, iw = ow * g.stride - g.padding + kj
                                if ih < 0 || ih >= g.height || iw < 0 || iw >= g.width { continue }
                                s += x[((n * g.inChannels + c) * g.height + ih) * g.width + iw]
                                    * w[((o * g.inChannels + c) * g.kernel + ki) * g.kernel + kj]
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

final class ConvTests: XCTestCase {
    /// Strides, paddings, kernels and odd shapes, including chunks of one sample and
    /// chunks that split the batch unevenly (a small column budget forces that).
    let cases: [ConvGeometry] = [
        ConvGeometry(inChannels: 1, height: 5, width: 5, outChannels: 2, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(inChannels: 3, height: 7, width: 6, outChannels: 4, kernel: 3, stride: 2, padding: 1),
        ConvGeometry(inChannels: 2, height: 9, width: 5, outChannels: 3, kernel: 5, stride: 3, padding: 2),
        ConvGeometry(inChannels: 4, height: 4, width: 4, outChannels: 5, kernel: 1, stride: 1, padding: 0),
        ConvGeometry(inChannels: 3, height: 6, width: 7, outChannels: 2, kernel: 2, stride: 2, padding: 0),
        ConvGeometry(inChannels: 2, height: 3, width: 3, outChannels: 3, kernel: 3, stride: 1, padding: 2),
    ]

    func testForwardMatchesNaiveLoops() {
        for threads in [1, 2] {
            setThreads(threads)
            for budget in [1 << 22, 200] {
                convColumnBudget = budget
                defer { convColumnBudget = 4 << 20 }
                for (i, g) in cases.enumerated() {
                    let batch = 3
                    let x = randomTensor([batch, g.inChannels, g.height, g.width], seed: UInt64(i))
                    let w = randomTensor([g.outChannels, g.inChannels, g.kernel, g.kernel], seed: UInt64(i + 10))
                    let b = randomTensor([g.outChannels], seed: UInt64(i + 20))
                    let y = Tensor(shape: [batch, g.outChannels, g.outHeight, g.outWidth])
                    conv2dForward(g, x: x.data, batch: batch, weight: w.data, bias: b.data, y: y.data, scratch: Scratch())
                    let diff = maxAbsDifference(y.array, naiveConv(g, x: x, w: w, b: b, batch: batch))
                    XCTAssertLessThan(diff, 1e-4, "case \(i) \(g) threads \(threads) budget \(budget)")
                }
            }
        }
        setThreads(1)
    }

    /// A sample's output and dX are bit for bit the same whatever the batch it is convolved
    /// in, as long as the batch is cut at multiples of `convChunkAlignment` (how shardRange
    /// cuts a trusted rank's batch among its untrusted ranks): shards and whole batch chunk it
    /// alike. Batches of 27 leave a short last chunk; small budgets force chunks of 4, 2, 1.
    /// (With chunks that followed the batch size, this failed with OpenBLAS's Haswell kernels,
    /// OPENBLAS_CORETYPE=Haswell, in every case, and with its Cooperlake kernels on case 1.)
    func testPerSampleResultsIndependentOfBatchCut() {
        let geometries = [
            ConvGeometry(inChannels: 16, height: 20, width: 20, outChannels: 16, kernel: 3, stride: 1, padding: 1),
            ConvGeometry(inChannels: 4, height: 14, width: 14, outChannels: 16, kernel: 3, stride: 1, padding: 1),
            ConvGeometry(inChannels: 3, height: 9, width: 7, outChannels: 5, kernel: 3, stride: 2, padding: 1),
        ]
        let a = convChunkAlignment, batch = 3 * a + 3
        let cuts: [[Int]] = [[batch], [a, batch], [2 * a, batch], [a, 2 * a, batch], [a, 2 * a, 3 * a, batch],
                             [3 * a, batch], [0, 3 * a, 3 * a, batch]]
        defer { convColumnBudget = 4 << 20; setThreads(1) }
        for threads in [1, 2] {
            setThreads(threads)
            for (i, g) in geometries.enumerated() {
                let x = randomTensor([batch, g.inChannels, g.height, g.width], seed: UInt64(i + 30))
                let w = randomTensor([g.outChannels, g.inChannels, g.kernel, g.kernel], seed: UInt64(i + 40))
                let b = randomTensor([g.outChannels], seed: UInt64(i + 50))
                let dy = randomTensor([batch, g.outChannels, g.outHeight, g.outWidth], seed: UInt64(i + 60))
                let columns = g.patchSize * g.outPositions
                for budget in [4 << 20, 4 * columns, 3 * columns, 1] {
                    convColumnBudget = budget
                    let chunk = chunkSamples(g)
                    XCTAssertTrue(chunk >= 1 && chunk <= a && a % chunk == 0, "chunk \(chunk)")
                    if budget >= a * columns { XCTAssertEqual(chunk, a) }
                    var reference: (y: [UInt32], dx: [UInt32])?
                    for cut in cuts {
                        let y = Tensor(shape: [batch, g.outChannels, g.outHeight, g.outWidth])
                        let dx = Tensor(shape: x.shape)
                        let scratch = Scratch()
                        var lo = 0
                        for hi in cut {
                            XCTAssertTrue(hi == batch || hi % a == 0)
                            conv2dForward(g, x: x.data + lo * g.inputSize, batch: hi - lo, weight: w.data, bias: b.data,
                                          y: y.data + lo * g.outputSize, scratch: scratch)
                            conv2dBackward(g, x: x.data + lo * g.inputSize, batch: hi - lo, weight: w.data,
                                           dy: dy.data + lo * g.outputSize, dWeight: nil, dBias: nil,
                                           dx: dx.data + lo * g.inputSize, scratch: scratch)
                            lo = hi
                        }
                        let bits = (y.array.map(\.bitPattern), dx.array.map(\.bitPattern))
                        guard let reference else { reference = bits; continue }
                        XCTAssertEqual(bits.0, reference.y, "output: case \(i) cut \(cut) budget \(budget) threads \(threads)")
                        XCTAssertEqual(bits.1, reference.dx, "dX: case \(i) cut \(cut) budget \(budget) threads \(threads)")
                    }
                    // Still the convolution, whatever the chunk.
                    XCTAssertLessThan(maxAbsDifference(reference!.y.map(Float.init(bitPattern:)),
                                                       naiveConv(g, x: x, w: w, b: b, batch: batch)), 1e-3)
                }
            }
        }
    }

    func testBackwardMatchesFiniteDifferences() {
        for (i, g) in cases.enumerated() {
            let batch = 2
            let x = randomTensor([batch, g.inChannels, g.height, g.width], seed: UInt64(i))
            let w = randomTensor([g.outChannels, g.inChannels, g.kernel, g.kernel], seed: UInt64(i + 10), scale: 0.5)
            let b = randomTensor([g.outChannels], seed: UInt64(i + 20))
            let y = Tensor(shape: [batch, g.outChannels, g.outHeight, g.outWidth])
            let scratch = Scratch()
            checkGradients("conv2d \(g)", inputs: [x, w, b], forward: {
                conv2dForward(g, x: x.data, batch: batch, weight: w.data, bias: b.data, y: y.data, scratch: scratch)
                return y
            }, backward: { dy in
                let dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape), db = Tensor(shape: b.shape)
                conv2dBackward(g, x: x.data, batch: batch, weight: w.data, dy: dy.data,
                               dWeight: dw.data, dBias: db.data, dx: dx.data, scratch: scratch)
                return [dx, dw, db]
            })
        }
    }
}
