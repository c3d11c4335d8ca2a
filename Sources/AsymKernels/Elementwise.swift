/// Runs `vector` over 8-wide chunks of `range` and `scalar` over the rest. The element-wise
/// loops are written on SIMD8 because the compiler does not vectorise their branchy scalar
/// form on its own.
@inline(__always)
func simd8(_ range: Range<Int>, vector: (Int) -> Void, scalar: (Int) -> Void) {
    var i = range.lowerBound
    while i + 8 <= range.upperBound { vector(i); i += 8 }
    while i < range.upperBound { scalar(i); i += 1 }
}

@inline(__always) func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always) func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
    UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// y = max(x, 0). In place is allowed (y == x).
package func reluForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    parallelRanges(count, grain: 1 << 15) { r in
        simd8(r, vector: { i in let v = load8(x, i); store8(v.replacing(with: 0, where: v .< 0), y, i) },
              scalar: { i in y[i] = max(x[i], 0) })
    }
}

/// The bits of a ReLU's backward pass: bit i of `mask` (eight values a byte, lowest bit
/// first) is set where the rectified output y[i] is positive, a 32nd of y's memory.
package func reluMask(_ y: UnsafePointer<Float>, _ mask: UnsafeMutablePointer<UInt8>, count: Int) {
    let weights = SIMD8<Int32>(1, 2, 4, 8, 16, 32, 64, 128)
    parallelRanges((count + 7) / 8, grain: 1 << 12) { r in
        for b in r {
            let i = b * 8
            if i + 8 <= count {
                // Lanes are -1 (all bits) where y > 0: masking the weights leaves that lane's bit.
                let positive = unsafeBitCast(.!(load8(y, i) .<= 0), to: SIMD8<Int32>.self)
                mask[b] = UInt8((positive & weights).wrappedSum())
            } else {
                var bits: UInt8 = 0
                for j in i..<count where !(y[j] <= 0) { bits |= 1 << UInt8(j - i) }
                mask[b] = bits
            }
        }
    }
}

/// For each byte of a ReLU mask, its eight lanes: all ones where the bit is set, else zero.
private let reluLanes: [SIMD8<UInt32>] = (0..<256).map { byte in
    SIMD8<UInt32>((0..<8).map { byte >> $0 & 1 == 1 ? UInt32.max : 0 })
}

/// dx = dy where the forward output was positive (`mask` from `reluMask`), else 0: dY's
/// bits and-ed with the mask byte's lanes (a table), eight values at a time. In place is
/// allowed (dx == dy).
package func reluBackward(mask: UnsafePointer<UInt8>, dy: UnsafePointer<Float>,
                         dx: UnsafeMutablePointer<Float>, count: Int) {
    reluLanes.withUnsafeBufferPointer { lanes in
        parallelRanges((count + 7) / 8, grain: 1 << 12) { r in
            for b in r {
                let i = b * 8
                if i + 8 <= count {
                    let kept = UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD8<UInt32>.self) & lanes[Int(mask[b])]
                    UnsafeMutableRawPointer(dx + i).storeBytes(of: kept, as: SIMD8<UInt32>.self)
                } else {
                    for j in i..<count { dx[j] = mask[b] & (1 << UInt8(j - i)) != 0 ? dy[j] : 0 }
                }
            }
        }
    }
}

/// z = a + b (residual add). In place is allowed.
package func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ z: UnsafeMutablePointer<Float>, count: Int) {
    parallelRanges(count, grain: 1 << 15) { r in
        simd8(r, vector: { i in store8(load8(a, i) + load8(b, i), z, i) }, scalar: { i in z[i] = a[i] + b[i] })
    }
}

/// y += x
package func accumulate(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    parallelRanges(count, grain: 1 << 15) { r in
        simd8(r, vector: { i in store8(load8(y, i) + load8(x, i), y, i) }, scalar: { i in y[i] += x[i] })
    }
}

/// y += c (one value added to a row, e.g. a channel's bias).
package func addScalar(_ c: Float, to y: UnsafeMutablePointer<Float>, count: Int) {
    let v = SIMD8<Float>(repeating: c)
    simd8(0..<count, vector: { i in store8(load8(y, i) + v, y, i) }, scalar: { i in y[i] += c })
}

/// sums[c] += the sum of channel c of `y` [batch, channels, positions], NCHW or in channel
/// blocks of `block` (see `ConvBlocks`): the bias gradient of a convolution from its output
/// gradient. Both layouts add the same terms in the same order.
package func accumulateChannelSums(_ y: UnsafePointer<Float>, batch: Int, channels: Int, positions: Int,
                                  block: Int = 1, into sums: UnsafeMutablePointer<Float>) {
    if block > 1 { return accumulateBlockedChannelSums(y, batch: batch, channels: channels, positions: positions, block: block, into: sums) }
    // Eight partial sums per row: a single running float sum is one long dependency chain
    // (an add's latency per element), and the compiler may not reorder it on its own.
    for s in 0..<batch {
        for c in 0..<channels {
            let row = y + (s * channels + c) * positions
            var lanes = SIMD8<Float>(repeating: 0)
            var tail: Float = 0
            simd8(0..<positions, vector: { p in lanes += load8(row, p) }, scalar: { p in tail += row[p] })
            sums[c] += lanes.sum() + tail
        }
    }
}

/// `accumulateChannelSums` over maps in channel blocks of `b`, with NCHW's eight partial sums
/// per channel (position p in sum p % 8), its scalar tail and its final additions, kept for
/// the b channels of a block side by side.
private func accumulateBlockedChannelSums(_ y: UnsafePointer<Float>, batch: Int, channels: Int, positions: Int,
                                          block b: Int, into sums: UnsafeMutablePointer<Float>) {
    precondition(channels % b == 0, "\(channels) channels in blocks of \(b)")
    let whole = positions - positions % 8
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 9 * b) { buffer in
        // partial[j * b + l]: lane l's partial sum j; tail[l]: its tail.
        let partial = buffer.baseAddress!, tail = partial + 8 * b
        for s in 0..<batch {
            for c0 in stride(from: 0, to: channels, by: b) {
                let group = y + (s * channels + c0) * positions
                partial.update(repeating: 0, count: 9 * b)
                for p in 0..<whole {
                    let sum = partial + p % 8 * b, row = group + p * b
                    for l in 0..<b { sum[l] += row[l] }
                }
                for p in whole..<positions {
                    let row = group + p * b
                    for l in 0..<b { tail[l] += row[l] }
                }
                for l in 0..<b {
                    var lanes = SIMD8<Float>()
                    for j in 0..<8 { lanes[j] = partial[j * b + l] }
                    sums[c0 + l] += lanes.sum() + tail[l]
                }
            }
        }
    }
}

/// y = max(y + low, 0) over one row: the merge of a split convolution's two shares fused with
/// the ReLU after it (one pass instead of a merge pass and a ReLU pass).
package func addReLU(_ low: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    simd8(0..<count, vector: { i in
        let v = load8(y, i) + load8(low, i)
        store8(v.replacing(with: 0, where: v .< 0), y, i)
    }, scalar: { i in y[i] = max(y[i] + low[i], 0) })
}

/// Sum of squares, accumulated in double so that large maps do not lose precision.
package func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
    var s: Double = 0
    var i = 0
    while i < count {
        let n = min(4096, count - i)
        var f: Float = 0
        for j in i..<(i + n) { f += x[j] * x[j] }
        s += Double(f)
        i += n
    }
    return s
}

/// y += x, returning the sum of squares of the new y (in double, per 8-lane partial sums).
package func addAndSumSquares(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) -> Double {
    var total = 0.0
    var i = 0
    while i < count {
        let n = min(4096, count - i)
        var lanes = SIMD8<Float>(repeating: 0)
        var tail: Float = 0
        simd8(i..<(i + n), vector: { j in
            let v = load8(y, j) + load8(x, j)
            store8(v, y, j)
            lanes += v * v
        }, scalar: { j in
            y[j] += x[j]
            tail += y[j] * y[j]
        })
        total += Double(lanes.sum() + tail)
        i += n
    }
    return total
}

/// out_j = sum_s coefficients[j * sources.count + s] * sources[s], for every output row j, each
/// `count` values long: the small dense mixings of masking (a group's combinations from its
/// samples and noise, and back). One pass writes each output; tiles of 2048 values keep the
/// output in L1 while the sources are added in, where a GEMM with k = 1 or 2 would pack its
/// operands first (3x slower here).
package func mixRows(_ coefficients: UnsafePointer<Float>, sources: [UnsafePointer<Float>], into outputs: [UnsafeMutablePointer<Float>],
                     count: Int) {
    let tile = 2048, n = sources.count
    for first in stride(from: 0, to: count, by: tile) {
        let r = first..<min(count, first + tile)
        for (j, out) in outputs.enumerated() {
            let c0 = coefficients[j * n], x0 = sources[0]
            simd8(r, vector: { i in store8(c0 * load8(x0, i), out, i) }, scalar: { i in out[i] = c0 * x0[i] })
            for s in 1..<max(n, 1) {
                let c = coefficients[j * n + s], x = sources[s]
                simd8(r, vector: { i in store8(load8(out, i) + c * load8(x, i), out, i) }, scalar: { i in out[i] += c * x[i] })
            }
        }
    }
}
