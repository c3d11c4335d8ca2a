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
