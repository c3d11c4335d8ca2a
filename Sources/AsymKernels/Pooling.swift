/// Max and average pooling over NCHW maps, max pooling also over channel-blocked ones (no
/// padding; PyTorch's floor output size).

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

/// Max pooling; records in `argmax` (nil when no backward pass follows) where in its window
/// each maximum is (ki * kernel + kj, a byte: a quarter of an Int32 offset's memory; windows
/// up to `maxPoolLargestKernel`). `block` > 1: the maps and argmaxes are in channel blocks
/// of that size (see `ConvBlocks`).
package func maxPoolForward(_ g: PoolGeometry, x: UnsafePointer<Float>, batch: Int,
                           y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<UInt8>?, block: Int = 1) {
    precondition(g.kernel <= maxPoolLargestKernel, "max pooling window \(g.kernel) is over \(maxPoolLargestKernel)")
    if block > 1 { return maxPoolBlockedForward(g, x: x, batch: batch, y: y, argmax: argmax, block: block) }
    let Ho = g.outHeight, Wo = g.outWidth, plane = g.height * g.width
    parallelRanges(batch * g.channels, grain: 16) { r in
        for bc in r {
            let xp = x + bc * plane, yp = y + bc * Ho * Wo, ap = argmax.map { $0 + bc * Ho * Wo }
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
                    ap?[oh * Wo + ow] = UInt8(at)
                }
            }
        }
    }
}

/// The largest max-pooling window: the argmax is kept as a byte, the position in the window.
package let maxPoolLargestKernel = 16

/// Backward of max pooling: routes each output gradient to its argmax (dx zeroed here), in
/// the forward pass's layout.
package func maxPoolBackward(_ g: PoolGeometry, dy: UnsafePointer<Float>, argmax: UnsafePointer<UInt8>,
                            batch: Int, dx: UnsafeMutablePointer<Float>, block: Int = 1) {
    if block > 1 { return maxPoolBlockedBackward(g, dy: dy, argmax: argmax, batch: batch, dx: dx, block: block) }
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

/// `maxPoolForward` on maps in channel blocks of `b`, over a block's channels side by side:
/// each channel gets the same comparisons in the same order as in NCHW (the first maximum
/// wins), so the results agree exactly. Written as selects on the lanes, which the compiler
/// vectorises (SIMD-typed comparisons compile to scalar code here) when they set only the
/// maximum: measured 2-4x NCHW's loop. With the argmax select as well it does not (about
/// 3x slower than NCHW), so the loop without it is kept for inference.
private func maxPoolBlockedForward(_ g: PoolGeometry, x: UnsafePointer<Float>, batch: Int,
                                   y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<UInt8>?, block b: Int) {
    precondition(g.channels % b == 0, "\(g.channels) channels in blocks of \(b)")
    let Ho = g.outHeight, Wo = g.outWidth, plane = g.height * g.width
    // A unit is one channel block of one sample.
    parallelRanges(batch * g.channels / b, grain: max(1, 16 / b)) { r in
        for unit in r {
            let xp = x + unit * plane * b, yp = y + unit * Ho * Wo * b
            for oh in 0..<Ho {
                for ow in 0..<Wo {
                    let corner = xp + (oh * g.stride * g.width + ow * g.stride) * b, out = (oh * Wo + ow) * b
                    let best = yp + out, at = argmax.map { $0 + unit * Ho * Wo * b + out }
                    best.update(from: corner, count: b)
                    at?.update(repeating: 0, count: b)
                    for ki in 0..<g.kernel {
                        for kj in 0..<g.kernel {
                            let v = corner + (ki * g.width + kj) * b
                            guard let at else {
                                for l in 0..<b { best[l] = v[l] > best[l] ? v[l] : best[l] }
                                continue
                            }
                            let position = UInt8(ki * g.kernel + kj)
                            for l in 0..<b {
                                let larger = v[l] > best[l]
                                best[l] = larger ? v[l] : best[l]
                                at[l] = larger ? position : at[l]
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `maxPoolBackward` on maps in channel blocks of `b`: each input gradient gets the same sum
/// in the same order as in NCHW.
private func maxPoolBlockedBackward(_ g: PoolGeometry, dy: UnsafePointer<Float>, argmax: UnsafePointer<UInt8>,
                                    batch: Int, dx: UnsafeMutablePointer<Float>, block b: Int) {
    precondition(g.channels % b == 0, "\(g.channels) channels in blocks of \(b)")
    let Ho = g.outHeight, Wo = g.outWidth, plane = g.height * g.width
    // Each window position's offset from the window's corner, in the input.
    let offsets = (0..<g.kernel * g.kernel).map { ($0 / g.kernel * g.width + $0 % g.kernel) * b }
    offsets.withUnsafeBufferPointer { offsets in
        parallelRanges(batch * g.channels / b, grain: max(1, 16 / b)) { r in
            for unit in r {
                let dxp = dx + unit * plane * b, dyp = dy + unit * Ho * Wo * b, ap = argmax + unit * Ho * Wo * b
                dxp.update(repeating: 0, count: plane * b)
                for oh in 0..<Ho {
                    for ow in 0..<Wo {
                        let corner = dxp + (oh * g.stride * g.width + ow * g.stride) * b, out = (oh * Wo + ow) * b
                        for l in 0..<b { corner[offsets[Int(ap[out + l])] + l] += dyp[out + l] }
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
