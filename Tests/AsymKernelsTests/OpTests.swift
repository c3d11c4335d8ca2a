import AsymKernels
import XCTest

final class OpTests: XCTestCase {
    /// A buffer filled in parts keeps what it holds when it grows, into a new tensor (the old
    /// one may still be read): the values asked to stay, or as many as the old buffer had (a
    /// pass's pieces fill a member's rows from the end down, past a smaller pass's buffer).
    func testGrownKeepsWhatTheBufferHolds() {
        let small = Tensor(shape: [4])
        for i in 0..<4 { small[i] = Float(i + 1) }
        let bigger = Tensor.grown(small, shape: [10], keeping: 2)
        XCTAssertFalse(bigger === small)
        XCTAssertEqual(Array(bigger.array[0..<2]), [1, 2])
        let past = Tensor.grown(small, shape: [10], keeping: 8)
        XCTAssertEqual(Array(past.array[0..<4]), [1, 2, 3, 4])
        XCTAssertEqual(small.array, [1, 2, 3, 4])
        XCTAssertTrue(Tensor.grown(small, shape: [3], keeping: 2) === small)
    }

    func testLinearGradients() {
        let (batch, nin, nout) = (3, 5, 4)
        let x = randomTensor([batch, nin], seed: 1), w = randomTensor([nout, nin], seed: 2), b = randomTensor([nout], seed: 3)
        let y = Tensor(shape: [batch, nout])
        checkGradients("linear", inputs: [x, w, b], forward: {
            linearForward(x: x.data, batch: batch, inFeatures: nin, outFeatures: nout, weight: w.data, bias: b.data, y: y.data)
            return y
        }, backward: { dy in
            let dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape), db = Tensor(shape: b.shape)
            linearBackward(x: x.data, batch: batch, inFeatures: nin, outFeatures: nout, weight: w.data, dy: dy.data,
                           dWeight: dw.data, dBias: db.data, dx: dx.data)
            return [dx, dw, db]
        })
        // Forward against the definition.
        linearForward(x: x.data, batch: batch, inFeatures: nin, outFeatures: nout, weight: w.data, bias: b.data, y: y.data)
        for i in 0..<batch {
            for o in 0..<nout {
                var s = b[o]
                for k in 0..<nin { s += x[i * nin + k] * w[o * nin + k] }
                XCTAssertEqual(y[i * nout + o], s, accuracy: 1e-5)
            }
        }
    }

    func testReluGradients() {
        let x = randomTensor([2, 3, 4, 4], seed: 4)
        let y = Tensor(shape: x.shape)
        var mask = [UInt8](repeating: 0, count: (x.count + 7) / 8)
        checkGradients("relu", inputs: [x], forward: {
            reluForward(x.data, y.data, count: x.count); reluMask(y.data, &mask, count: x.count); return y
        }, backward: { dy in
            let dx = Tensor(shape: x.shape)
            reluBackward(mask: mask, dy: dy.data, dx: dx.data, count: x.count)
            return [dx]
        })
        // 11 values: one full byte of bits and a partial one; zero, -0 and NaN outputs as
        // y <= 0 decides (NaN passes the gradient). Backward runs in place.
        let out: [Float] = [1, 0, -0.0, 2, .nan, 3, 0, 0.5, 0, 7, 0]
        var bits = [UInt8](repeating: 0xFF, count: 2)
        reluMask(out, &bits, count: out.count)
        XCTAssertEqual(bits, [0b1011_1001, 0b0000_0010])
        let d = Tensor(shape: [11], values: (1...11).map(Float.init))
        reluBackward(mask: bits, dy: d.data, dx: d.data, count: 11)
        XCTAssertEqual(d.array, [1, 0, 0, 4, 5, 6, 0, 8, 0, 10, 0])
    }

    func testPoolingGradients() {
        for (k, s) in [(2, 2), (3, 2), (3, 1)] {
            let g = PoolGeometry(channels: 3, height: 7, width: 6, kernel: k, stride: s)
            let x = randomTensor([2, 3, 7, 6], seed: 5)
            let y = Tensor(shape: [2, 3, g.outHeight, g.outWidth])
            var argmax = [UInt8](repeating: 0, count: y.count)
            checkGradients("maxpool k\(k) s\(s)", inputs: [x], forward: {
                maxPoolForward(g, x: x.data, batch: 2, y: y.data, argmax: &argmax); return y
            }, backward: { dy in
                let dx = Tensor(shape: x.shape)
                maxPoolBackward(g, dy: dy.data, argmax: argmax, batch: 2, dx: dx.data)
                return [dx]
            })
            checkGradients("avgpool k\(k) s\(s)", inputs: [x], forward: {
                avgPoolForward(g, x: x.data, batch: 2, y: y.data); return y
            }, backward: { dy in
                let dx = Tensor(shape: x.shape)
                avgPoolBackward(g, dy: dy.data, batch: 2, dx: dx.data)
                return [dx]
            })
        }
        // Max pooling picks the maximum of each window.
        let g = PoolGeometry(channels: 1, height: 2, width: 4, kernel: 2, stride: 2)
        let x = Tensor(shape: [1, 1, 2, 4], values: [1, 5, 2, 0, 3, 4, 8, 7])
        let y = Tensor(shape: [1, 1, 1, 2])
        var argmax = [UInt8](repeating: 0, count: 2)
        maxPoolForward(g, x: x.data, batch: 1, y: y.data, argmax: &argmax)
        XCTAssertEqual(y.array, [5, 8])
        XCTAssertEqual(argmax, [1, 2])  // where in each 2x2 window
    }

    /// Max pooling on channel-blocked maps (as the model keeps them between oneDNN
    /// convolutions) gives exactly the NCHW kernel's output, argmax and dX, the layouts
    /// converted: overlapping windows, uneven edges, and values with many ties (the first
    /// maximum wins in both), on 1 and 2 threads; without an argmax, the same output.
    func testBlockedMaxPoolingMatchesNCHW() {
        defer { setThreads(1) }
        for threads in [1, 2] {
            setThreads(threads)
            for block in [8, 16] {
                for (k, s) in [(2, 2), (3, 2), (3, 1)] {
                    let g = PoolGeometry(channels: 32, height: 9, width: 7, kernel: k, stride: s), batch = 3
                    let name = "block \(block) k\(k) s\(s) threads \(threads)"
                    let x = randomTensor([batch, g.channels, g.height, g.width], seed: 9).array.map { ($0 * 2).rounded() }
                    let dy = randomTensor([batch, g.channels, g.outHeight, g.outWidth], seed: 10).array
                    func pool(_ b: Int) -> (y: [Float], argmax: [UInt8], dx: [Float]) {
                        func blocked(_ v: [Float], _ positions: Int) -> [Float] {
                            reblockMaps(v, channels: g.channels, positions: positions, from: 1, to: b)
                        }
                        func nchw(_ v: [Float], _ positions: Int) -> [Float] {
                            reblockMaps(v, channels: g.channels, positions: positions, from: b, to: 1)
                        }
                        var y = [Float](repeating: 0, count: dy.count), dx = [Float](repeating: 0, count: x.count)
                        var argmax = [UInt8](repeating: 0, count: dy.count)
                        maxPoolForward(g, x: blocked(x, g.height * g.width), batch: batch, y: &y, argmax: &argmax, block: b)
                        maxPoolBackward(g, dy: blocked(dy, g.outHeight * g.outWidth), argmax: argmax, batch: batch, dx: &dx, block: b)
                        let positions = g.outHeight * g.outWidth
                        let argmaxNCHW = nchw(argmax.map(Float.init), positions).map { UInt8($0) }
                        // Without an argmax (inference), the same maxima.
                        var inferred = [Float](repeating: 0, count: dy.count)
                        maxPoolForward(g, x: blocked(x, g.height * g.width), batch: batch, y: &inferred, argmax: nil, block: b)
                        XCTAssertEqual(inferred.map(\.bitPattern), y.map(\.bitPattern), name)
                        return (nchw(y, positions), argmaxNCHW, nchw(dx, g.height * g.width))
                    }
                    let blocked = pool(block), plain = pool(1)
                    XCTAssertEqual(blocked.y.map(\.bitPattern), plain.y.map(\.bitPattern), name)
                    XCTAssertEqual(blocked.argmax, plain.argmax, name)
                    XCTAssertEqual(blocked.dx.map(\.bitPattern), plain.dx.map(\.bitPattern), name)
                }
            }
        }
    }

    /// A convolution's bias gradient from channel-blocked dY is exactly the NCHW one (the same
    /// partial sums in the same order), with and without a tail of positions past a multiple of 8.
    func testBlockedChannelSumsMatchNCHW() {
        for block in [8, 16] {
            for positions in [48, 49, 3] {
                let (batch, channels) = (3, 32)
                let y = randomTensor([batch, channels, positions], seed: 11).array
                let blocked = reblockMaps(y, channels: channels, positions: positions, from: 1, to: block)
                var plainSums = [Float](repeating: 0.5, count: channels), blockedSums = plainSums
                accumulateChannelSums(y, batch: batch, channels: channels, positions: positions, into: &plainSums)
                accumulateChannelSums(blocked, batch: batch, channels: channels, positions: positions, block: block, into: &blockedSums)
                XCTAssertEqual(blockedSums.map(\.bitPattern), plainSums.map(\.bitPattern), "block \(block) positions \(positions)")
            }
        }
    }

    func testBatchNormGradientsAndRunningStatistics() {
        let (n, c, p) = (3, 2, 5)
        let g = BatchNormGeometry(channels: c, positions: p, momentum: 0.1)
        let x = randomTensor([n, c, p], seed: 6, scale: 2)
        let gamma = randomTensor([c], seed: 7), beta = randomTensor([c], seed: 8)
        let rm = Tensor(shape: [c]), rv = Tensor(shape: [c]); rv.fill(1)
        let xhat = Tensor(shape: x.shape), invStd = Tensor(shape: [c]), y = Tensor(shape: x.shape)
        checkGradients("batchnorm", inputs: [x, gamma, beta], forward: {
            batchNormTrainForward(g, x: x.data, batch: n, gamma: gamma.data, beta: beta.data, runningMean: rm.data,
                                  runningVar: rv.data, xhat: xhat.data, invStd: invStd.data, y: y.data)
            return y
        }, backward: { dy in
            let dx = Tensor(shape: x.shape), dg = Tensor(shape: [c]), db = Tensor(shape: [c])
            batchNormBackward(g, dy: dy.data, batch: n, gamma: gamma.data, xhat: xhat.data, invStd: invStd.data,
                              dGamma: dg.data, dBeta: db.data, dx: dx.data)
            return [dx, dg, db]
        })
        // Running statistics after one step from (0, 1): PyTorch's momentum and unbiased variance.
        rm.fill(0); rv.fill(1)
        batchNormTrainForward(g, x: x.data, batch: n, gamma: gamma.data, beta: beta.data, runningMean: rm.data,
                              runningVar: rv.data, xhat: xhat.data, invStd: invStd.data, y: y.data)
        for ch in 0..<c {
            let values = (0..<n).flatMap { b in (0..<p).map { x[(b * c + ch) * p + $0] } }.map(Double.init)
            let mean = values.reduce(0, +) / Double(values.count)
            let unbiased = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)
            XCTAssertEqual(Double(rm[ch]), 0.1 * mean, accuracy: 1e-5)
            XCTAssertEqual(Double(rv[ch]), 0.9 + 0.1 * unbiased, accuracy: 1e-4)
        }
        // Eval mode uses the running statistics.
        batchNormEvalForward(g, x: x.data, batch: n, gamma: gamma.data, beta: beta.data,
                             runningMean: rm.data, runningVar: rv.data, y: y.data)
        let expected = (x[0] - rm[0]) / (rv[0] + 1e-5).squareRoot() * gamma[0] + beta[0]
        XCTAssertEqual(y[0], expected, accuracy: 1e-5)
    }

    func testSoftmaxCrossEntropy() {
        let (batch, classes) = (4, 3)
        let logits = randomTensor([batch, classes], seed: 9)
        let labels: [Int32] = [0, 2, 1, 2]
        let d = Tensor(shape: logits.shape)
        // Against the definition: -log softmax, mean over a global batch of 8.
        let (lossSum, _) = softmaxCrossEntropy(logits: logits.data, labels: labels, batch: batch,
                                               classes: classes, normalizer: 8, dLogits: d.data)
        var expected: Double = 0
        for b in 0..<batch {
            let z = (0..<classes).map { Double(logits[b * classes + $0]) }
            expected += log(z.map { exp($0) }.reduce(0, +)) - z[Int(labels[b])]
        }
        XCTAssertEqual(lossSum, expected, accuracy: 1e-5)
        checkGradients("softmax cross-entropy", inputs: [logits], forward: {
            let out = Tensor(shape: [1])
            out[0] = Float(softmaxCrossEntropy(logits: logits.data, labels: labels, batch: batch, classes: classes,
                                               normalizer: 8, dLogits: nil).lossSum / 8)
            return out
        }, backward: { dy in
            let g = Tensor(shape: logits.shape)
            softmaxCrossEntropy(logits: logits.data, labels: labels, batch: batch, classes: classes, normalizer: 8, dLogits: g.data)
            for i in 0..<g.count { g[i] *= dy[0] }
            return [g]
        })
    }

    /// Two steps of torch.optim.SGD worked out by hand.
    func testSGDMatchesPyTorchDefinition() {
        let h = SGDHyper(lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0.01, nesterov: false)
        var p: [Float] = [1, -2], g: [Float] = [0.5, 0.25], buf: [Float] = [0, 0]
        sgdStep(h, param: &p, grad: g, momentum: &buf, count: 2, firstStep: true)
        // g' = g + 0.01 p = [0.51, 0.23]; buf = g'; p = p - 0.1 g'
        XCTAssertEqual(buf[0], 0.51, accuracy: 1e-6); XCTAssertEqual(buf[1], 0.23, accuracy: 1e-6)
        XCTAssertEqual(p[0], 0.949, accuracy: 1e-6); XCTAssertEqual(p[1], -2.023, accuracy: 1e-6)
        g = [0.1, -0.1]
        sgdStep(h, param: &p, grad: g, momentum: &buf, count: 2, firstStep: false)
        // g' = [0.1 + 0.00949, -0.1 - 0.02023]; buf = 0.9 buf + g'
        let b0: Float = 0.9 * 0.51 + 0.10949, b1: Float = 0.9 * 0.23 - 0.12023
        XCTAssertEqual(buf[0], b0, accuracy: 1e-6); XCTAssertEqual(buf[1], b1, accuracy: 1e-6)
        XCTAssertEqual(p[0], 0.949 - 0.1 * b0, accuracy: 1e-6); XCTAssertEqual(p[1], -2.023 - 0.1 * b1, accuracy: 1e-6)

        // Nesterov with dampening: g = g' + m * buf.
        let n = SGDHyper(lr: 0.5, momentum: 0.5, dampening: 0.2, weightDecay: 0, nesterov: true)
        var q: [Float] = [1], nb: [Float] = [0]
        sgdStep(n, param: &q, grad: [2], momentum: &nb, count: 1, firstStep: true)
        XCTAssertEqual(nb[0], 2); XCTAssertEqual(q[0], 1 - 0.5 * (2 + 0.5 * 2))
        sgdStep(n, param: &q, grad: [1], momentum: &nb, count: 1, firstStep: false)
        XCTAssertEqual(nb[0], 0.5 * 2 + 0.8 * 1, accuracy: 1e-6)
        XCTAssertEqual(q[0], -0.5 - 0.5 * (1 + 0.5 * 1.8), accuracy: 1e-6)
    }

    func testRNGIsReproducibleAndRestorable() {
        var a = RNG(seed: 42)
        _ = (0..<5).map { _ in a.next() }
        var b = RNG(stateWords: a.stateWords)
        XCTAssertEqual((0..<10).map { _ in a.next() }, (0..<10).map { _ in b.next() })
        var c = RNG(seed: 43)
        XCTAssertNotEqual(RNG(seed: 42).stateWords, c.stateWords)
        let normals = (0..<20000).map { _ in Double(c.normal()) }
        let mean = normals.reduce(0, +) / 20000, variance = normals.map { $0 * $0 }.reduce(0, +) / 20000 - mean * mean
        XCTAssertEqual(mean, 0, accuracy: 0.03); XCTAssertEqual(variance, 1, accuracy: 0.05)
        XCTAssertEqual(Set(c.permutation(50)), Set(0..<50))
    }
}
