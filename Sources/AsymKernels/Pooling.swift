/// Max and average pooling over NCHW maps (no padding; PyTorch's floor output size).

package struct PoolGeometry: Equatable, Sendable {
    package var channels, height, width, kernel, stride: Int
    package init(channels: Int, height: Int, width: Int, kernel: Int, stride: Int) {
        self.channels = channels; self.height = height; self.width = width
        self.kernel = kernel; self.stride = stride
    }
    package var outHeight: Int { (height - kernel) / stride + 1 }
    package var outWidth: Int { (width - kernel) / stride + 1 }
    package var inputSize: Int { channels * height * width }
    package var outputSize: Int { channels * outHeight * outWidth }
}

/// Max pooling; records in `argmax` where in its window each maximum is (ki * kernel + kj, a
/// byte: a quarter of an Int32 offset's memory; windows up to `maxPoolLargestKernel`).
package func maxPoolForward(_ g: PoolGeometry, x: UnsafePointer<Float>, batch: Int,
                           y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<UInt8>) {
    precondition(g.kernel <= maxPoolLargestKernel, "max pooling window \(g.kernel) is over \(maxPoolLargestKernel)")
    let Ho = g.outHeight, Wo = g.outWidth, plane = g.height * g.width
    parallelRanges(batch * g.channels, grain: 16) { r in
        for bc in r {
            let xp = x + bc * plane, yp = y + bc * Ho * Wo, ap = argmax + bc * Ho * Wo
            for oh in 0..<Ho {
                for ow in 0..<Wo {
                    // The first maximum wins ties, as in PyTorch.
                    let corner = oh * g.stride * g.width + ow * g.stride
                    var at = 0, best = xp[corner]
                    for ki in 0..<g.kernel {
                        let row = corner + ki * g.width
                        for kj in 0..<g.kernel where xp[row + kj] > best {
                            best = xp[row + kj]; at = ki * g.kernel + kj
                        }
                    }
                    yp[oh * Wo + ow] = best
                    ap[oh * Wo + ow] = UInt8(at)
                }
            }
        }
    }
}

/// The largest max-pooling window: the argmax is kept as a byte, the position in the window.
package let maxPoolLargestKernel = 16

/// Backward of max pooling: routes each output gradient to its argmax (dx zeroed here).
package func maxPoolBackward(_ g: PoolGeometry, dy: UnsafePointer<Float>, argmax: UnsafePointer<UInt8>,
                            batch: Int, dx: UnsafeMutablePointer<Float>) {
    let Ho = g.outHeight, Wo = g.outWidth, plane = g.height * g.width
    // Each window position's offset from the window's corner, in the input plane.
    let offsets = (0..<g.kernel * g.kernel).map { $0 / g.kernel * g.width + $0 % g.kernel }
    offsets.withUnsafeBufferPointer { offsets in
        parallelRanges(batch * g.channels, grain: 16) { r in
            for bc in r {
                let dxp = dx + bc * plane, dyp = dy + bc * Ho * Wo, ap = argmax + bc * Ho * Wo
                dxp.update(repeating: 0, count: plane)
                for oh in 0..<Ho {
                    for ow in 0..<Wo {
                        dxp[oh * g.stride * g.width + ow * g.stride + offsets[Int(ap[oh * Wo + ow])]] += dyp[oh * Wo + ow]
                    }
                }
            }
        }
    }
}

package func avgPoolForward(_ g: PoolGeometry, x: UnsafePointer<Float>, batch: Int,
                           y: UnsafeMutablePointer<Float>) {
    let Ho = g.outHeight, Wo = g.outWidth, plane = g.height * g.width
    let scale = 1 / Float(g.kernel * g.kernel)
    parallelRanges(batch * g.channels, grain: 16) { r in
        for bc in r {
            let xp = x + bc * plane, yp = y + bc * Ho * Wo
            for oh in 0..<Ho {
                for ow in 0..<Wo {
                    var s: Float = 0
                    for ki in 0..<g.kernel {
                        let row = xp + (oh * g.stride + ki) * g.width + ow * g.stride
                        for kj in 0..<g.kernel { s += row[kj] }
                    }
                    yp[oh * Wo + ow] = s * scale
                }
            }
        }
    }
}

package func avgPoolBackward(_ g: PoolGeometry, dy: UnsafePointer<Float>, batch: Int,
                            dx: UnsafeMutablePointer<Float>) {
    let Ho = g.outHeight, Wo = g.outWidth, plane = g.height * g.width
    let scale = 1 / Float(g.kernel * g.kernel)
    parallelRanges(batch * g.channels, grain: 16) { r in
        for bc in r {
            let dxp = dx + bc * plane, dyp = dy + bc * Ho * Wo
            dxp.update(repeating: 0, count: plane)
            for oh in 0..<Ho {
                for ow in 0..<Wo {
                    let d = dyp[oh * Wo + ow] * scale
                    for ki in 0..<g.kernel {
                        let row = dxp + (oh * g.stride + ki) * g.width + ow * g.stride
                        for kj in 0..<g.kernel { row[kj] += d }
                    }
                }
            }
        }
    }
}
