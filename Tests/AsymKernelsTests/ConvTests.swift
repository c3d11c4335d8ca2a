import AsymKernels
import XCTest

/// The naive 7-loop convolution that the kernels are checked against.
func naiveConv(_ g: ConvGeometry, x: Tensor, w: Tensor, b: Tensor?, batch: Int) -> [Float] {
    referenceConv2d(g, x: x.data, weight: w.data, bias: b?.data, batch: batch)
}

/// Runs `body` once per kernel path (oneDNN, then OpenBLAS im2col), restoring the default.
func onEachKernelPath(_ body: () -> Void) {
    defer { convKernels = .dnnl }
    for kernels in ConvKernels.allCases {
        convKernels = kernels
        body()
    }
}

final class ConvTests: XCTestCase {
    /// Strides, paddings, kernels and odd shapes, including chunks of one sample and
    /// chunks that split the batch unevenly (a small column budget forces that).
    let cases = convCheckShapes

    func testForwardMatchesNaiveLoops() {
        onEachKernelPath {
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
    }

    /// A sample's output and dX are bit for bit the same whatever the batch it is convolved
    /// in, as long as the batch is cut at multiples of `convChunkAlignment` (how shardRange
    /// cuts a trusted rank's batch among its untrusted ranks): shards and whole batch chunk it
    /// alike. Batches of 27 leave a short last chunk; small budgets force chunks of 4, 2, 1.
    /// (With chunks that followed the batch size, this failed with OpenBLAS's Haswell kernels,
    /// OPENBLAS_CORETYPE=Haswell, in every case, and with its Cooperlake kernels on case 1.)
    func testPerSampleResultsIndependentOfBatchCut() {
        onEachKernelPath {
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
    }

    func testBackwardMatchesFiniteDifferences() {
        onEachKernelPath {
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

    /// The in-process check `asymml selftest` runs (AsymClusterTests start it once per
    /// oneDNN ISA): forward, both gradients and batch-cut exactness, on both paths.
    func testKernelsPassTheProcessCheck() {
        onEachKernelPath { XCTAssertEqual(checkConvolutionKernels(), [], "\(convKernels)") }
    }

    /// oneDNN primitives and buffers are made once per shape: repeating a step's calls
    /// (a full chunk, a short last chunk, forward and both gradients) builds and grows nothing.
    func testRepeatedCallsAllocateNothing() {
        let g = ConvGeometry(inChannels: 8, height: 10, width: 10, outChannels: 16, kernel: 3, stride: 1, padding: 1)
        let batch = convChunkAlignment + 3
        let x = randomTensor([batch, g.inChannels, g.height, g.width], seed: 1)
        let w = randomTensor([g.outChannels, g.inChannels, g.kernel, g.kernel], seed: 2)
        let b = randomTensor([g.outChannels], seed: 3), dy = randomTensor([batch, g.outChannels, g.outHeight, g.outWidth], seed: 4)
        let y = Tensor(shape: dy.shape), dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape), db = Tensor(shape: b.shape)
        let scratch = Scratch()
        func step() {
            conv2dForward(g, x: x.data, batch: batch, weight: w.data, bias: b.data, y: y.data, scratch: scratch)
            conv2dBackward(g, x: x.data, batch: batch, weight: w.data, dy: dy.data, dWeight: dw.data, dBias: db.data,
                           dx: dx.data, scratch: scratch)
        }
        step()
        let before = dnnlAllocations
        for _ in 0..<3 { step() }
        XCTAssertGreaterThan(before, 0, "the oneDNN path ran")
        XCTAssertEqual(dnnlAllocations, before)
    }
}
