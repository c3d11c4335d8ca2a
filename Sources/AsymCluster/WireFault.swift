import AsymKernels

/// A misbehaving untrusted rank at the message level (`--inject-fault RANK:KIND:STEP` with a
/// wire kind, tests and demos): what a hostile rank can send instead of an honest reply.
/// The trusted rank must end the job naming the rank and what was wrong, never trap, hang
/// past `cluster.timeout_s`, write outside a buffer or allocate by a number the rank sent.
package struct WireFault: Equatable {
    package enum Kind: String, CaseIterable {
        /// Header fields: not an asymml message, another protocol version, or the wrong kind,
        /// step, layer, shard or shape.
        case magic, version, kind, step, layer, shard, shape
        /// The header and the payload both longer, or both shorter, than asked.
        case countLarger = "count-larger", countSmaller = "count-smaller"
        /// The header as asked, the payload cut to half.
        case truncated
        /// The payload's checksum does not match.
        case checksum
        /// The reply sent twice.
        case duplicate
        /// A reply nobody asked for (another layer's output share), after the honest one.
        case unrequested
        /// One value of the payload NaN or infinite, under a valid header and checksum.
        case nan, inf
        /// 10,000 small messages in a burst after the honest reply.
        case flood
    }
    package let kind: Kind
    /// The first step (of the weights held) at which the rank misbehaves, once.
    package let fromStep: Int

    package init(_ kind: Kind, fromStep: Int) { self.kind = kind; self.fromStep = fromStep }

    /// `RANK:KIND:STEP` with a wire kind; nil when KIND is not one (it may be a numeric fault).
    package static func parse(_ text: String) -> (rank: Int, fault: WireFault)? {
        let parts = text.split(separator: ":").map(String.init)
        guard parts.count == 3, let rank = Int(parts[0]), rank >= 1, let kind = Kind(rawValue: parts[1]),
              let step = Int(parts[2]), step >= 0 else { return nil }
        return (rank, WireFault(kind, fromStep: step))
    }

    /// The messages a reply becomes: (header, payload values) in sending order. The honest
    /// reply is `header` with `payload` of `count` values.
    func messages(_ header: WireHeader, _ payload: UnsafePointer<Float>, count: Int) -> [(WireHeader, Tensor)] {
        func values(_ n: Int, _ edit: (Tensor) -> Void = { _ in }) -> Tensor {
            let t = Tensor(shape: [max(n, 1)])
            t.data.update(from: payload, count: min(n, count))
            edit(t)
            return t
        }
        func honest(_ edit: (inout WireHeader) -> Void = { _ in }) -> (WireHeader, Tensor) {
            var h = header
            edit(&h)
            return (h, values(count))
        }
        func withPayload(_ t: Tensor, count n: Int) -> (WireHeader, Tensor) {
            var h = header
            h.count = Int64(n)
            h.checksum = payloadChecksum(t.data, count: n)
            return (h, t)
        }
        switch kind {
        case .magic: return [honest { $0.magic ^= 0xFF }]
        case .version: return [honest { $0.version += 1 }]
        case .kind: return [honest { $0.kind = $0.kind == MessageKind.outputShare.rawValue ? MessageKind.inputGradient.rawValue : MessageKind.outputShare.rawValue }]
        case .step: return [honest { $0.step += 1 }]
        case .layer: return [honest { $0.layer += 1 }]
        case .shard: return [honest { $0.shard += 1 }]
        case .shape: return [honest { $0.shape[1] += 1 }]
        case .countLarger: return [withPayload(values(count + 64), count: count + 64)]
        case .countSmaller: return [withPayload(values(max(count - 64, 1)), count: max(count - 64, 1))]
        case .truncated: return [(header, values(count / 2))]
        case .checksum: return [honest { $0.checksum ^= 1 }]
        case .duplicate: return [honest(), honest()]
        case .unrequested:
            let extra = WireHeader(kind: .outputShare, step: Int(header.step), layer: 0, shard: Int(header.shard), shape: [1, 4],
                                   payload: nil, count: 4)
            return [honest(), (extra, Tensor(shape: [4]))]
        case .nan, .inf:
            let t = values(count) { $0[count / 2] = self.kind == .nan ? .nan : .infinity }
            return [withPayload(t, count: count)]
        case .flood:
            var garbage = header
            garbage.count = 0
            return [honest()] + Array(repeating: (garbage, Tensor(shape: [1])), count: 10_000)
        }
    }
}
