import AsymKernels

// Kernels of the integrity checks (design §8). Each probe is a convolution with one output
// (or input) channel, computed tap by tap: one GEMM gives, for every tap of the kernel, the
// channel sum at every position, and `shiftedSum` adds the taps at their offsets. Unlike
// im2col + GEMM, no C*k*k x P patch matrix is written or read.

/// Finishes a convolution computed tap by tap: for every tap (ki, kj) of `g`'s kernel, output
/// position (oh, ow) meets input position (ih, iw) = (oh*stride - padding + ki, ow*stride -
/// padding + kj); pairs whose input position lies in the padding are skipped.
///
/// * Forward (`transposed: false`): out[oh, ow] += taps[t][ih, iw], taps on the input grid
///   (H x W) and `out` on the output grid: with taps[t] = sum_c w[c, t] x[c] this is
///   conv(x, w) for one output channel.
/// * Transposed: out[ih, iw] += taps[t][oh, ow], taps on the output grid and `out` on the input
///   grid: with taps[t] = sum_o w[o, t] dy[o] this is conv_transpose(dy, w), one input channel.
///
/// Tap t = ki * k + kj starts at taps + t * tapStride; a stride of 0 adds one map at every tap
/// (a box sum: patch norms from a map of squares). Accumulates into `out`.
package func shiftedSum<T: TapValue>(_ g: ConvGeometry, taps: UnsafePointer<T>, tapStride: Int,
                                    into out: UnsafeMutablePointer<T>, transposed: Bool) {
    let k = g.kernel, s = g.stride, pad = g.padding, W = g.width, Wo = g.outWidth
    // Output rows (columns) whose input row (column) oh*s - pad + ki lies inside the map.
    func valid(_ tap: Int, size: Int, outSize: Int) -> Range<Int> {
        let lo = max(0, (pad - tap + s - 1) / s), hi = min(outSize, (size + pad - tap + s - 1) / s)
        return lo..<max(lo, hi)
    }
    for ki in 0..<k {
        let rows = valid(ki, size: g.height, outSize: g.outHeight)
        for kj in 0..<k {
            let cols = valid(kj, size: W, outSize: Wo)
            if rows.isEmpty || cols.isEmpty { continue }
            let tap = taps + (ki * k + kj) * tapStride
            for oh in rows {
                // Output row oh meets input row ih; column ow meets input column ow*s - pad + kj.
                let o = oh * Wo, i = (oh * s - pad + ki) * W - pad + kj
                let d = out + (transposed ? i : o), r = tap + (transposed ? o : i)
                if s == 1 {
                    T.addRow(r + cols.lowerBound, into: d + cols.lowerBound, count: cols.count)
                } else if transposed {
                    for ow in cols { d[ow * s] += r[ow] }
                } else {
                    for ow in cols { d[ow] += r[ow * s] }
                }
            }
        }
    }
}

/// Reads one float of every 64-byte line of p[0..<count], in order, and returns their sum (the
/// caller keeps it, so that the loads stay). One sequential stream runs at memory bandwidth;
/// the checks' loops over four rows at once, with their arithmetic in between, reached about a
/// third of it on data not in cache (measured on a 16 MB tensor), and run 2.5 to 3 times as
/// fast once it is in cache.
func pullIntoCache(_ p: UnsafePointer<Float>, count: Int) -> Float {
    var a: Float = 0, b: Float = 0, i = 0
    while i + 32 <= count { a += p[i]; b += p[i + 16]; i += 32 }
    if i < count { a += p[i] }
    return a + b
}

// MARK: Vector loops
//
// Written on SIMD8: the compiler does not vectorise float reductions (their order is fixed)
// or Swift's max/abs on its own. Maxima are taken of trusted values only (no NaN).

@inline(__always) private func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always) private func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
    UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
}

@inline(__always) private func magnitude8(_ v: SIMD8<Float>) -> SIMD8<Float> {
    unsafeBitCast(unsafeBitCast(v, to: SIMD8<UInt32>.self) & SIMD8(repeating: 0x7FFF_FFFF), to: SIMD8<Float>.self)
}

/// Lane-wise max for data without NaN (the stdlib's pointwiseMax is a scalar loop, 7x slower).
@inline(__always) private func max8(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    a.replacing(with: b, where: b .> a)
}

/// The largest lane (the stdlib's max() takes 4x as long: rows of 16 values would spend most
/// of their time there).
@inline(__always) private func largest(_ v: SIMD8<Float>) -> Float {
    let h = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
    let q = h.lowHalf.replacing(with: h.highHalf, where: h.highHalf .> h.lowHalf)
    return q[1] > q[0] ? q[1] : q[0]
}

/// d[j] += r[j] (the compiler does not vectorise it: d and r might overlap).
/// The values `shiftedSum` adds: float probes, and the double probe of the share check
/// with wide shares (`IntegrityChecker.wideShares`).
package protocol TapValue: FloatingPoint {
    /// d[0..<count] += r[0..<count]
    static func addRow(_ r: UnsafePointer<Self>, into d: UnsafeMutablePointer<Self>, count: Int)
}

extension Float: TapValue {
    @inline(__always) package static func addRow(_ r: UnsafePointer<Float>, into d: UnsafeMutablePointer<Float>, count: Int) {
        var j = 0
        while j + 8 <= count { store8(load8(d, j) + load8(r, j), d, j); j += 8 }
        while j < count { d[j] += r[j]; j += 1 }
    }
}

extension Double: TapValue {
    @inline(__always) package static func addRow(_ r: UnsafePointer<Double>, into d: UnsafeMutablePointer<Double>, count: Int) {
        for j in 0..<count { d[j] += r[j] }
    }
}

/// sum_p x[p] * q[p] in double, x float (a row of dY), q double (the wide share check's probe).
func wideDot(_ x: UnsafePointer<Float>, _ q: UnsafePointer<Double>, count: Int) -> Double {
    var s4 = SIMD4<Double>(repeating: 0), s: Double = 0, j = 0
    while j + 4 <= count {
        let xv = SIMD4<Double>(Double(x[j]), Double(x[j + 1]), Double(x[j + 2]), Double(x[j + 3]))
        s4 += xv * UnsafeRawPointer(q + j).loadUnaligned(as: SIMD4<Double>.self)
        j += 4
    }
    while j < count { s += Double(x[j]) * q[j]; j += 1 }
    return s + s4.sum()
}

/// The largest |x_j| (x trusted: no NaN).
func maxMagnitude(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var m8 = SIMD8<Float>(repeating: 0), m: Float = 0, j = 0
    while j + 8 <= count { m8 = max8(m8, magnitude8(load8(x, j))); j += 8 }
    while j < count { m = max(m, abs(x[j])); j += 1 }
    return max(m, largest(m8))
}

/// acc[j] = max(acc[j], |x_j|).
func accumulateMagnitudeMax(_ x: UnsafePointer<Float>, into acc: UnsafeMutablePointer<Float>, count: Int) {
    var j = 0
    while j + 8 <= count { store8(max8(load8(acc, j), magnitude8(load8(x, j))), acc, j); j += 8 }
    while j < count { acc[j] = max(acc[j], abs(x[j])); j += 1 }
}

/// (sum_j v_j x_j, sum_j v_j^2 x_j^2): a random combination of an untrusted row, and what its
/// rounding depends on. NaN in x propagates.
func combination(_ x: UnsafePointer<Float>, weights v: UnsafePointer<Float>, count: Int) -> (sum: Float, squares: Float) {
    var s8 = SIMD8<Float>(repeating: 0), q8 = s8, s: Float = 0, q: Float = 0, j = 0
    while j + 8 <= count {
        let t = load8(v, j) * load8(x, j)
        s8 += t; q8 += t * t
        j += 8
    }
    while j < count { let t = v[j] * x[j]; s += t; q += t * t; j += 1 }
    return (s + s8.sum(), q + q8.sum())
}

/// The same for a wide share's row, high + low parts: the sum in double, the squares (which
/// only scale a tolerance) in float.
func wideCombination(_ high: UnsafePointer<Float>, _ low: UnsafePointer<Float>, weights v: UnsafePointer<Float>,
                     count: Int) -> (sum: Double, squares: Float) {
    var s: Double = 0, q: Float = 0
    for j in 0..<count {
        s += (Double(high[j]) + Double(low[j])) * Double(v[j])
        let t = v[j] * high[j]
        q += t * t
    }
    return (s, q)
}

/// sum[p] = sum_i v_i rows[i][p] and squares[p] = sum_i v_i^2 rows[i][p]^2 over `count` rows
/// of `length` values: the combination that a check compares, per position. Rows go four at
/// a time (a quarter of the loads and stores of `sum` and `squares`).
func combineRows(_ rows: UnsafePointer<Float>, count: Int, length: Int, weights v: UnsafePointer<Float>,
                 sum: UnsafeMutablePointer<Float>, squares: UnsafeMutablePointer<Float>) {
    sum.update(repeating: 0, count: length)
    squares.update(repeating: 0, count: length)
    var i = 0
    while i + 4 <= count {
        let r0 = rows + i * length, r1 = r0 + length, r2 = r1 + length, r3 = r2 + length
        let a0 = v[i], a1 = v[i + 1], a2 = v[i + 2], a3 = v[i + 3]
        let w0 = SIMD8<Float>(repeating: a0), w1 = SIMD8<Float>(repeating: a1)
        let w2 = SIMD8<Float>(repeating: a2), w3 = SIMD8<Float>(repeating: a3)
        var p = 0
        while p + 8 <= length {
            let t0 = w0 * load8(r0, p), t1 = w1 * load8(r1, p), t2 = w2 * load8(r2, p), t3 = w3 * load8(r3, p)
            store8(load8(sum, p) + ((t0 + t1) + (t2 + t3)), sum, p)
            store8(load8(squares, p) + ((t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)), squares, p)
            p += 8
        }
        while p < length {
            let t0 = a0 * r0[p], t1 = a1 * r1[p], t2 = a2 * r2[p], t3 = a3 * r3[p]
            sum[p] += (t0 + t1) + (t2 + t3)
            squares[p] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
            p += 1
        }
        i += 4
    }
    while i < count {
        let row = rows + i * length, w = v[i], w8 = SIMD8<Float>(repeating: w)
        var p = 0
        while p + 8 <= length {
            let t = w8 * load8(row, p)
            store8(load8(sum, p) + t, sum, p)
            store8(load8(squares, p) + t * t, squares, p)
            p += 8
        }
        while p < length { let t = w * row[p]; sum[p] += t; squares[p] += t * t; p += 1 }
        i += 1
    }
}

/// map[p] += sum_i rows[i][p]^2 over `count` rows of `length` values (trusted: no NaN), with
/// sums[i] = sum_p rows[i][p]^2 (per-row energies) and maxima[i] = max_p |rows[i][p]| when
/// given. One pass, rows four at a time.
func accumulateSquares(_ rows: UnsafePointer<Float>, count: Int, length: Int, into map: UnsafeMutablePointer<Float>,
                       sums: UnsafeMutablePointer<Float>?, maxima: UnsafeMutablePointer<Float>?) {
    switch (sums, maxima) {
    case (let sums?, nil): squares(rows, count: count, length: length, into: map, sums: sums, maxima: nil, sum: true, max: false)
    case (nil, let maxima?): squares(rows, count: count, length: length, into: map, sums: nil, maxima: maxima, sum: false, max: true)
    default: squares(rows, count: count, length: length, into: map, sums: sums, maxima: maxima, sum: sums != nil, max: maxima != nil)
    }
}

/// accumulateSquares, specialised by its call sites' constant `sum` and `max` (an unused
/// accumulator then costs nothing).
@inline(__always)
private func squares(_ rows: UnsafePointer<Float>, count: Int, length: Int, into map: UnsafeMutablePointer<Float>,
                     sums: UnsafeMutablePointer<Float>?, maxima: UnsafeMutablePointer<Float>?, sum: Bool, max track: Bool) {
    let z = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 4 <= count {
        let r0 = rows + i * length, r1 = r0 + length, r2 = r1 + length, r3 = r2 + length
        var e0 = z, e1 = z, e2 = z, e3 = z, m0 = z, m1 = z, m2 = z, m3 = z, p = 0
        while p + 8 <= length {
            let x0 = load8(r0, p), x1 = load8(r1, p), x2 = load8(r2, p), x3 = load8(r3, p)
            let s0 = x0 * x0, s1 = x1 * x1, s2 = x2 * x2, s3 = x3 * x3
            store8(load8(map, p) + ((s0 + s1) + (s2 + s3)), map, p)
            if sum { e0 += s0; e1 += s1; e2 += s2; e3 += s3 }
            if track {
                m0 = max8(m0, magnitude8(x0)); m1 = max8(m1, magnitude8(x1))
                m2 = max8(m2, magnitude8(x2)); m3 = max8(m3, magnitude8(x3))
            }
            p += 8
        }
        var e = (e0.sum(), e1.sum(), e2.sum(), e3.sum())
        var m: (Float, Float, Float, Float) = track ? (largest(m0), largest(m1), largest(m2), largest(m3)) : (0, 0, 0, 0)
        while p < length {
            let x0 = r0[p], x1 = r1[p], x2 = r2[p], x3 = r3[p]
            map[p] += (x0 * x0 + x1 * x1) + (x2 * x2 + x3 * x3)
            e.0 += x0 * x0; e.1 += x1 * x1; e.2 += x2 * x2; e.3 += x3 * x3
            m = (Swift.max(m.0, abs(x0)), Swift.max(m.1, abs(x1)), Swift.max(m.2, abs(x2)), Swift.max(m.3, abs(x3)))
            p += 1
        }
        if let sums { (sums[i], sums[i + 1], sums[i + 2], sums[i + 3]) = e }
        if let maxima { (maxima[i], maxima[i + 1], maxima[i + 2], maxima[i + 3]) = m }
        i += 4
    }
    while i < count {
        let row = rows + i * length
        var e8 = z, m8 = z, e: Float = 0, m: Float = 0, p = 0
        while p + 8 <= length {
            let x = load8(row, p), x2 = x * x
            store8(load8(map, p) + x2, map, p)
            if sum { e8 += x2 }
            if track { m8 = max8(m8, magnitude8(x)) }
            p += 8
        }
        while p < length { let x = row[p]; map[p] += x * x; e += x * x; m = Swift.max(m, abs(x)); p += 1 }
        sums?[i] = e + e8.sum()
        maxima?[i] = Swift.max(m, largest(m8))
        i += 1
    }
}

/// out[tap] = sum_c t_c row[c * taps + tap]: one output channel's row of W (C x k*k) times t,
/// for the input-gradient probe's kernel W t. Sums stay in registers, two chains each.
func transposedCombination(_ row: UnsafePointer<Float>, weights t: UnsafePointer<Float>, channels: Int, taps: Int,
                                  into out: UnsafeMutablePointer<Float>) {
    var j0 = 0
    while j0 + 8 <= taps {
        var a = SIMD8<Float>(repeating: 0), b = a, c = 0
        while c + 2 <= channels {
            a += t[c] * load8(row + c * taps, j0)
            b += t[c + 1] * load8(row + (c + 1) * taps, j0)
            c += 2
        }
        if c < channels { a += t[c] * load8(row + c * taps, j0) }
        store8(a + b, out, j0)
        j0 += 8
    }
    for j in j0..<taps {
        var a: Float = 0, b: Float = 0, d: Float = 0, e: Float = 0, c = 0
        while c + 4 <= channels {
            a += t[c] * row[c * taps + j]; b += t[c + 1] * row[(c + 1) * taps + j]
            d += t[c + 2] * row[(c + 2) * taps + j]; e += t[c + 3] * row[(c + 3) * taps + j]
            c += 4
        }
        while c < channels { a += t[c] * row[c * taps + j]; c += 1 }
        out[j] = (a + b) + (d + e)
    }
}

/// c = a b for the probes: a (m x k) is a few rows (m = k*k or 2 k*k), b (k x n, leading
/// dimension ldb) a sample's channels, c m x n. In column blocks of at most 10^6 / (m k)
/// columns: OpenBLAS multiplies products of up to 100^3 multiply-adds without packing b, about
/// twice as fast for so few rows (measured: 18 x 64 times 64 x 1024 at 44 GFLOP/s whole, 85 in
/// two blocks).
func probeProduct(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, ldb: Int,
                  c: UnsafeMutablePointer<Float>) {
    let parts = max(1, (m * n * k + 999_999) / 1_000_000)
    let width = min(n, ((n + parts - 1) / parts + 15) / 16 * 16)
    var j = 0
    while j < n {
        let w = min(width, n - j)
        BLAS.gemm(m: m, n: w, k: k, a: a, lda: k, b: b + j, ldb: ldb, c: c + j, ldc: n)
        j += w
    }
}

/// sqrt(x) within 3e-7 relative for normal x >= 0 (2.1e-7 measured over the whole range), from
/// the bit-trick guess of 1/sqrt(x) and three Newton steps: Swift's exact square root of a
/// SIMD vector is one scalar instruction per lane, four times as slow.
@inline(__always) private func approximateSquareRoot(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let bits = unsafeBitCast(x, to: SIMD8<UInt32>.self)
    var y = unsafeBitCast(SIMD8<UInt32>(repeating: 0x5F37_59DF) &- (bits &>> 1), to: SIMD8<Float>.self)
    let h = 0.5 * x
    y = y * (1.5 - h * y * y)
    y = y * (1.5 - h * y * y)
    y = y * (1.5 - h * y * y)
    return x * y
}

/// The largest |sum_p - reference_p| / allowed_p over `count` positions, with allowed_p =
/// perScale sqrt(energy_p) + perWeighted sqrt(squares_p) (as RoundingModel.Scales), to within
/// 1e-6 relative; infinity where anything is NaN or infinite, or a square root's argument is
/// subnormal (there the estimate is not that close). A cheap bound that lets the exact scan
/// skip a sample whose values cannot beat the worst one so far.
func estimatedWorstRatio(sum: UnsafePointer<Float>, reference: UnsafePointer<Float>, energy: UnsafePointer<Float>,
                         squares: UnsafePointer<Float>, count: Int, perScale: Float, perWeighted: Float) -> Float {
    let inf = SIMD8<Float>(repeating: .infinity), least = SIMD8<Float>(repeating: .leastNormalMagnitude)
    let zero = SIMD8<Float>(repeating: 0)
    var worst8 = zero, worst: Float = 0, p = 0
    while p + 8 <= count {
        let e = load8(energy, p), q = load8(squares, p)
        let allowed = perScale * approximateSquareRoot(e) + perWeighted * approximateSquareRoot(q)
        var r = magnitude8(load8(sum, p) - load8(reference, p)) / allowed.replacing(with: least, where: allowed .< least)
        let exact = (r .< inf) .& (allowed .< inf) .& ((e .== zero) .| (e .>= least)) .& ((q .== zero) .| (q .>= least))
        r.replace(with: inf, where: .!exact)
        worst8 = max8(worst8, r)
        p += 8
    }
    while p < count {
        let allowed = perScale * energy[p].squareRoot() + perWeighted * squares[p].squareRoot()
        let r = abs(sum[p] - reference[p]) / max(allowed, .leastNormalMagnitude)
        worst = r.isFinite && allowed.isFinite ? max(worst, r) : .infinity
        p += 1
    }
    return max(worst, largest(worst8))
}
