import AsymKernels
import AsymModel
import AsymSplit
import Foundation

/// The loop of an untrusted rank: it serves one trusted rank, computing the residual
/// convolutions of its shard of every split layer, and hands back its weight-gradient
/// shares at the end of each step.
///
/// It holds the split layers' weights and biases and nothing else of the model: they come
/// from its trusted rank over MPI (on start, on resume and after every optimizer step), so
/// it never reads a checkpoint or the run folder, never loads data, and takes part in no
/// gradient collective. What it receives is exactly: residuals and output gradients of its
/// shard, the split layers' weights, and control headers (`asym.audit` logs each one).
package final class UntrustedServer {
    let world: Communicator
    package let worker = UntrustedWorker()
    let trustedRank: Int
    let shard: Int
    /// The split layers' weights and biases, in layer order (what `weights` messages fill).
    private let tensors: [Tensor]
    private let shares: Tensor
    private var inputs: [Int: Tensor] = [:]
    private let header: UnsafeMutableRawPointer
    /// Pending receives, reused from message to message.
    private var requests: [Request] = []
    /// Replies still on their way: this rank goes on to the next message while the trusted
    /// rank takes them (it takes a reply only when it next calls into MPI, often after its own
    /// compute), so each keeps its result tensor and its header buffer alive until done.
    private var outgoing: [(requests: [Request], result: Tensor, header: UnsafeMutableRawPointer)] = []
    /// Header buffers of finished replies, for reuse.
    private var spareHeaders: [UnsafeMutableRawPointer] = []
    /// The step of the weights held: set by the trusted rank's `weights` messages.
    private var step: Int?
    private let audit: AuditLog?
    /// Seconds spent waiting for the trusted rank's next message since the last step end
    /// (the compute seconds come from the worker's clock).
    private var idleSeconds = 0.0
    /// Misbehaviour at the message level (`--inject-fault` with a wire kind): once, at the
    /// first result reply of its step or later.
    package var wireFault: WireFault?
    /// Values after the shares in a `gradientShare` payload: this rank's compute and idle
    /// seconds of the step, measured here (docs/DESIGN.md §4.2).
    package static let loadValues = 2

    package init(world: Communicator, layout: ClusterLayout, config: Config, audit: AuditLog?) throws {
        self.world = world
        self.audit = audit
        (trustedRank, shard) = layout.server(ofUntrusted: world.rank)
        // The model is built only to learn the split layers' shapes, then dropped: this rank
        // keeps its own zeroed copies of those layers' weights and biases, filled over MPI.
        var held: [Tensor] = []
        for (conv, info, _) in try Model(config.model).splitConvolutions(config) {
            let weight = Tensor(shape: conv.weight.value.shape), bias = conv.bias.map { Tensor(shape: $0.value.shape) }
            worker.register(info, weight: weight, bias: bias)
            held += [weight] + (bias.map { [$0] } ?? [])
        }
        tensors = held
        // Room for every layer's share with its low-order part (wide shares).
        shares = Tensor(shape: [2 * worker.weightCount + UntrustedServer.loadValues])
        header = .allocate(byteCount: WireHeader.size, alignment: 8)
    }

    deinit {
        header.deallocate()
        for h in spareHeaders + outgoing.map(\.header) { h.deallocate() }
    }

    /// Serves until the trusted rank says shutdown.
    package func run() throws {
        while true {
            let t0 = DispatchTime.now().uptimeNanoseconds
            requests.append(try world.receiveBytes(header, count: WireHeader.size, from: trustedRank, tag: wireTag))
            try world.waitAll(&requests, peer: "rank \(trustedRank) (trusted)",
                              awaiting: "its next message\(step.map { " (step \($0))" } ?? "")")
            idleSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            let h = WireHeader(decoding: header)
            guard h.magic == WireHeader.magic, h.version == WireHeader.version, let kind = MessageKind(rawValue: h.kind) else {
                throw protocolError(h, "not a valid asymml header")
            }
            guard h.shard == Int32(shard) else { throw protocolError(h, "expected shard \(shard)") }
            if kind == .weights {
                try receiveWeights(h)
                continue
            }
            guard let step else { throw protocolError(h, "the weights must come first") }
            guard h.step == Int64(step) else { throw protocolError(h, "expected step \(step)") }
            switch kind {
            case .residual, .outputGradient, .outputGradientPerSample, .outputGradientWide:
                try serve(kind, h)
            case .stepEnd:
                audit?.record(h, payload: nil)
                try sendShares()
            case .shutdown:
                audit?.record(h, payload: nil)
                try finishReplies()
                return
            default:
                throw protocolError(h, "an untrusted rank never receives \(kind)")
            }
        }
    }

    /// The weights of the split layers, for step `h.step` on (never an older step).
    private func receiveWeights(_ h: WireHeader) throws {
        let held = tensors.map(\.count).reduce(0, +)
        guard h.count == Int64(held) else { throw protocolError(h, "weights of \(h.count) values, but the split layers hold \(held)") }
        if let step, h.step < Int64(step) { throw protocolError(h, "weights of an older step than \(step)") }
        let packed = Tensor.reuse(inputs[Int.min], shape: [held])
        inputs[Int.min] = packed
        try receivePayload(h, into: packed)
        packed.unpack(into: tensors)
        step = Int(h.step)
    }

    /// Receives a residual (or an output gradient), computes the output share (or the input
    /// gradient and the weight-gradient share) and sends it back.
    private func serve(_ kind: MessageKind, _ h: WireHeader) throws {
        guard let g = worker.geometry(layer: Int(h.layer)) else {
            throw protocolError(h, "no split layer \(h.layer) (there are \(worker.layerCount))")
        }
        let n = Int(h.shape[0])
        let forward = kind == .residual
        let sampleShape = forward ? [g.inChannels, g.height, g.width] : [g.outChannels, g.outHeight, g.outWidth]
        guard n > 0, h.shape.map(Int.init) == [n] + sampleShape, h.count == Int64(n * sampleShape.reduce(1, *)) else {
            throw protocolError(h, "shape does not match layer \(h.layer), \(forward ? "input" : "output") \(sampleShape)")
        }
        // Residuals are kept per layer, at their place in the shard (`first`: micro-batches
        // arrive one by one), until that layer's backward pass.
        let first = Int(h.first), samples = first..<(first + n), size = sampleShape.reduce(1, *)
        guard first >= 0, kind != .outputGradientPerSample || first == 0 else {
            throw protocolError(h, "no micro-batch may start at sample \(first) here")
        }
        let key = forward ? Int(h.layer) : -1 - Int(h.layer)
        let input = Tensor.grown(inputs[key], shape: [samples.upperBound] + sampleShape, keeping: forward ? first * size : 0)
        inputs[key] = input
        try receivePayload(h, into: input, at: first * size)
        let layer = Int(h.layer)
        if forward {
            let y = worker.forward(layer: layer, residual: input, samples: samples, batch: samples.upperBound)
            try reply(.outputShare, layer: layer, shape: [n, g.outChannels, g.outHeight, g.outWidth], y, first: first)
        } else if kind == .outputGradientPerSample {
            let (dx, shares) = worker.backwardPerSample(layer: layer, outputGrad: input, batch: n)
            try reply(.inputGradient, layer: layer, shape: [n, g.inChannels, g.height, g.width], dx)
            try reply(.weightShares, layer: layer, shape: shares.shape, shares)
        } else {
            let dx = worker.backward(layer: layer, outputGrad: input, samples: samples, batch: samples.upperBound,
                                     wide: kind == .outputGradientWide)
            try reply(.inputGradient, layer: layer, shape: [n, g.inChannels, g.height, g.width], dx, first: first)
        }
    }

    /// The step's weight-gradient shares of every split layer, packed in layer order (a wide
    /// share followed by its low-order part), then this rank's compute and idle seconds of
    /// the step.
    private func sendShares() throws {
        var offset = 0
        worker.takeGradientShares { _, share, low in
            (shares.data + offset).update(from: share.data, count: share.count)
            offset += share.count
            if let low {
                (shares.data + offset).update(from: low.data, count: low.count)
                offset += low.count
            }
        }
        shares[offset] = Float(worker.takeComputeSeconds())
        shares[offset + 1] = Float(idleSeconds)
        idleSeconds = 0
        try reply(.gradientShare, layer: -1, shape: [offset + UntrustedServer.loadValues], shares)
        try finishReplies()
    }

    /// Sends `result` (from sample `first` on, as many values as `shape` holds) back, without
    /// waiting for the trusted rank to take it (`finishReplies` waits).
    private func reply(_ kind: MessageKind, layer: Int, shape: [Int], _ result: Tensor, first: Int = 0) throws {
        let count = shape.reduce(1, *), data = result.data + first * (count / shape[0])
        let h = WireHeader(kind: kind, step: step!, layer: layer, shard: shard, shape: shape, payload: data, count: count,
                           first: first)
        if let fault = wireFault, step! >= fault.fromStep {
            wireFault = nil
            for (header, payload) in fault.messages(h, data, count: count) {
                let buffer = UnsafeMutableRawPointer.allocate(byteCount: WireHeader.size, alignment: 8)
                header.encode(into: buffer)
                let n = header.count == 0 ? 0 : payload.count
                var sent = [try world.sendBytes(buffer, count: WireHeader.size, to: trustedRank, tag: wireTag)]
                if n > 0 { sent.append(try world.sendFloats(payload.data, count: n, to: trustedRank, tag: wireTag)) }
                outgoing.append((sent, payload, buffer))
            }
            return
        }
        let buffer = spareHeaders.popLast() ?? .allocate(byteCount: WireHeader.size, alignment: 8)
        h.encode(into: buffer)
        let sent = [try world.sendBytes(buffer, count: WireHeader.size, to: trustedRank, tag: wireTag),
                    try world.sendFloats(data, count: count, to: trustedRank, tag: wireTag)]
        outgoing.append((sent, result, buffer))
        // Drop the replies already taken, oldest first (MPI delivers them in order).
        while !outgoing.isEmpty, try world.testAll(&outgoing[0].requests) {
            spareHeaders.append(outgoing.removeFirst().header)
        }
    }

    /// Waits until the trusted rank has taken every reply: once the step's shares are sent
    /// (the next step reuses the result buffers) and before shutting down.
    private func finishReplies() throws {
        for i in outgoing.indices {
            try world.waitAll(&outgoing[i].requests, peer: "rank \(trustedRank) (trusted)",
                              awaiting: "it to take the replies of step \(step.map(String.init) ?? "-")")
            spareHeaders.append(outgoing[i].header)
        }
        outgoing.removeAll(keepingCapacity: true)
    }

    /// Receives the payload that `h` announces into `tensor` from value `offset` on and checks
    /// its checksum.
    private func receivePayload(_ h: WireHeader, into tensor: Tensor, at offset: Int = 0) throws {
        let count = Int(h.count), data = tensor.data + offset
        requests.append(try world.receiveFloats(data, count: count, from: trustedRank, tag: wireTag))
        try world.waitAll(&requests, peer: "rank \(trustedRank) (trusted)", awaiting: "the payload of its \(h)")
        guard payloadChecksum(data, count: count) == h.checksum else { throw protocolError(h, "payload checksum mismatch") }
        audit?.record(h, payload: data)
    }

    private func protocolError(_ h: WireHeader, _ why: String) -> ProtocolError {
        ProtocolError("wire protocol: rank \(world.rank) (untrusted) received from rank \(trustedRank) (trusted): \(why): [\(h)]")
    }
}
