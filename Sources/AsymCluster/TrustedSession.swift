import AsymKernels
import AsymModel
import AsymSplit
import Dispatch

/// The MPI tag of every message between a trusted rank and its untrusted group.
let wireTag = 17
/// Replicas compare parameter checksums every this many steps.
let replicaCheckInterval = 50

/// Raised when a message breaks the protocol: the job must end (the caller aborts).
package struct ProtocolError: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}

/// A trusted rank's view of the cluster: the untrusted executor over MPI (residuals out,
/// output shares back, in shards across its untrusted group) and the collective operations
/// of data-parallel training among the trusted ranks (docs/DESIGN.md §4).
///
/// What the untrusted group receives from here, and nothing else: residuals and output
/// gradients of split layers (its shard of the samples), the split layers' weights and
/// biases, and control headers. Gradient sums run over the trusted ranks alone.
package final class TrustedSession: Collective, UntrustedExecutor {
    let world: Communicator
    let trustedComm: Communicator
    package let layout: ClusterLayout
    package let trustedIndex: Int
    package var trustedCount: Int { layout.trusted.count }
    /// The untrusted world ranks this rank sends shards to.
    package let group: [Int]
    /// The members still trusted to compute (indices into `group`); a member that failed an
    /// integrity check under `recompute` is excluded. The batch is sharded among these.
    private var active: [Int]
    /// Computes the split layers' untrusted halves on this rank once no member is left.
    private var fallback: LocalUntrusted?
    /// The step that messages belong to: read from the trainer (one step counter).
    package var currentStep: () -> Int = { 0 }
    /// Encrypts the gradient sums among trusted ranks (`cluster.encrypt`).
    let channel: SecureChannel?

    private var layers: [(info: SplitLayerInfo, weight: Tensor, bias: Tensor?)] = []
    private var outputs: [Int: Tensor] = [:], inputGrads: [Int: Tensor] = [:]
    /// Masked runs' per-combination weight-gradient shares, [batch, weight shape], of the layer
    /// whose backward pass is in flight. One buffer serves every layer (the masking layer
    /// decodes a layer's shares in its finishBackward, before the next layer's start): the
    /// largest layer's shares rather than all of them (vgg-cifar at K = 2 holds 604 MB, not 1.7 GB).
    private var perSampleShares: Tensor?
    /// Each member's pending control transfers: waited for one member at a time, so that a
    /// member that does not answer is named alone.
    private var pending: [[Request]]
    /// The exchanges in flight, oldest first: one per layer pass, or one per micro-batch.
    private var flights: [Flight] = []
    /// Per layer pass (reply kind and layer): each member's samples handed out so far in the
    /// pass, which numbers the next micro-batch's `first` sample in that member's shard (a
    /// piece of a pass brings its own) and counts the rows a member's share covers.
    private var handedOut: [Int: [Int]] = [:]
    private struct Reply {
        let shard: Int, peer: Int, samples: Range<Int>, header: WireHeader, payload: UnsafePointer<Float>
        /// Where its header lands in the flight's `receiveHeaders` (a member's second reply has its own).
        var headerSlot: Int
    }
    /// One exchange: the replies it waits for (group member, its samples, the header it must
    /// carry), with its own requests per member and its own header buffers (per member: the
    /// header sent, and the headers of up to two replies).
    private final class Flight {
        let kind: MessageKind, layer: Int, samples: Range<Int>
        var replies: [Reply] = []
        var requests: [[Request]]
        /// Per member, the receives of replies that overwrite the message (`replyOverwrites`):
        /// posted by `complete` once every member's message has left.
        var laterReceives: [[() throws -> Request]]
        let sendHeaders: UnsafeMutableRawPointer, receiveHeaders: UnsafeMutableRawPointer
        init(kind: MessageKind, layer: Int, samples: Range<Int>, members: Int) {
            self.kind = kind; self.layer = layer; self.samples = samples
            requests = Array(repeating: [], count: members)
            laterReceives = Array(repeating: [], count: members)
            sendHeaders = .allocate(byteCount: max(1, members) * WireHeader.size, alignment: 8)
            receiveHeaders = .allocate(byteCount: 2 * max(1, members) * WireHeader.size, alignment: 8)
        }
        deinit {
            sendHeaders.deallocate()
            receiveHeaders.deallocate()
        }
    }
    /// Per member: the header of a control message sent, and of its reply.
    private let sendHeaders: UnsafeMutableRawPointer, receiveHeaders: UnsafeMutableRawPointer
    /// The group's own compute and idle seconds of the last step, measured on the untrusted
    /// ranks (the slowest member's), from their gradient shares.
    package private(set) var untrustedLoad: (compute: Double, idle: Double)?
    /// Where the step ends' buffers come from: the split layers' weights and biases packed for
    /// `weights` messages, and each member's weight-gradient shares packed in layer order. Set
    /// to the model's arena, which holds no activation between steps (docs/DESIGN.md §10).
    package var arena = ActivationArena()
    /// The local batch of the last backward pass, whose shards the shares cover when it was
    /// not placed (a placed pass's shares cover `backwardRows`).
    private var backwardBatch = 0
    /// When the last backward pass was placed (spread masking): each member's rows of it, over
    /// all of the pass's pieces. Each member's share covers those rows, numbered member after
    /// member as a placement numbers one message's rows. Also the layers whose shares come
    /// back wide this step.
    private var backwardRows: [Int]?
    private var wideLayers: Set<Int> = []
    private var waitSeconds = 0.0
    /// Bytes sent to and received from the untrusted group so far.
    package private(set) var bytesSent = 0, bytesReceived = 0

    package init(world: Communicator, trustedComm: Communicator, layout: ClusterLayout, channel: SecureChannel?) {
        self.world = world
        self.trustedComm = trustedComm
        self.layout = layout
        self.channel = channel
        trustedIndex = layout.trusted.firstIndex(of: world.rank)!
        group = layout.mode == .asym ? layout.group(ofTrusted: trustedIndex) : []
        sendHeaders = .allocate(byteCount: max(1, group.count) * WireHeader.size, alignment: 8)
        receiveHeaders = .allocate(byteCount: 2 * max(1, group.count) * WireHeader.size, alignment: 8)
        pending = group.map { _ in [] }
        active = Array(group.indices)
    }

    deinit {
        sendHeaders.deallocate()
        receiveHeaders.deallocate()
    }

    private func untrustedName(_ peer: Int) -> String { "rank \(peer) (untrusted)" }

    // MARK: UntrustedExecutor

    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        precondition(info.layer == layers.count, "split layers register in order")
        layers.append((info, weight, bias))
    }

    /// The active members with their samples of a batch of `batch`.
    private func shards(_ batch: Int) -> [(member: Int, samples: Range<Int>)] {
        active.enumerated().map { ($1, shardRange(batch, shards: active.count, index: $0)) }
    }

    /// The active members with their rows of a message: its placement's parts (spread
    /// masking), or contiguous shards of `count`.
    private func shards(_ count: Int, placement: RowPlacement?) -> [(member: Int, samples: Range<Int>)] {
        guard let placement else { return shards(count) }
        precondition(placement.parts.count == active.count && placement.parts.last?.upperBound == count,
                     "a placement of \(placement.parts) for \(active.count) members and \(count) rows")
        return Array(zip(active, placement.parts))
    }

    /// The active members with the rows of the last backward pass that their weight-gradient
    /// shares cover: contiguous shards of its batch, or, when it was placed, each member's rows
    /// handed out over the pass's pieces, numbered member after member.
    private func shareRows() -> [(member: Int, samples: Range<Int>)] {
        guard let counts = backwardRows else { return shards(backwardBatch) }
        var next = 0
        return active.map { s in
            defer { next += counts[s] }
            return (s, next..<(next + counts[s]))
        }
    }

    /// Each message spreads over the active members (a `RowPlacement` has one part per member).
    package var members: Int? { fallback == nil ? active.count : nil }

    /// With `asym.audit`: where every row of a placed message went, one JSON line per member
    /// and message, with the mask group of each row (docs/DESIGN.md §9).
    package var placementAudit: AuditLog?

    package func source(ofSample sample: Int, batch: Int) -> String {
        guard let m = shards(batch).first(where: { $0.samples.contains(sample) })?.member else { return "the trusted side" }
        return untrustedName(group[m])
    }

    /// Stops sending work to the members that computed `samples` (each gets a shutdown);
    /// their samples go to the other members, or to this rank once none is left.
    package func exclude(sourcesOfSamples samples: [Int], batch: Int) throws -> String {
        let current = shards(batch)
        let culprits = Set(samples.compactMap { s in current.first { $0.samples.contains(s) }?.member }).sorted()
        guard !culprits.isEmpty else { return "nothing to exclude: the trusted side computed those samples" }
        active.removeAll { culprits.contains($0) }
        for m in culprits { try sendControl(.shutdown, to: m) }
        try waitForMembers(culprits, awaiting: "its shutdown to be taken")
        let excluded = culprits.map { untrustedName(group[$0]) }.joined(separator: " and ") + " excluded for the rest of the run"
        guard active.isEmpty else { return excluded + "; its samples go to the other \(active.count)" }
        let local = LocalUntrusted()
        for l in layers { local.register(l.info, weight: l.weight, bias: l.bias) }
        fallback = local
        return excluded + "; no untrusted rank is left: continuing tee-only (the split layers run on this trusted rank)"
    }

    /// Micro-batches each go out as their own exchange, several in flight.
    package var pipelines: Bool { fallback?.pipelines ?? true }

    package func startForward(_ r: Residual) {
        if let fallback { return fallback.startForward(r) }
        let g = layers[r.layer].info.geometry
        precondition(!r.replyOverwrites || r.tensor.capacity >= r.batch * g.outputSize, "the message of layer \(r.layer) cannot hold its reply")
        // The first micro-batch of a pass sizes the buffer; the others land in it.
        let y = r.samples.lowerBound == 0 ? Tensor.reuse(r.output ?? outputs[r.layer], shape: [r.batch, g.outChannels, g.outHeight, g.outWidth])
            : outputs[r.layer]!
        outputs[r.layer] = y
        exchange(send: .residual, r.tensor.data, [g.inChannels, g.height, g.width],
                 receive: .outputShare, y.data, [g.outChannels, g.outHeight, g.outWidth], layer: r.layer, samples: r.samples,
                 placement: r.placement, replyOverwrites: r.replyOverwrites, piece: r.piece)
    }

    package func finishForward(layer: Int, samples: Range<Int>) -> Tensor {
        if let fallback { return fallback.finishForward(layer: layer, samples: samples) }
        complete(.outputShare, layer: layer, samples: samples)
        return outputs[layer]!
    }

    package func startBackward(_ d: OutputGradient) { startBackward(d, perSample: false) }

    /// Masked runs: the untrusted side keeps corr(R_s, dY_s) of every sample apart and sends
    /// them back after dX (only the trusted side can combine them, Masking.swift).
    package func startBackwardPerSample(_ d: OutputGradient) { startBackward(d, perSample: true) }

    package func finishWeightShares(layer: Int) -> Tensor {
        if let fallback { return fallback.finishWeightShares(layer: layer) }
        return perSampleShares!
    }

    private func startBackward(_ d: OutputGradient, perSample: Bool) {
        if let fallback { return perSample ? fallback.startBackwardPerSample(d) : fallback.startBackward(d) }
        let g = layers[d.layer].info.geometry
        precondition(!d.replyOverwrites || d.tensor.capacity >= d.batch * g.inputSize, "the message of layer \(d.layer) cannot hold its reply")
        let dx = d.samples.lowerBound == 0 ? Tensor.reuse(d.inputGrad ?? inputGrads[d.layer], shape: [d.batch, g.inChannels, g.height, g.width])
            : inputGrads[d.layer]!
        inputGrads[d.layer] = dx
        backwardBatch = d.batch
        if d.wideShares { wideLayers.insert(d.layer) }
        var shares: (MessageKind, UnsafeMutablePointer<Float>, [Int])?
        if perSample {
            let t = Tensor.reuse(perSampleShares, shape: [d.batch] + layers[d.layer].weight.shape)
            perSampleShares = t
            shares = (.weightShares, t.data, layers[d.layer].weight.shape)
        }
        exchange(send: perSample ? .outputGradientPerSample : d.wideShares ? .outputGradientWide : .outputGradient, d.tensor.data,
                 [g.outChannels, g.outHeight, g.outWidth],
                 receive: .inputGradient, dx.data, [g.inChannels, g.height, g.width], then: shares, layer: d.layer,
                 samples: d.samples, placement: d.placement, replyOverwrites: d.replyOverwrites, piece: d.piece)
        backwardRows = d.placement == nil ? nil : handedOut[Int(MessageKind.inputGradient.rawValue) << 32 | d.layer]
    }

    package func finishBackward(layer: Int, samples: Range<Int>) -> Tensor {
        if let fallback { return fallback.finishBackward(layer: layer, samples: samples) }
        complete(.inputGradient, layer: layer, samples: samples)
        return inputGrads[layer]!
    }

    package func progress() {
        fatalOnError {
            for s in pending.indices where !pending[s].isEmpty {
                try world.testAll(&pending[s], peer: untrustedName(group[s]), awaiting: "a control message to be taken")
            }
            for f in flights {
                for s in f.requests.indices where !f.requests[s].isEmpty {
                    try world.testAll(&f.requests[s], peer: untrustedName(group[s]),
                                      awaiting: "the \(f.kind) of split layer \(f.layer) at step \(currentStep())")
                }
            }
        }
    }

    /// Waits for each member's transfers in turn.
    private func waitForMembers(_ members: [Int], awaiting what: String) throws {
        for s in members { try world.waitAll(&pending[s], peer: untrustedName(group[s]), awaiting: what) }
    }

    /// Seconds this rank waited for its untrusted group since the last call: the part of the
    /// step that the untrusted side's compute and the transfers did not overlap.
    package func takeComputeSeconds() -> Double {
        defer { waitSeconds = 0 }
        return waitSeconds
    }

    /// Sends shard s of samples `samples` of `payload` (samples of `sampleShape`) to group
    /// member s, with its header, and posts the receive of its reply straight into `reply` at
    /// the same samples. A micro-batch (samples not from 0) is its own flight; its `first`
    /// counts the member's samples handed out earlier in the same layer pass.
    /// `replyOverwrites`: `reply` is the message's own buffer, so the receives wait for
    /// `complete` (the caller reads the message until then) and for every member's message
    /// to have left. No other exchange may start meanwhile: a member's replies match receives
    /// in the order they are posted. `piece`: the message is one piece of its layer pass, and
    /// says where each member's rows sit in its shard (`PieceOfPass`).
    private func exchange(send kind: MessageKind, _ payload: UnsafePointer<Float>, _ sampleShape: [Int],
                          receive replyKind: MessageKind, _ reply: UnsafeMutablePointer<Float>, _ replyShape: [Int],
                          then second: (MessageKind, UnsafeMutablePointer<Float>, [Int])? = nil, layer: Int,
                          samples: Range<Int>, placement: RowPlacement? = nil, replyOverwrites: Bool = false,
                          piece: PieceOfPass? = nil) {
        precondition(!flights.contains { $0.kind == replyKind && $0.layer == layer && $0.samples.overlaps(samples) },
                     "\(replyKind) of layer \(layer), samples \(samples), is already in flight")
        precondition(!flights.contains { $0.laterReceives.contains { !$0.isEmpty } } && (!replyOverwrites || flights.isEmpty),
                     "an exchange whose reply overwrites its message must be the only one in flight")
        let inSize = sampleShape.reduce(1, *), outSize = replyShape.reduce(1, *), step = currentStep()
        let flight = Flight(kind: replyKind, layer: layer, samples: samples, members: group.count)
        let pass = Int(replyKind.rawValue) << 32 | layer
        if piece?.opens ?? (samples.lowerBound == 0) { handedOut[pass] = Array(repeating: 0, count: group.count) }
        fatalOnError {
            for (j, (s, part)) in shards(samples.count, placement: placement).enumerated() {
                let peer = group[s], n = part.count
                if n == 0 { continue }  // a small (evaluation) batch leaves this member idle
                if let placement {
                    placementAudit?.recordPlacement(kind: kind, step: step, layer: layer, member: peer, rows: part,
                                                    groups: Array(placement.groups[part]))
                }
                let lo = samples.lowerBound + part.lowerBound, first = piece?.first[j] ?? handedOut[pass]![s]
                handedOut[pass]![s] += n
                let data = payload + lo * inSize
                let sendHeader = flight.sendHeaders + s * WireHeader.size
                WireHeader(kind: kind, step: step, layer: layer, shard: s, shape: [n] + sampleShape, payload: data,
                           count: n * inSize, first: first).encode(into: sendHeader)
                let target = reply + lo * outSize, world = self.world, headers = flight.receiveHeaders
                var receives: [() throws -> Request] = [
                    { try world.receiveBytes(headers + s * WireHeader.size, count: WireHeader.size, from: peer, tag: wireTag) },
                    { try world.receiveFloats(target, count: n * outSize, from: peer, tag: wireTag) }]
                flight.replies.append(Reply(shard: s, peer: peer, samples: lo..<(lo + n),
                                            header: WireHeader(kind: replyKind, step: step, layer: layer, shard: s,
                                                               shape: [n] + replyShape, payload: nil, count: n * outSize, first: first),
                                            payload: target, headerSlot: s))
                bytesSent += WireHeader.size + 4 * n * inSize
                bytesReceived += WireHeader.size + 4 * n * outSize
                if let (kind, buffer, shape) = second {
                    let size = shape.reduce(1, *), slot = group.count + s, start = buffer + lo * size
                    receives.append { try world.receiveBytes(headers + slot * WireHeader.size, count: WireHeader.size, from: peer, tag: wireTag) }
                    receives.append { try world.receiveFloats(start, count: n * size, from: peer, tag: wireTag) }
                    flight.replies.append(Reply(shard: s, peer: peer, samples: lo..<(lo + n),
                                                header: WireHeader(kind: kind, step: step, layer: layer, shard: s, shape: [n] + shape,
                                                                   payload: nil, count: n * size),
                                                payload: start, headerSlot: slot))
                    bytesReceived += WireHeader.size + 4 * n * size
                }
                if replyOverwrites {
                    flight.laterReceives[s] = receives
                } else {
                    for post in receives { flight.requests[s].append(try post()) }
                }
                flight.requests[s].append(try world.sendBytes(sendHeader, count: WireHeader.size, to: peer, tag: wireTag))
                flight.requests[s].append(try world.sendFloats(data, count: n * inSize, to: peer, tag: wireTag))
            }
        }
        flights.append(flight)
    }

    /// Waits for the exchange of `samples` in flight and validates every reply's header and checksum.
    private func complete(_ kind: MessageKind, layer: Int, samples: Range<Int>) {
        guard let index = flights.firstIndex(where: { $0.kind == kind && $0.layer == layer && $0.samples == samples }) else {
            preconditionFailure("finishing \(kind) of layer \(layer), samples \(samples), but in flight are \(flights.map { ($0.kind, $0.layer, $0.samples) })")
        }
        let flight = flights.remove(at: index)
        let t0 = DispatchTime.now().uptimeNanoseconds
        fatalOnError {
            // Every member's message must have left before any reply lands: rows of a reply and
            // of a message differ in size, so one member's reply covers other members' rows.
            let later = flight.laterReceives.indices.filter { !flight.laterReceives[$0].isEmpty }
            for s in later {
                try world.waitAll(&flight.requests[s], peer: untrustedName(group[s]),
                                  awaiting: "the message of split layer \(layer) at step \(currentStep()) to be taken")
            }
            for s in later {
                for post in flight.laterReceives[s] { flight.requests[s].append(try post()) }
                flight.laterReceives[s] = []
            }
            for s in Set(flight.replies.map(\.shard)).sorted() {
                try world.waitAll(&flight.requests[s], peer: untrustedName(group[s]),
                                  awaiting: "the \(kind) of split layer \(layer) at step \(currentStep())")
            }
            for r in flight.replies {
                try validate(WireHeader(decoding: flight.receiveHeaders + r.headerSlot * WireHeader.size), expected: r.header,
                             from: r.peer, payload: r.payload)
            }
        }
        waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    private func validate(_ got: WireHeader, expected: WireHeader, from peer: Int, payload: UnsafePointer<Float>) throws {
        let origin = "wire protocol: rank \(world.rank) (trusted) received from \(untrustedName(peer))"
        if let why = got.mismatch(expected: expected) { throw ProtocolError("\(origin): \(why)") }
        let digest = payloadDigest(payload, count: Int(got.count))
        if digest.checksum != got.checksum {
            throw ProtocolError("\(origin): payload checksum mismatch for [\(got)]")
        }
        // An honest result is finite (the trusted side's data and weights are): a NaN or an
        // infinity would poison the model however the integrity checks are set.
        if !digest.finite, let bad = (0..<Int(got.count)).first(where: { !payload[$0].isFinite }) {
            throw ProtocolError("\(origin): value \(bad) of [\(got)] is \(payload[bad])")
        }
    }

    /// Asks every member for its weight-gradient shares of this step (a step end), and hands
    /// each member's share of each layer to `body` with the samples it covers.
    package func collectGradientShares(_ body: (Int, UnsafeMutablePointer<Float>, UnsafePointer<Float>?, Range<Int>) throws -> Void) throws {
        if let fallback { return try fallback.collectGradientShares(body) }
        guard !group.isEmpty else { return }
        // A wide layer's share comes with its low-order part (as many values again).
        let wide = layers.indices.map { wideLayers.contains($0) }
        wideLayers.removeAll()
        let total = zip(layers, wide).map { $0.weight.count * ($1 ? 2 : 1) }.reduce(0, +), step = currentStep()
        // Each share ends with the member's own compute and idle seconds of the step.
        let values = total + UntrustedServer.loadValues
        // Every member is asked at once, and their shares land one member after another in one
        // buffer: a member's are checked and summed before the next member's arrive (vgg-cifar's
        // wide shares are 18.6 MB a member).
        let members = shareRows().filter { !$0.samples.isEmpty }
        for (s, _) in members { try sendControl(.stepEnd, to: s) }
        let buffer = arena.tensor(shape: [values], avoiding: [])
        var loads: [(compute: Double, idle: Double)] = []
        for (s, samples) in members {
            let peer = group[s]
            pending[s].append(try world.receiveBytes(receiveHeaders + s * WireHeader.size, count: WireHeader.size, from: peer, tag: wireTag))
            pending[s].append(try world.receiveFloats(buffer.data, count: values, from: peer, tag: wireTag))
            bytesReceived += WireHeader.size + 4 * values
            try waitForMembers([s], awaiting: "its weight-gradient shares at step \(step)")
            try validate(WireHeader(decoding: receiveHeaders + s * WireHeader.size),
                         expected: WireHeader(kind: .gradientShare, step: step, layer: -1, shard: s, shape: [values], payload: nil, count: values),
                         from: peer, payload: buffer.data)
            loads.append((Double(buffer[total]), Double(buffer[total + 1])))
            var offset = 0
            for (i, l) in layers.enumerated() {
                let n = l.weight.count, share = buffer.data + offset
                try body(i, share, wide[i] ? UnsafePointer(share + n) : nil, samples)
                offset += wide[i] ? 2 * n : n
            }
        }
        untrustedLoad = loads.isEmpty ? nil : (loads.map(\.compute).max()!, loads.map(\.idle).max()!)
    }

    /// Sends the split layers' weights and biases to every member, for the current step.
    package func publishWeights() throws {
        guard !group.isEmpty else { return }
        let tensors = layers.flatMap { [$0.weight] + ($0.bias.map { [$0] } ?? []) }
        let packed = arena.tensor(shape: [tensors.map(\.count).reduce(0, +)], avoiding: [])
        packed.pack(tensors)
        try sendToGroup(.weights, payload: packed, awaiting: "the weights of step \(currentStep())")
    }

    /// Tells the untrusted group that training is over. (A failure ends the job with
    /// MPI_Abort instead, which takes the untrusted ranks down too.)
    package func shutdown() throws {
        try sendToGroup(.shutdown, payload: nil, awaiting: "the shutdown message")
    }

    private func sendToGroup(_ kind: MessageKind, payload: Tensor?, awaiting what: String) throws {
        for s in active { try sendControl(kind, to: s, payload: payload) }
        try waitForMembers(active, awaiting: "\(what) to be taken")
    }

    /// Sends group member s a control message of the current step, not about one layer: its
    /// header, then `payload` (the weights) where there is one. The transfers join the
    /// member's pending requests, which the caller waits for.
    private func sendControl(_ kind: MessageKind, to s: Int, payload: Tensor? = nil) throws {
        let count = payload?.count ?? 0
        let header = WireHeader(kind: kind, step: currentStep(), layer: -1, shard: s, shape: [count],
                                payload: payload?.data, count: count)
        header.encode(into: sendHeaders + s * WireHeader.size)
        pending[s].append(try world.sendBytes(sendHeaders + s * WireHeader.size, count: WireHeader.size, to: group[s], tag: wireTag))
        if let payload { pending[s].append(try world.sendFloats(payload.data, count: count, to: group[s], tag: wireTag)) }
        bytesSent += WireHeader.size + 4 * count
    }

    // MARK: Collective (trusted ranks only)

    package func sumGradients(_ values: UnsafeMutablePointer<Float>, count: Int) throws {
        if let channel {
            try channel.sum(values, count: count, over: trustedComm, what: "the gradient sum of step \(currentStep())")
        } else {
            try trustedComm.sumInPlace(values, count: count, what: "the gradient sum of step \(currentStep())")
        }
    }

    package func sumOverTrusted(_ values: [Double]) throws -> [Double] { try trustedComm.sum(values) }

    package func sumOverTrusted(_ values: UnsafeMutablePointer<Float>, count: Int) throws {
        try trustedComm.sumInPlace(values, count: count, what: "the batch-norm statistics")
    }

    package func stepApplied(step: Int, parameters: [Parameter]) throws {
        if step % replicaCheckInterval == 0 { try checkReplicas(parameters.map(\.value), what: "parameters at step \(step)") }
    }

    package func checkReplicas(_ tensors: [Tensor], what: String) throws {
        try verifyReplicas(trustedComm, tensors: tensors, what: what)
    }

    /// The executor API cannot throw (the split convolution is pure compute); a transfer
    /// failure there ends the job at once, with the message on standard error.
    private func fatalOnError(_ body: () throws -> Void) {
        do { try body() } catch { failJob(world, "\(error)") }
    }
}

/// Checks that every replica holds bit-identical `tensors` (docs/DESIGN.md §4).
func verifyReplicas(_ comm: Communicator, tensors: [Tensor], what: String) throws {
    var sum: UInt64 = 0
    for t in tensors { sum = sum &* 31 &+ payloadChecksum(t.data, count: t.count) }
    // Compared as doubles of the two 32-bit halves, which doubles hold exactly.
    if try !comm.allAgree([Double(sum >> 32), Double(sum & 0xFFFF_FFFF)]) {
        throw ProtocolError("replicas diverged: the checksums of the \(what) differ across trusted ranks (rank \(comm.rank) has \(String(sum, radix: 16)))")
    }
}
