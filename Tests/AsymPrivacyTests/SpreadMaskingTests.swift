import AsymKernels
import AsymPrivacy
import AsymSplit
import AsymTestSupport
import XCTest

/// Rows `rows` of a row-major matrix of `width` columns, columns `columns`.
private func submatrix(_ m: [Float], width: Int, rows: [Int], columns: Range<Int>) -> [[Double]] {
    rows.map { r in columns.map { Double(m[r * width + $0]) } }
}

/// Gram-Schmidt on `rows`: an orthonormal basis of their span and, per row, its distance from
/// the span of the rows before it (0 when it depends on them).
private func gramSchmidt(_ rows: [[Double]]) -> (basis: [[Double]], residuals: [Double]) {
    var basis: [[Double]] = [], residuals: [Double] = []
    for row in rows {
        var v = row
        for _ in 0..<2 { v = remainder(v, basis) }
        let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        residuals.append(norm)
        if norm > 1e-9 { basis.append(v.map { $0 / norm }) }
    }
    return (basis, residuals)
}

/// `v` less its projection on the orthonormal `basis`.
private func remainder(_ v: [Double], _ basis: [[Double]]) -> [Double] {
    var v = v
    for e in basis {
        let d = zip(v, e).reduce(0) { $0 + $1.0 * $1.1 }
        for c in v.indices { v[c] -= d * e[c] }
    }
    return v
}

/// The smallest distance of a row, scaled to unit length, from the span of the rows before it:
/// 0 when the rows are linearly dependent, i.e. some combination of them is zero; independent
/// of each row's scale (the backward rows carry secret weights 1/g).
private func smallestGramSchmidtResidual(_ rows: [[Double]]) -> Double {
    gramSchmidt(rows.map { row in
        let length = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return row.map { $0 / max(length, 1e-300) }
    }).residuals.min()!
}

/// ||t - proj(t)|| / ||t||: how far `t` lies from the span of `rows` (least squares).
private func distanceFromSpan(_ t: ArraySlice<Float>, _ rows: [ArraySlice<Float>]) -> Double {
    let basis = gramSchmidt(rows.map { $0.map(Double.init) }).basis
    let r = remainder(remainder(t.map(Double.init), basis), basis)
    return (r.reduce(0) { $0 + $1 * $1 } / t.reduce(0) { $0 + Double($1) * Double($1) }).squareRoot()
}

final class SpreadMaskingTests: XCTestCase {
    /// Spread masking (3K combinations per group, K noise vectors per side) equals unmasked
    /// per tensor (y, dX, dW, db) for K = 1, 2, 3 and both bases, with groups that do and do
    /// not divide the batch, placed for 3 untrusted ranks (in one process) and for 4.
    func testSpreadMaskingEqualsUnmasked() {
        setThreads(1)
        var rng = RNG(seed: 31)
        var worst: Float = 0
        for (trial, (batch, K, members)) in [(4, 1, nil), (5, 2, nil), (6, 3, nil), (5, 3, 4), (7, 2, 4), (3, 1, 5)].enumerated() {
            for basis in [SplitSettings.Basis.sample, .batch] {
                let g = ConvGeometry(inChannels: 6, height: 7, width: 7, outChannels: 5, kernel: 3, stride: trial % 2 + 1, padding: 1)
                let settings = SplitSettings(maxRank: 2, basis: basis)
                let x = lowRankMaps(batch: batch, channels: 6, positions: 49, rank: 2, noise: 0.3, &rng)
                x.reshape([batch, 6, 7, 7])
                let w = randomTensor([5, 6, 3, 3], &rng), b = randomTensor([5], &rng)
                let dy = randomTensor([batch, 5, g.outHeight, g.outWidth], &rng)
                let ref = unmasked(g, settings: settings, x: x, dy: dy, w: w, b: b, batch: batch)
                let recorder = RecordingExecutor()
                recorder.members = members
                let (results, mask) = masked(g, settings: settings, K: K, sigma: 3, x: x, dy: dy, w: w, b: b, batch: batch,
                                             spread: true, under: recorder)
                let errors = results.errors(against: ref)
                XCTAssertLessThan(errors.max()!, 1e-4, "batch \(batch) K \(K) \(basis) members \(members ?? 3): [y, dx, dw, db] \(errors)")
                worst = max(worst, errors.max()!)
                // 3k combinations per group of k crossed, forward and backward, placed for the members.
                let groups = MaskingExecutor.groupSizes(batch: batch, groupSize: K)
                XCTAssertEqual(recorder.residuals[0].count, 3 * batch * g.inputSize)
                XCTAssertEqual(recorder.outputGrads[0].count, 3 * batch * g.outputSize)
                XCTAssertEqual(mask.lastMixing(layer: 0).map(\.combinations), groups.map { 3 * $0 })
                XCTAssertEqual(recorder.placements[0]?.parts.count, members ?? 3)
                XCTAssertEqual(recorder.placements[0], recorder.backwardPlacements[0])
            }
        }
        print("spread masked vs unmasked split: max relative difference \(worst)")
    }

    /// Per group, each member's rows: at most k of the group's 3k, the forward and backward
    /// noise columns of its rows of full row rank (no combination of them is free of noise:
    /// Gram-Schmidt on the rows scaled to unit length leaves >= 0.3 of each), every
    /// combination placed once, and the message's
    /// part j holding exactly the rows the mixing says go to member j, in group order.
    func testEveryMembersRowsCarryNoiseInEveryDirection() {
        setThreads(1)
        var rng = RNG(seed: 32)
        for (batch, K, members) in [(6, 1, 3), (8, 2, 3), (9, 3, 3), (10, 2, 4), (9, 3, 5), (12, 4, 3)] {
            let g = ConvGeometry(inChannels: 3, height: 5, width: 5, outChannels: 2, kernel: 3, padding: 1)
            let x = randomTensor([batch, 3, 5, 5], &rng), dy = randomTensor([batch, 2, 5, 5], &rng)
            let w = randomTensor([2, 3, 3, 3], &rng), b = randomTensor([2], &rng)
            let recorder = RecordingExecutor()
            recorder.members = members
            let mask = masked(g, settings: SplitSettings(maxRank: 1), K: K, sigma: 1, x: x, dy: dy, w: w, b: b, batch: batch,
                              spread: true, under: recorder).1
            let placement = recorder.placements[0]!
            var worst = Double.infinity
            var rowsOf = [[Int]](repeating: [], count: members)
            for (index, group) in mask.lastMixing(layer: 0).enumerated() {
                let k = group.samples, width = 2 * k
                XCTAssertEqual(group.noiseSources, k)
                XCTAssertEqual(Set(group.rows).count, 3 * k, "every combination has its own row")
                for member in 0..<members {
                    let mine = (0..<group.combinations).filter { group.members![$0] == member }
                    XCTAssertLessThanOrEqual(mine.count, k, "member \(member) got \(mine.count) of group \(index)'s combinations")
                    rowsOf[member] += mine.map { group.rows[$0] }
                    guard !mine.isEmpty else { continue }
                    for mix in [group.forward, group.backward] {
                        let noise = submatrix(mix, width: width, rows: mine, columns: k..<width)
                        worst = min(worst, smallestGramSchmidtResidual(noise))
                    }
                }
                XCTAssertEqual(Set((0..<group.combinations).map { group.members![$0] }).count, 3, "three members per group")
            }
            XCTAssertGreaterThanOrEqual(worst, 0.3, "batch \(batch) K \(K) members \(members)")
            for member in 0..<members {
                XCTAssertEqual(rowsOf[member], Array(placement.parts[member]), "member \(member)'s part")
                let counts = Dictionary(grouping: placement.groups[placement.parts[member]], by: { $0 }).mapValues(\.count)
                XCTAssertLessThanOrEqual(counts.values.max() ?? 0, K)
            }
        }
    }

    /// What one member receives of a group (noise 3, the default) leaves every sample's
    /// residual and dY well off its span (the noise cannot be cancelled; 0.69-0.81 in six
    /// runs), whereas a whole unspread group's span holds every sample exactly (what the
    /// unmixing attack exploits).
    func testNoMemberSpanHoldsASample() {
        setThreads(1)
        var rng = RNG(seed: 33)
        let (batch, K) = (6, 2)
        let g = ConvGeometry(inChannels: 4, height: 6, width: 6, outChannels: 3, kernel: 3, padding: 1)
        let x = randomTensor([batch, 4, 6, 6], &rng), dy = randomTensor([batch, 3, 6, 6], &rng)
        let w = randomTensor([3, 4, 3, 3], &rng), b = randomTensor([3], &rng)
        let settings = SplitSettings(maxRank: 0)  // the whole input crosses: R = X
        func rows(_ t: [Float], _ r: [Int], _ size: Int) -> [ArraySlice<Float>] { r.map { t[($0 * size)..<(($0 + 1) * size)] } }
        for spread in [false, true] {
            let recorder = RecordingExecutor()
            let mask = masked(g, settings: settings, K: K, sigma: 3, x: x, dy: dy, w: w, b: b, batch: batch,
                              spread: spread, under: recorder).1
            var nearest = Double.infinity
            for (index, group) in mask.lastMixing(layer: 0).enumerated() {
                let views = spread ? (0..<3).map { m in group.rows.indices.filter { group.members![$0] == m }.map { group.rows[$0] } }
                    : [group.rows]
                for view in views {
                    for i in (index * K)..<(index * K + group.samples) {
                        let r = x.array[(i * g.inputSize)..<((i + 1) * g.inputSize)]
                        let d = dy.array[(i * g.outputSize)..<((i + 1) * g.outputSize)]
                        nearest = min(nearest, distanceFromSpan(r, rows(recorder.residuals[0], view, g.inputSize)),
                                      distanceFromSpan(d, rows(recorder.outputGrads[0], view, g.outputSize)))
                    }
                }
            }
            if spread {
                XCTAssertGreaterThan(nearest, 0.4, "a member's combinations come close to a sample")
            } else {
                XCTAssertLessThan(nearest, 1e-3, "a whole group's span holds its samples")
            }
            print("spread \(spread): smallest relative distance of a sample from one rank's span \(nearest)")
        }
    }
}
