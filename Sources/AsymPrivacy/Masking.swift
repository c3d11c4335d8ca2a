import AsymIntegrity
import AsymKernels
import AsymSecrets
import AsymSplit
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Masking what crosses to the untrusted side (design §9): it sees only random mixtures of K
/// samples plus noise, and the trusted side decodes every result exactly.
///
/// Per group of k <= K samples, with L = k + 2 combinations and a fresh random orthogonal
/// L x L matrix Q (columns q_0 .. q_{k+1}):
///
///     forward:   x~_j = sum_i Q[j,i] R_i + Q[j,k] n            M = Q[:, 0...k]  (L x (k+1))
///     backward:  d~_j = (sum_i N~[j,i] dY_i + N~[j,k] m) / g_j  N~ = [q_0..q_{k-1} + z w^T | z],  z = q_{k+1}
///
/// with fresh noise n, m (standard deviation sigma times the group's RMS), fresh pair
/// weights g_j and a fresh vector w. The untrusted side convolves each x~_j (adding its bias),
/// transposes-convolves each d~_j and returns corr(x~_j, d~_j) per combination. Decoding:
///
/// * conv(R_i, W) = sum_j M[j,i] conv(x~_j, W): M has orthonormal columns, so M^T undoes it
///   (the bias comes back times sum_j M[j,i] and is corrected to b);
/// * dX_i = sum_j N+[i,j] dX~_j, N+ the left inverse of N = diag(1/g) N~;
/// * the weight gradient is bilinear: sum_j g_j corr(x~_j, d~_j) = sum_{a,b} (M^T N~)[a,b]
///   corr(X_a, Y_b) over the sources X = (R_1..R_k, n), Y = (dY_1..dY_k, m), and
///   M^T N~ = diag(1, .., 1, 0) because q_0..q_k are orthonormal and z is orthogonal to them:
///   every cross term (R_i with dY_i', noise with data, noise with noise) cancels, leaving
///   sum_i corr(R_i, dY_i) exactly.
///
/// Why L = k + 2: with L = k + 1 full-rank mixtures on both sides M^T diag(g) N is invertible
/// and cannot equal diag(1, .., 1, 0), so either dY would cross without noise (DarKnight's
/// choice) or the trusted side would have to compute corr(n, m) itself (a full correlation).
/// The pair weights g stay secret: with them the untrusted side could pick the combinations
/// of its d~ that are free of noise (those orthogonal to diag(1/g) z).
///
/// **Spread** (`asym.mask.spread`, docs/DESIGN.md §9): one rank that sees a whole group sees
/// every R_i as a direction of its span, which blind source separation finds. With spread,
/// a group has p = k forward noise vectors n_1..n_k (U = Q[:, k..<2k]) and p' = k backward ones
/// (Z = Q[:, 2k..<3k], N~ = [Q[:, 0..<k] + Z W | Z], W a fresh k x k matrix), L = 3k
/// combinations, and its three blocks of k rows go to three different untrusted ranks.
/// Decoding is the same: M = Q[:, 0..<2k] has orthonormal columns, N's left inverse gives dX,
/// and M^T N~ = diag(I_k, 0_k) (Q's columns are orthonormal: data^T Z = 0, U^T (data + Z W) = 0,
/// U^T Z = 0), so every cross term of the weight gradient cancels again. Q is built
/// (`spreadBasis`) so that every block's k x k noise submatrices (U_b forward, Z_b backward) are
/// invertible with singular values 1/sqrt(3) (1/sqrt(6) or 2/sqrt(6) on one dimension when k
/// is odd): any combination of one rank's k rows carries noise, in every direction alike.
/// Spread needs no pair weights (g = 1, see `GroupMask.drawBackward`), so each member returns
/// one weight-gradient share, the sum of corr(x~_j, d~_j) over its rows, and the members'
/// shares add up to the decoded one: O(|W|) per member and layer, not one |W| per combination.
///
/// **Checks** (`asym.verify`, docs/DESIGN.md §8): every combination a member returns is
/// checked before it is decoded, by an `IntegrityChecker` over the message as it crossed (the
/// combinations are its samples): the outputs and dX~ per combination, each member's share
/// over its rows. Tolerances come from the combinations' own norms, so the decode's rounding
/// never enters a comparison. Under `.recompute` a failed result is computed here from the
/// combinations kept, and the member is excluded; a spread group that would be left with
/// fewer than three members releases them all, and this rank computes the split layers.
package final class MaskingExecutor: ExecutorWrapper {
    package let inner: UntrustedExecutor
    /// K, the samples mixed together (a last, smaller group takes the rest of the batch).
    package let groupSize: Int
    /// sigma: noise standard deviation relative to the RMS of the batch's residuals (or dY).
    package let noiseScale: Float
    /// Whether each group crosses as 3k combinations spread over three untrusted ranks.
    package let spread: Bool
    /// With `asym.verify`: what a failed check of a returned combination does (nil: no checks).
    package let checks: IntegrityPolicy?
    /// Receives every failed check (under `.report` without one, the process stops).
    package var failureHandler: ((IntegrityFailure) -> Void)?
    /// Seconds spent encoding and decoding (trusted work, the noise included), since creation.
    package private(set) var codingSeconds = 0.0

    /// Whether the checkers time their sections (`asymml bench --profile`).
    package var checkTiming = false {
        didSet { for st in layers.values { st.checker?.timing = checkTiming } }
    }

    /// Each check section's thread CPU seconds over every layer's checker since the last call
    /// (with `checkTiming`).
    package func takeCheckSeconds() -> [IntegritySection: Double] {
        var total: [IntegritySection: Double] = [:]
        for st in layers.values {
            guard let checker = st.checker else { continue }
            for (section, t) in checker.sectionSeconds { total[section, default: 0] += t }
            checker.resetTiming()
        }
        return total
    }

    private final class LayerState {
        let info: SplitLayerInfo
        /// The model's own weight and bias tensors (updated in place by the optimizer).
        let weight: Tensor, bias: Tensor?
        let weightCount: Int
        /// Checks every combination the untrusted side returns, before it is decoded.
        let checker: IntegrityChecker?
        var batch = 0
        var groups: [GroupMask] = []
        /// The pieces the current pass crosses in (see `Piece`).
        var pieces: [Piece] = []
        /// The pass being sent: the caller's residual or output gradient, which the pieces are
        /// encoded from, and its noise scale; the secret stream that draws the pass's noise.
        var residual: Residual?, outputGrad: OutputGradient?
        var sigma: Float = 0
        var stream = SecretStream()
        var encodedResidual: Tensor?, output: Tensor?, encodedGrad: Tensor?, inputGrad: Tensor?
        /// Whether the last pass's result was decoded already (micro-batches ask once per part).
        var forwardDecoded = false, backwardDecoded = false
        /// Without spread: the decoded share sum_i corr(R_i, dY_i) of dW, from one correlation
        /// per combination, summed over the step's backward passes.
        lazy var share = Tensor(shape: weight.shape)
        init(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?, checked: Bool, wide: Bool) {
            self.info = info; self.weight = weight; self.bias = bias
            weightCount = weight.count
            checker = checked ? IntegrityChecker(layer: info.layer, geometry: info.geometry) : nil
            checker?.wideShares = wide
        }
        /// Rows of the whole pass (every group's combinations).
        var rows = 0
        /// Where the caller wants the decoded Y and dX of the current passes (nil: buffers of
        /// this layer's own).
        var outputTarget: Tensor?, inputGradTarget: Tensor?
    }

    /// One message of a layer pass: consecutive groups, their rows numbered from 0 member after
    /// member. A pass crosses in one piece, or, when one buffer serves every message (MPI and
    /// spread), in three: each a third of the groups, so the buffer holds about one batch of
    /// rows instead of all 3 x batch. Every group block's `row` is its row in the whole pass
    /// (member after member, as `place` numbers it), which the checks keep the share state by;
    /// a member's rows of consecutive groups are consecutive there, so within a piece each
    /// member's rows are one run of pass rows moved by `shift[member]`. In the member's own
    /// shard the pieces' rows count down from its last (`PieceOfPass`).
    private struct Piece {
        let groups: Range<Int>
        /// The batch index of its first group's first sample.
        let firstSample: Int
        let rows: Int
        /// Where the piece's rows go (nil: the transport's contiguous shards).
        let placement: RowPlacement?
        /// Per member: the message row of a pass row (message row = pass row + shift).
        let shift: [Int]
        /// For the checks and the transport (nil when the pass is one piece).
        let rowMap: PassRowMap?, shardRows: PieceOfPass?
        func row(of block: GroupMask.Block) -> Int { block.row + shift[block.member] }
        /// The pass row of message row `row`.
        func passRow(_ row: Int) -> Int { rowMap?.rows[row] ?? row }
    }

    /// The pieces a pass of `groups` (rows set by `place` or group after group) crosses in.
    private func pieces(of groups: [GroupMask], placement: RowPlacement?) -> [Piece] {
        let total = groups.reduce(0) { $0 + $1.combinations }
        let count = spread && sharesBuffers ? min(3, groups.count) : 1
        guard count > 1, let placement else {
            return [Piece(groups: groups.indices, firstSample: 0, rows: total, placement: placement,
                          shift: [Int](repeating: 0, count: max(1, placement?.parts.count ?? 1)), rowMap: nil, shardRows: nil)]
        }
        let members = placement.parts.count
        var firstSample = 0, unsent = placement.parts.map(\.count)
        return (0..<count).map { c in
            let range = (groups.count * c / count)..<(groups.count * (c + 1) / count)
            // Each member's run of pass rows in these groups.
            var lo = [Int](repeating: .max, count: members), hi = [Int](repeating: 0, count: members)
            for block in groups[range].flatMap(\.blocks) {
                lo[block.member] = min(lo[block.member], block.row)
                hi[block.member] = max(hi[block.member], block.row + block.combinations.count)
            }
            var shift = [Int](repeating: 0, count: members), parts: [Range<Int>] = [], rows: [Int] = [], rowGroups: [Int] = []
            var first = [Int](repeating: 0, count: members)
            for m in 0..<members {
                let run = lo[m] == .max ? 0..<0 : lo[m]..<hi[m]
                unsent[m] -= run.count
                first[m] = unsent[m]
                shift[m] = rows.count - run.lowerBound
                parts.append(rows.count..<(rows.count + run.count))
                rows += run
                rowGroups += placement.groups[run]
            }
            defer { firstSample += groups[range].reduce(0) { $0 + $1.samples } }
            return Piece(groups: range, firstSample: firstSample, rows: rows.count,
                         placement: RowPlacement(parts: parts, groups: rowGroups), shift: shift,
                         rowMap: PassRowMap(rows: rows, passRows: total, opens: c == 0),
                         shardRows: PieceOfPass(first: first, opens: c == 0))
        }
    }
    private var layers: [Int: LayerState] = [:]
    private var noise: Tensor?
    /// Set when the untrusted side keeps no reference to a message once it is sent (MPI: the
    /// transport copies it out). Then, unless `.recompute` needs each layer's combinations at
    /// the step end, one buffer serves every layer's message and its reply: the combinations
    /// are read (sent, probed by the checks) before the reply lands over them
    /// (`Residual.replyOverwrites`), and a layer's results are done with once decoded. With
    /// spread a pass crosses in three pieces (`Piece`), so the buffer holds about one batch of
    /// the largest layer's R or Y (vgg-cifar: 17 MB), instead of 3 x R, 3 x dY, 3 x Y and 3 x dX
    /// per layer; at a step end it holds the members' wide-share sum.
    package var messagesLeave = false
    private let sharedBuffer = Tensor(shape: [1])
    private var sharesBuffers: Bool { messagesLeave && checks != .recompute }

    /// The buffer a message of `rows` combinations of `sampleSize` values is encoded into, with
    /// room for a reply of `replySize` values per row when it lands there.
    private func messageBuffer(kept: Tensor?, rows: Int, sampleSize: Int, replySize: Int) -> Tensor? {
        guard sharesBuffers else { return kept }
        return Tensor.reuse(sharedBuffer, shape: [rows * max(sampleSize, replySize)])
    }
    /// Where the sum of the members' wide shares, every layer's, is kept when the message
    /// buffer is not shared (`collectGradientShares`).
    private let ownAccumulator = Tensor(shape: [1])
    private let scratch = Scratch()
    /// Set once fewer than three untrusted ranks are left to spread over (after exclusions):
    /// the others were released too, the inner executor computes on this rank, and nothing
    /// crosses any more, so nothing is masked.
    private var bypass = false
    /// The placement of the latest pass (spread), in pass rows: which member computed a row.
    private var lastPlacement: RowPlacement?

    package init(wrapping inner: UntrustedExecutor, groupSize: Int, noiseScale: Float, spread: Bool = false,
                 checks: IntegrityPolicy? = nil) {
        precondition(groupSize >= 1, "mask groups need at least one sample")
        self.inner = inner
        self.groupSize = groupSize
        self.noiseScale = noiseScale
        self.spread = spread
        self.checks = checks
    }

    /// Spread needs three untrusted ranks at least; in one process (no member count) the
    /// combinations are placed for three, and the local executor computes them all.
    private var spreadMembers: Int {
        let m = inner.members ?? 3
        precondition(m >= 3, "asym.mask.spread needs at least 3 untrusted ranks, the executor has \(m)")
        return m
    }

    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        layers[info.layer] = LayerState(info, weight: weight, bias: bias, checked: checks != nil, wide: spread)
        inner.register(info, weight: weight, bias: bias)
    }

    /// Per check, the largest discrepancy / allowed seen over every layer (as the split
    /// layers' checkers report it for unmasked runs).
    package var highestRatio: [IntegrityCheck: Float] {
        var worst: [IntegrityCheck: Float] = [:]
        for st in layers.values {
            for (check, ratio) in st.checker?.highestRatio ?? [:] { worst[check] = max(worst[check] ?? 0, ratio) }
        }
        return worst
    }

    /// Read-only, for measuring leakage (`asymml attack`) and tests, never sent anywhere: the
    /// secret mixing of the last message on `layer`, one entry per group in batch order (see
    /// `GroupMixing`). It stays valid until the next forward pass on `layer` draws new groups.
    package func lastMixing(layer: Int) -> [GroupMixing] {
        layers[layer]?.groups.map {
            GroupMixing(samples: $0.samples, noiseSources: $0.noiseSources, forward: $0.forwardMix, backward: $0.backwardMix,
                        members: $0.blocks.count > 1 ? $0.blocks.flatMap { b in Array(repeating: b.member, count: b.combinations.count) } : nil,
                        rows: $0.blocks.flatMap { b in (0..<b.combinations.count).map { b.row + $0 } })
        } ?? []
    }

    /// The group sizes of a batch: K each, the last one smaller when K does not divide it.
    package static func groupSizes(batch: Int, groupSize K: Int) -> [Int] {
        (0..<((batch + K - 1) / K)).map { min(K, batch - $0 * K) }
    }

    /// Micro-batches are taken, but a mask group's combinations cross together: the batch
    /// leaves with its last micro-batch (as one message, or its pieces one after another), and
    /// is decoded when the first result is asked for.
    package var pipelines: Bool { bypass ? inner.pipelines : true }

    package func startForward(_ r: Residual) {
        if bypass { return inner.startForward(r) }
        guard r.samples.upperBound == r.batch else { return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let st = layers[r.layer]!
        st.stream = SecretStream()
        st.batch = r.batch
        st.groups = MaskingExecutor.groupSizes(batch: r.batch, groupSize: groupSize).map { GroupMask(samples: $0, spread: spread, &st.stream) }
        var placement: RowPlacement?
        if spread {
            placement = MaskingExecutor.place(&st.groups, members: spreadMembers)
        } else {
            var row = 0  // group after group, as the transport shards them
            for g in st.groups.indices { st.groups[g].blocks[0].row = row; row += st.groups[g].combinations }
        }
        st.rows = st.groups.reduce(0) { $0 + $1.combinations }
        st.pieces = pieces(of: st.groups, placement: placement)
        st.residual = r
        // One noise scale for the whole batch: a group's own RMS would make each combination's
        // norm follow its samples' (about s times it), and that norm alone told a probe the
        // label of a combination's dY at 0.21 (chance 0.10) whatever the noise scale.
        st.sigma = noiseScale * rms(r.tensor.data, count: r.batch * st.info.geometry.inputSize)
        st.outputTarget = r.output
        st.forwardDecoded = false
        lastPlacement = placement
        codingSeconds += seconds(since: t0)
        sendForward(st, piece: 0)
    }

    /// Encodes and sends piece `index` of the forward pass; the output check's probes on its
    /// combinations run while the untrusted side computes.
    private func sendForward(_ st: LayerState, piece index: Int) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let piece = st.pieces[index], r = st.residual!, g = st.info.geometry
        let buffer = messageBuffer(kept: st.encodedResidual, rows: piece.rows, sampleSize: g.inputSize, replySize: g.outputSize)
        let encoded = encode(r.tensor, groups: st.groups, piece: piece, mix: \.forwardMix, sigma: st.sigma, reuse: buffer, &st.stream)
        st.encodedResidual = encoded
        codingSeconds += seconds(since: t0)
        inner.startForward(r.crossing(as: encoded, placement: piece.placement, replyOverwrites: sharesBuffers, piece: piece.shardRows))
        st.checker?.prepareForward(residual: encoded.data, batch: piece.rows, weight: st.weight.data, bias: st.bias?.data,
                                   training: r.training, scratch: scratch, piece: piece.rowMap, progress: { inner.progress() })
    }

    package func finishForward(layer: Int, samples: Range<Int>) -> Tensor {
        if bypass { return inner.finishForward(layer: layer, samples: samples) }
        let st = layers[layer]!
        if st.forwardDecoded, let y = st.outputTarget ?? st.output { return y }
        for index in st.pieces.indices {
            if index > 0 { sendForward(st, piece: index) }
            let piece = st.pieces[index], out = inner.finishForward(layer: layer, samples: 0..<piece.rows)
            if let checker = st.checker {
                resolve(checker.checkOutputShare(out.data), piece: piece, positions: st.info.geometry.outPositions) {
                    conv2dForward(st.info.geometry, x: st.encodedResidual!.data, batch: piece.rows, weight: st.weight.data,
                                  bias: st.bias?.data, y: out.data, scratch: scratch)
                }
            }
            let t0 = DispatchTime.now().uptimeNanoseconds
            let y = decode(out, groups: st.groups, piece: piece, unmix: \.forwardUnmix, batch: st.batch,
                           reuse: st.outputTarget ?? st.output, bias: st.bias)
            if st.outputTarget == nil { st.output = y }
            codingSeconds += seconds(since: t0)
        }
        st.forwardDecoded = true
        st.residual = nil
        return st.outputTarget ?? st.output!
    }

    package func startBackward(_ g: OutputGradient) {
        if bypass { return inner.startBackward(g) }
        guard g.samples.upperBound == g.batch else { return }
        backwardBatch = g.batch
        let t0 = DispatchTime.now().uptimeNanoseconds
        let st = layers[g.layer]!
        precondition(g.batch == st.batch, "backward batch \(g.batch) after a forward of \(st.batch)")
        st.stream = SecretStream()
        for i in st.groups.indices { st.groups[i].drawBackward(&st.stream) }
        st.outputGrad = g
        st.sigma = noiseScale * rms(g.tensor.data, count: g.batch * st.info.geometry.outputSize)
        st.inputGradTarget = g.inputGrad
        st.backwardDecoded = false
        codingSeconds += seconds(since: t0)
        sendBackward(st, piece: 0)
    }

    /// Encodes and sends piece `index` of the backward pass (its forward pass's pieces, in
    /// the same places); the dX check's probes run while the untrusted side computes.
    private func sendBackward(_ st: LayerState, piece index: Int) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let piece = st.pieces[index], g = st.outputGrad!, geometry = st.info.geometry
        let buffer = messageBuffer(kept: st.encodedGrad, rows: piece.rows, sampleSize: geometry.outputSize, replySize: geometry.inputSize)
        let encoded = encode(g.tensor, groups: st.groups, piece: piece, mix: \.backwardMix, sigma: st.sigma, reuse: buffer, &st.stream)
        st.encodedGrad = encoded
        codingSeconds += seconds(since: t0)
        // Spread: every member returns one share, the sum of corr(x~_j, d~_j) over its own rows
        // (their sum over the members is the decoded share: no pair weights, see GroupMask).
        // Without spread a rank holds whole groups and the pair weights must stay secret, so
        // each combination's correlation comes back on its own.
        let message = g.crossing(as: encoded, placement: piece.placement, wideShares: spread, replyOverwrites: sharesBuffers,
                                 piece: piece.shardRows)
        if spread { inner.startBackward(message) } else { inner.startBackwardPerSample(message) }
        st.checker?.prepareBackward(outputGrad: encoded.data, batch: piece.rows, weight: st.weight.data, biasGrad: nil, copy: nil,
                                    scratch: scratch, piece: piece.rowMap, progress: { inner.progress() })
    }

    package func finishBackward(layer: Int, samples: Range<Int>) -> Tensor {
        if bypass { return inner.finishBackward(layer: layer, samples: samples) }
        let st = layers[layer]!
        if st.backwardDecoded, let dx = st.inputGradTarget ?? st.inputGrad { return dx }
        for index in st.pieces.indices {
            if index > 0 { sendBackward(st, piece: index) }
            let piece = st.pieces[index], dxMixed = inner.finishBackward(layer: layer, samples: 0..<piece.rows)
            if let checker = st.checker {
                let g = st.info.geometry
                resolve(checker.checkInputGradient(dxMixed.data), piece: piece, positions: g.height * g.width) {
                    conv2dBackward(g, x: st.encodedGrad!.data, batch: piece.rows, weight: st.weight.data,
                                   dy: st.encodedGrad!.data, dWeight: nil, dBias: nil, dx: dxMixed.data, scratch: scratch)
                }
            }
            if !spread { decodePerCombinationShares(st) }
            let t0 = DispatchTime.now().uptimeNanoseconds
            let dx = decode(dxMixed, groups: st.groups, piece: piece, unmix: \.backwardUnmix, batch: st.batch,
                            reuse: st.inputGradTarget ?? st.inputGrad)
            if st.inputGradTarget == nil { st.inputGrad = dx }
            codingSeconds += seconds(since: t0)
        }
        st.backwardDecoded = true
        st.outputGrad = nil
        return st.inputGradTarget ?? st.inputGrad!
    }

    /// Without spread (one piece, one rank per group): checks each combination's correlation
    /// and adds sum_j g_j corr(x~_j, d~_j) of every group to the layer's decoded share.
    private func decodePerCombinationShares(_ st: LayerState) {
        let shares = inner.finishWeightShares(layer: st.info.layer)
        if let checker = st.checker {
            // One correlation per combination: each is checked on its own.
            for row in 0..<st.rows {
                let share = shares.data + row * st.weightCount
                resolve(checker.checkGradientShare(share, samples: row..<(row + 1))) { recomputeShare(st, rows: row..<(row + 1), into: share) }
            }
            checker.finishShareChecks()
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        for group in st.groups {
            let block = group.blocks[0]
            group.pairWeights.withUnsafeBufferPointer {
                BLAS.gemv(trans: true, m: block.combinations.count, n: st.weightCount, a: shares.data + block.row * st.weightCount,
                          lda: st.weightCount, x: $0.baseAddress! + block.combinations.lowerBound, beta: 1, y: st.share.data)
            }
        }
        codingSeconds += seconds(since: t0)
    }

    /// The local batch of the last backward pass (the samples the decoded shares cover).
    private var backwardBatch = 0
    /// Hands every layer's decoded weight-gradient share to `body`. With spread, each member
    /// returned one wide share over its rows (checked here first); their sum, in double, is
    /// the decoded share, rounded to float once. Without spread, the share decoded from the
    /// per-combination correlations in `finishBackward`.
    package func collectGradientShares(_ body: (Int, UnsafeMutablePointer<Float>, UnsafePointer<Float>?, Range<Int>) throws -> Void) throws {
        if bypass { return try inner.collectGradientShares(body) }
        if spread {
            // Each member's shares come layer after layer, member after member: one double
            // accumulator holds every layer's sum until the last member's are in.
            var offsets: [Int: Int] = [:], total = 0
            for layer in layers.keys.sorted() { offsets[layer] = total; total += layers[layer]!.weightCount }
            // Two floats a double; the message buffer is free at a step end (nothing is in flight).
            let storage = Tensor.reuse(sharesBuffers ? sharedBuffer : ownAccumulator, shape: [2 * total])
            storage.zero()
            let summed = try storage.data.withMemoryRebound(to: Double.self, capacity: total) { try sumShares(into: $0, offsets: offsets) }
            for st in layers.values { if let checker = st.checker, checker.shareSamples > 0 { checker.finishShareChecks() } }
            for layer in summed.sorted() {
                // Rounded to float in place: float i lands on bytes of double i / 2, read already.
                let wide = UnsafeRawPointer(storage.data) + 8 * offsets[layer]!, share = storage.data + 2 * offsets[layer]!
                for i in 0..<layers[layer]!.weightCount { share[i] = Float(wide.load(fromByteOffset: 8 * i, as: Double.self)) }
                try body(layer, share, nil, 0..<backwardBatch)
            }
            return
        }
        // The inner executor's step end still runs: its shares are not used (they would be
        // sums over combinations), but under MPI it is the exchange that carries each
        // untrusted rank's own compute and idle time of the step (`untrustedLoad`).
        try inner.collectGradientShares { _, _, _, _ in }
        for layer in layers.keys.sorted() {
            let st = layers[layer]!
            try body(layer, st.share.data, nil, 0..<backwardBatch)
            st.share.zero()
        }
    }

    /// Spread: checks each member's wide share of each layer and adds it to the layer's sum
    /// in `wide` (at the layer's offset, zeroed); returns the layers summed.
    private func sumShares(into wide: UnsafeMutablePointer<Double>, offsets: [Int: Int]) throws -> Set<Int> {
        var summed = Set<Int>()
        try inner.collectGradientShares { layer, share, low, rows in
            let st = layers[layer]!, sum = wide + offsets[layer]!
            summed.insert(layer)
            var honest = true
            if let checker = st.checker, checker.shareSamples > 0 {
                resolve(checker.checkGradientShare(share, low: low, samples: rows)) {
                    honest = false
                    let g = st.info.geometry
                    conv2dWeightGradientWide(g, x: st.encodedResidual!.data + rows.lowerBound * g.inputSize, batch: rows.count,
                                             dy: st.encodedGrad!.data + rows.lowerBound * g.outputSize, into: sum, scratch: scratch)
                }
            }
            if honest {
                for i in 0..<st.weightCount { sum[i] += Double(share[i]) + Double(low?[i] ?? 0) }
            }
        }
        return summed
    }

    /// corr(x~_j, d~_j) summed over `rows` of the last message, computed here (a failed
    /// per-combination share under `.recompute`).
    private func recomputeShare(_ st: LayerState, rows: Range<Int>, into share: UnsafeMutablePointer<Float>) {
        let g = st.info.geometry
        share.update(repeating: 0, count: st.weightCount)
        conv2dBackward(g, x: st.encodedResidual!.data + rows.lowerBound * g.inputSize, batch: rows.count, weight: share,
                       dy: st.encodedGrad!.data + rows.lowerBound * g.outputSize, dWeight: share, dBias: nil, dx: nil,
                       scratch: scratch)
    }

    /// `piece`: the failure names a row of that piece, renumbered to its pass row (`positions`
    /// per row) so that its member is found from the pass's placement.
    private func resolve(_ failure: IntegrityFailure?, piece: Piece? = nil, positions: Int = 1, recompute: () -> Void) {
        let named = piece.flatMap { p in failure?.renumbered(p.passRow, positions: positions) } ?? failure
        settle(named, policy: checks ?? .report, handler: failureHandler, recompute: recompute)
    }

    // Failures name rows of the latest pass: who computed them is read from its placement.

    /// A sample of the inner executor's sharding that the member computing `row` holds. The
    /// inner executor shards contiguously; a spread placement's parts are not its shards, so a
    /// spread row maps to its member j, and member j holds sample j * a of a batch of
    /// members * a (a = the shards' alignment: one block each).
    private func innerSample(ofRow row: Int) -> (sample: Int, batch: Int) {
        guard spread, let placement = lastPlacement, let j = placement.parts.firstIndex(where: { $0.contains(row) }) else {
            return (row, layers.values.map(\.rows).max() ?? row + 1)
        }
        return (j * convChunkAlignment, placement.parts.count * convChunkAlignment)
    }

    package func source(ofSample sample: Int, batch: Int) -> String {
        if bypass { return inner.source(ofSample: sample, batch: batch) }
        let (s, b) = innerSample(ofRow: sample)
        return inner.source(ofSample: s, batch: b)
    }

    /// Excludes whoever computed these rows. A spread group needs three members: when fewer
    /// are left, the rest are released as well and this rank computes the split layers
    /// itself (nothing crosses from then on, so nothing needs masking).
    package func exclude(sourcesOfSamples samples: [Int], batch: Int) throws -> String {
        if bypass { return try inner.exclude(sourcesOfSamples: samples, batch: batch) }
        let mapped = samples.map(innerSample(ofRow:))
        let before = inner.members
        var said = try inner.exclude(sourcesOfSamples: mapped.map(\.sample), batch: mapped.first?.batch ?? 0)
        let left = inner.members ?? 0
        guard spread, before != nil, left < 3 else { return said }
        if left > 0 {
            let a = convChunkAlignment
            said += "; " + (try inner.exclude(sourcesOfSamples: (0..<left).map { $0 * a }, batch: left * a))
        }
        bypass = true
        return said + " (spread masking needs 3 untrusted ranks: the split layers run on this trusted rank from now on)"
    }

    /// The combinations of a piece's groups: out[L, size] = mix[:, 0..<k] x[k, size] +
    /// mix[:, k..<k+p] noise[p, size], with p fresh noise vectors of standard deviation `sigma`
    /// (sigma times the pass's RMS); each block of combinations lands at its row of the piece.
    private func encode(_ x: Tensor, groups: [GroupMask], piece: Piece, mix: KeyPath<GroupMask, [Float]>, sigma: Float,
                        reuse: Tensor?, _ stream: inout SecretStream) -> Tensor {
        let size = x.count / x.shape[0]
        let out = Tensor.reuse(reuse, shape: [piece.rows] + x.shape.dropFirst())
        let n = Tensor.reuse(noise, shape: [groups.map(\.noiseSources).max() ?? 1, size]); noise = n
        var s0 = piece.firstSample
        for group in groups[piece.groups] {
            let k = group.samples, p = group.noiseSources, src = x.data + s0 * size
            stream.fillNormal(n.data, count: p * size, scale: sigma)
            let sources = (0..<k).map { UnsafePointer(src + $0 * size) } + (0..<p).map { UnsafePointer(n.data + $0 * size) }
            group[keyPath: mix].withUnsafeBufferPointer { m in
                for block in group.blocks {
                    mixRows(m.baseAddress! + block.combinations.lowerBound * (k + p), sources: sources,
                            into: (0..<block.combinations.count).map { out.data + (piece.row(of: block) + $0) * size }, count: size)
                }
            }
            s0 += k
        }
        return out
    }

    /// The samples of a piece's groups: out[k, size] = unmix[k, L] y[L, size] (each block's
    /// results sit at its rows of the piece), into their rows of the batch. With `bias`
    /// (forward outputs), each sample's bias is set right while the group's outputs are in
    /// cache: every combination's output carried b once, so sample i's decoded output carries
    /// it sum_j M[j,i] times, and gets (1 - that) b added per channel.
    private func decode(_ y: Tensor, groups: [GroupMask], piece: Piece, unmix: KeyPath<GroupMask, [Float]>, batch: Int,
                        reuse: Tensor?, bias: Tensor? = nil) -> Tensor {
        let size = y.count / y.shape[0]
        let out = Tensor.reuse(reuse, shape: [batch] + y.shape.dropFirst())
        var s0 = piece.firstSample
        for group in groups[piece.groups] {
            // The group's combinations in combination order, wherever their blocks sit.
            let rows = group.blocks.flatMap { b in (0..<b.combinations.count).map { UnsafePointer(y.data + (piece.row(of: b) + $0) * size) } }
            let u = group[keyPath: unmix]
            u.withUnsafeBufferPointer {
                mixRows($0.baseAddress!, sources: rows, into: (0..<group.samples).map { out.data + (s0 + $0) * size }, count: size)
            }
            if let bias {
                let channels = bias.count, positions = size / channels, L = group.combinations
                for i in 0..<group.samples {
                    let missing = 1 - u[(i * L)..<((i + 1) * L)].reduce(0, +)
                    for o in 0..<channels {
                        addScalar(missing * bias[o], to: out.data + ((s0 + i) * channels + o) * positions, count: positions)
                    }
                }
            }
            s0 += group.samples
        }
        return out
    }

    /// Spread placement: block b of group g goes to member (3 g + b) mod `members`, so a member
    /// gets at most one block (k combinations) of any group and groups rotate over the members
    /// when there are more than three. The message holds member 0's rows first, then member
    /// 1's, each in group order; sets every block's row and returns the parts.
    static func place(_ groups: inout [GroupMask], members: Int) -> RowPlacement {
        var counts = [Int](repeating: 0, count: members)
        for (g, group) in groups.enumerated() {
            for (b, block) in group.blocks.enumerated() { counts[(3 * g + b) % members] += block.combinations.count }
        }
        var next = [0] + (0..<members).map { counts[0...$0].reduce(0, +) }
        let parts = (0..<members).map { next[$0]..<next[$0 + 1] }
        var rowGroups = [Int](repeating: 0, count: next[members])
        for g in groups.indices {
            for b in groups[g].blocks.indices {
                let member = (3 * g + b) % members, n = groups[g].blocks[b].combinations.count
                groups[g].blocks[b].member = member
                groups[g].blocks[b].row = next[member]
                for r in next[member]..<(next[member] + n) { rowGroups[r] = g }
                next[member] += n
            }
        }
        return RowPlacement(parts: parts, groups: rowGroups)
    }

    private func rms(_ x: UnsafePointer<Float>, count: Int) -> Float {
        count == 0 ? 0 : (BLAS.dot(count, x, x) / Float(count)).squareRoot()
    }

    private func seconds(since t0: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }
}

/// The secret mixing of one group as `MaskingExecutor.lastMixing` shows it: k samples, p noise
/// sources per side, and two L x (k + p) row-major matrices whose row j gives combination j:
/// `forward` = M (x~_j = sum_i M[j,i] R_i + sum_c M[j,k+c] n_c) and `backward` = N =
/// diag(1/g) N~ (d~_j likewise with dY and m; empty before the first backward pass). Columns
/// k..<k+p multiply the noise. Without spread p = 1 and L = k + 2; with spread p = k and L = 3k.
package struct GroupMixing {
    package let samples: Int
    package let noiseSources: Int
    package let forward: [Float], backward: [Float]
    /// Per combination, the untrusted group member it goes to (spread only; nil: the whole
    /// group goes where the transport's contiguous shards put it).
    package let members: [Int]?
    /// Per combination, its row in the pass as sent (the message's row when the pass crossed
    /// in one piece).
    package let rows: [Int]
    package var combinations: Int { rows.count }
}

/// The secret mixing of one group (see `MaskingExecutor`); row-major Float matrices for the GEMMs.
struct GroupMask {
    /// k, the samples of the group.
    let samples: Int
    /// p = p', the noise vectors per side: 1, or k with spread.
    let noiseSources: Int
    /// L = k + 2 combinations cross (k + p + p'), 3k with spread.
    var combinations: Int { samples + 2 * noiseSources }
    /// Q, L x L orthogonal, in double precision (the backward mixing is built from it).
    private let q: [Double]
    /// M = Q[:, 0..<k+p], L x (k + p): columns 0..<k mix the residuals, k..<k+p the noise.
    let forwardMix: [Float]
    /// M^T's first k rows, k x L.
    let forwardUnmix: [Float]
    /// N = diag(1/g) [Q[:, 0..<k] + Z W | Z], Z = Q[:, k+p..<L], L x (k + p); its left
    /// inverse's first k rows; g.
    private(set) var backwardMix: [Float] = []
    private(set) var backwardUnmix: [Float] = []
    private(set) var pairWeights: [Float] = []

    /// Consecutive combinations that go to one untrusted member, at consecutive rows of the
    /// message from `row` on: one block of L without spread, three of k with it.
    struct Block {
        let combinations: Range<Int>
        var member = 0, row = 0
    }
    var blocks: [Block]

    init(samples k: Int, spread: Bool = false, _ stream: inout SecretStream) {
        samples = k
        noiseSources = spread ? k : 1
        let p = noiseSources, L = k + 2 * p
        let q = spread ? spreadBasis(samples: k, &stream) : maskingBasis(samples: k, &stream)
        self.q = q
        forwardMix = (0..<L).flatMap { j in (0..<(k + p)).map { Float(q[j * L + $0]) } }
        forwardUnmix = (0..<k).flatMap { i in (0..<L).map { Float(q[$0 * L + i]) } }
        blocks = spread ? (0..<3).map { Block(combinations: ($0 * k)..<(($0 + 1) * k)) } : [Block(combinations: 0..<L)]
    }

    /// Draws the backward pass's fresh W (p x k; w^T when p = 1): N(0, 1) entries without
    /// spread, N(0, 1/k) with it, so that Z W adds as much to a row as the data columns do;
    /// and, without spread, fresh pair weights g (random sign, magnitude in [1/2, 2]).
    ///
    /// Why spread needs no pair weights: they only rescale rows, and a spread rank's k rows
    /// carry k backward noise vectors through an invertible Z_b, so no combination of them is
    /// free of noise whatever the scales. With g = 1 a member's weight-gradient share is the
    /// plain sum of corr(x~_j, d~_j) over its own rows: one |W| per member, computed from
    /// nothing but what it received. Without spread one rank holds a whole group: the
    /// forward rows' null combination reveals z, and only secret g keep it from finding the
    /// backward combinations free of noise (orthogonal to diag(1/g) z).
    mutating func drawBackward(_ stream: inout SecretStream) {
        let k = samples, p = noiseSources, L = combinations
        let g = blocks.count > 1 ? [Double](repeating: 1, count: L) : (0..<L).map { _ in
            (stream.next() & 1 == 0 ? 1.0 : -1.0) * exp2(2 * Double(stream.next() >> 11) * 0x1p-53 - 1)
        }
        let scale = p == 1 ? 1 : 1 / Double(k).squareRoot()
        let w = (0..<(p * k)).map { _ in stream.normal() * scale }
        var n = [Double](repeating: 0, count: L * (k + p))
        for j in 0..<L {
            for i in 0..<k {
                let zw = (0..<p).reduce(0.0) { $0 + q[j * L + k + p + $1] * w[$1 * k + i] }
                n[j * (k + p) + i] = (q[j * L + i] + zw) / g[j]
            }
            for c in 0..<p { n[j * (k + p) + k + c] = q[j * L + k + p + c] / g[j] }
        }
        let plus = leftInverse(n, rows: L, cols: k + p)
        backwardMix = n.map(Float.init)
        backwardUnmix = plus[0..<(k * L)].map(Float.init)
        pairWeights = g.map(Float.init)
    }
}

/// Q for a spread group of k samples: a random 3k x 3k orthogonal matrix (row-major) whose
/// forward-noise columns U = Q[:, k..<2k] and backward-noise columns Z = Q[:, 2k..<3k] are, in
/// each block b of k rows, U_b = H_b / sqrt(3) and Z_b = H_b P D_b S / sqrt(3): H_b, P, S fresh
/// random orthogonal k x k matrices, D_b the rotation by 120 b degrees in each of the floor(k/2)
/// planes and, when k is odd, beta_b on the last axis, beta a random order of (1, 1, -2)/sqrt(2).
/// U^T U = sum_b H_b^T H_b / 3 = I, Z^T Z = sum_b D_b^T D_b / 3 = I and U^T Z = P (sum_b D_b) S
/// / 3 = 0 (three rotations by 0, 120, 240 degrees, and 1 + 1 - 2, sum to zero), so Q's
/// columns stay orthonormal; every U_b and Z_b is invertible with singular values 1/sqrt(3)
/// (Z_b's last one 1/sqrt(6) or 2/sqrt(6) when k is odd). The data columns are a random
/// orthonormal completion. For k = 1 this is `maskingBasis`'s structure (L = 3).
func spreadBasis(samples k: Int, _ stream: inout SecretStream) -> [Double] {
    let L = 3 * k
    func orthogonal() -> [Double] { orthonormalized((0..<(k * k)).map { _ in stream.normal() }, n: k, order: Array(0..<k)) }
    func product(_ a: [Double], _ b: [Double]) -> [Double] {
        (0..<(k * k)).map { e in (0..<k).reduce(0.0) { $0 + a[e / k * k + $1] * b[$1 * k + e % k] } }
    }
    let h = (0..<3).map { _ in orthogonal() }, p = orthogonal(), s = orthogonal()
    var beta = [1.0, 1.0, -2.0].map { $0 / 2.0.squareRoot() }
    beta.swapAt(2, Int(stream.next() % 3))
    var a = (0..<(L * L)).map { _ in stream.normal() }
    for b in 0..<3 {
        var d = [Double](repeating: 0, count: k * k)
        let angle = 2 * Double.pi * Double(b) / 3
        for plane in 0..<(k / 2) {
            let i = 2 * plane
            d[i * k + i] = cos(angle); d[i * k + i + 1] = -sin(angle)
            d[(i + 1) * k + i] = sin(angle); d[(i + 1) * k + i + 1] = cos(angle)
        }
        if k % 2 == 1 { d[k * k - 1] = beta[b] }
        let z = product(product(product(h[b], p), d), s)
        for r in 0..<k {
            for c in 0..<k {
                a[(b * k + r) * L + k + c] = h[b][r * k + c] / 3.0.squareRoot()
                a[(b * k + r) * L + 2 * k + c] = z[r * k + c] / 3.0.squareRoot()
            }
        }
    }
    // Gram-Schmidt leaves U and Z as they are (up to rounding) and completes the data columns.
    return orthonormalized(a, n: L, order: Array(k..<L) + Array(0..<k))
}

/// Q for a group of k samples: a random L x L orthogonal matrix (L = k + 2, row-major) whose
/// noise columns have no small entries, so that every combination that crosses carries
/// noise. A Gaussian random Q would, now and then, give a combination a noise weight near 0,
/// and with k = 1 that combination is the sample itself. Column k (the forward noise) is a
/// random-sign vector, every entry 1/sqrt(L) in size; column k + 1 (z, the backward noise) a
/// second random-sign vector s made orthogonal to it, s - (s.u / L) u, redrawn until
/// |s.u| <= L - 2, so its entries are at least 2/L before normalising. The data columns are a
/// random orthonormal completion.
func maskingBasis(samples k: Int, _ stream: inout SecretStream) -> [Double] {
    let L = k + 2
    func signs() -> [Double] { (0..<L).map { _ in stream.next() & 1 == 0 ? 1 : -1 } }
    let u = signs()
    var s: [Double]
    repeat { s = signs() } while abs(zip(s, u).reduce(0) { $0 + $1.0 * $1.1 }) > Double(L - 2)
    var a = (0..<(L * L)).map { _ in stream.normal() }
    for r in 0..<L { a[r * L + k] = u[r]; a[r * L + k + 1] = s[r] }
    return orthonormalized(a, n: L, order: [k, k + 1] + Array(0..<k))
}

/// The columns of the n x n matrix `a` (row-major) made orthonormal in `order`: Gram-Schmidt,
/// twice for orthogonality to double precision.
func orthonormalized(_ a: [Double], n: Int, order: [Int]) -> [Double] {
    var a = a
    for (i, c) in order.enumerated() {
        for _ in 0..<2 {
            for p in order[..<i] {
                let d = (0..<n).reduce(0.0) { $0 + a[$1 * n + c] * a[$1 * n + p] }
                for r in 0..<n { a[r * n + c] -= d * a[r * n + p] }
            }
        }
        let norm = (0..<n).reduce(0.0) { $0 + a[$1 * n + c] * a[$1 * n + c] }.squareRoot()
        for r in 0..<n { a[r * n + c] /= norm }
    }
    return a
}

/// (A^T A)^-1 A^T for a rows x cols matrix of full column rank (row-major, cols x rows).
func leftInverse(_ a: [Double], rows: Int, cols: Int) -> [Double] {
    // Gauss-Jordan with partial pivoting on [A^T A | A^T].
    let w = cols + rows
    var m = [Double](repeating: 0, count: cols * w)
    for i in 0..<cols {
        for j in 0..<cols { m[i * w + j] = (0..<rows).reduce(0.0) { $0 + a[$1 * cols + i] * a[$1 * cols + j] } }
        for r in 0..<rows { m[i * w + cols + r] = a[r * cols + i] }
    }
    for c in 0..<cols {
        let p = (c..<cols).max { abs(m[$0 * w + c]) < abs(m[$1 * w + c]) }!
        if p != c { for j in 0..<w { m.swapAt(c * w + j, p * w + j) } }
        let d = m[c * w + c]
        precondition(d != 0, "singular mixing matrix")
        for j in 0..<w { m[c * w + j] /= d }
        for r in 0..<cols where r != c {
            let f = m[r * w + c]
            if f != 0 { for j in 0..<w { m[r * w + j] -= f * m[c * w + j] } }
        }
    }
    return (0..<cols).flatMap { i in (0..<rows).map { m[i * w + cols + $0] } }
}
