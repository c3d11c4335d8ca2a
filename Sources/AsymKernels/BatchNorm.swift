/// Batch normalisation over NCHW maps (PyTorch's BatchNorm2d).
///
/// Training normalises with the batch statistics (biased variance) and updates the running
/// statistics with PyTorch's momentum convention: running = (1 - m) * running + m * batch,
/// using the unbiased variance for running_var. Evaluation normalises with the running ones.

package struct BatchNormGeometry: Sendable {
    package var channels, positions: Int  // positions = H*W
    package var epsilon: Float, momentum: Float
    package init(channels: Int, positions: Int, epsilon: Float = 1e-5, momentum: Float = 0.1) {
        self.channels = channels; self.positions = positions
        self.epsilon = epsilon; self.momentum = momentum
    }
}

/// Forward in training mode. Saves `xhat` (the normalised input) and `invStd` per channel
/// for the backward pass, and updates the running statistics.
package func batchNormTrainForward(_ g: BatchNormGeometry, x: UnsafePointer<Float>, batch: Int,
                                  gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                  runningMean: UnsafeMutablePointer<Float>, runningVar: UnsafeMutablePointer<Float>,
                                  xhat: UnsafeMutablePointer<Float>, invStd: UnsafeMutablePointer<Float>,
                                  y: UnsafeMutablePointer<Float>) {
    let C = g.channels, P = g.positions, m = batch * P
    parallelRanges(C) { r in
        for c in r {
            // Two passes in double: the mean, then the centred second moment.
            var sum: Double = 0
            for b in 0..<batch {
                let p = x + (b * C + c) * P
                var s: Float = 0
                for i in 0..<P { s += p[i] }
                sum += Double(s)
            }
            let mean = sum / Double(m)
            var sq: Double = 0
            let meanF = Float(mean)
            for b in 0..<batch {
                let p = x + (b * C + c) * P
                var s: Float = 0
                for i in 0..<P { let d = p[i] - meanF; s += d * d }
                sq += Double(s)
            }
            let variance = sq / Double(m)
            let inv = Float(1 / (variance + Double(g.epsilon)).squareRoot())
            invStd[c] = inv
            let gm = gamma[c], bt = beta[c]
            for b in 0..<batch {
                let o = (b * C + c) * P
                for i in 0..<P {
                    let h = (x[o + i] - meanF) * inv
                    xhat[o + i] = h
                    y[o + i] = gm * h + bt
                }
            }
            let unbiased = m > 1 ? variance * Double(m) / Double(m - 1) : variance
            runningMean[c] = (1 - g.momentum) * runningMean[c] + g.momentum * meanF
            runningVar[c] = (1 - g.momentum) * runningVar[c] + g.momentum * Float(unbiased)
        }
    }
}

/// Forward in evaluation mode, with the running statistics.
package func batchNormEvalForward(_ g: BatchNormGeometry, x: UnsafePointer<Float>, batch: Int,
                                 gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                 runningMean: UnsafePointer<Float>, runningVar: UnsafePointer<Float>,
                                 y: UnsafeMutablePointer<Float>) {
    let C = g.channels, P = g.positions
    parallelRanges(batch * C, grain: 16) { r in
        for bc in r {
            let c = bc % C
            let scale = gamma[c] / (runningVar[c] + g.epsilon).squareRoot()
            let shift = beta[c] - runningMean[c] * scale
            let o = bc * P
            for i in 0..<P { y[o + i] = x[o + i] * scale + shift }
        }
    }
}

/// Backward of the training-mode forward. Accumulates dgamma and dbeta; writes dx.
package func batchNormBackward(_ g: BatchNormGeometry, dy: UnsafePointer<Float>, batch: Int,
                              gamma: UnsafePointer<Float>, xhat: UnsafePointer<Float>,
                              invStd: UnsafePointer<Float>,
                              dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>,
                              dx: UnsafeMutablePointer<Float>) {
    let C = g.channels, P = g.positions, m = Float(batch * P)
    parallelRanges(C) { r in
        for c in r {
            var sdy: Float = 0, sdyh: Float = 0
            for b in 0..<batch {
                let o = (b * C + c) * P
                for i in 0..<P { sdy += dy[o + i]; sdyh += dy[o + i] * xhat[o + i] }
            }
            dGamma[c] += sdyh
            dBeta[c] += sdy
            // dx = gamma * invstd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat))
            let k = gamma[c] * invStd[c] / m
            for b in 0..<batch {
                let o = (b * C + c) * P
                for i in 0..<P { dx[o + i] = k * (m * dy[o + i] - sdy - xhat[o + i] * sdyh) }
            }
        }
    }
}
