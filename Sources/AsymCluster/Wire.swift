import AsymKernels

/// What a message carries. Trusted to untrusted: residual, output gradient, step end,
/// weights, shutdown; untrusted to trusted: output share, input gradient, gradient share.
package enum MessageKind: UInt32, CustomStringConvertible {
    case residual = 1, outputShare, outputGradient, inputGradient, stepEnd, shutdown
    /// The untrusted rank's weight-gradient shares of every split layer (after a step end).
    case gradientShare
    /// The split layers' weights and biases (on start, and after every optimizer step).
    case weights
    /// Masked output gradients: answer with the input gradient, then `weightShares`.
    case outputGradientPerSample
    /// corr(R_s, dY_s) of every (masked) sample of a shard, [n, Cout, C, k, k].
    case weightShares
    /// Spread-masked output gradients: answer with the input gradient; the step's share of
    /// this layer is accumulated in double and crosses at the step end as a float high part
    /// and a float low part (`conv2dWeightGradientWide`).
    case outputGradientWide
    package var description: String {
        switch self {
        case .residual: return "residual"
        case .outputShare: return "output share"
        case .outputGradient: return "output gradient"
        case .inputGradient: return "input gradient"
        case .stepEnd: return "step end"
        case .shutdown: return "shutdown"
        case .gradientShare: return "gradient share"
        case .weights: return "weights"
        case .outputGradientPerSample: return "output gradient (per-sample shares)"
        case .weightShares: return "per-sample weight shares"
        case .outputGradientWide: return "output gradient (wide share)"
        }
    }
}

/// The header in front of every message between a trusted and an untrusted rank (docs/DESIGN.md §4):
/// magic, protocol version, kind, step, layer, shard, shape, element count and a checksum
/// of the payload. 64 bytes, little-endian.
package struct WireHeader: Equatable, CustomStringConvertible {
    package static let magic: UInt32 = 0x4C4D_5341  // "ASML" read as little-endian bytes
    package static let version: UInt32 = 3
    package static let size = 64

    package var magic = WireHeader.magic
    package var version = WireHeader.version
    package var kind: UInt32
    package var layer: Int32
    package var shard: Int32
    package var shape: [Int32]  // 4 values, unused ones 1
    package var step: Int64
    package var count: Int64
    package var checksum: UInt64
    /// The first sample of the payload within the shard (micro-batches, docs/DESIGN.md §4.3, and
    /// the pieces of a spread pass, §9): a reply carries its request's. Version 3 (the padding
    /// of version 2, which was 0).
    package var first: Int32 = 0

    package init(kind: MessageKind, step: Int, layer: Int, shard: Int, shape: [Int], payload: UnsafePointer<Float>?, count: Int,
                first: Int = 0) {
        self.kind = kind.rawValue
        self.first = Int32(first)
        self.step = Int64(step)
        self.layer = Int32(layer)
        self.shard = Int32(shard)
        self.shape = (shape + [1, 1, 1, 1]).prefix(4).map { Int32($0) }
        self.count = Int64(count)
        checksum = payload.map { payloadChecksum($0, count: count) } ?? 0
    }

    package func encode(into bytes: UnsafeMutableRawPointer) {
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: WireHeader.size)
        var o = 0
        func put<T>(_ v: T) { bytes.storeBytes(of: v, toByteOffset: o, as: T.self); o += MemoryLayout<T>.size }
        put(magic); put(version); put(kind); put(layer); put(shard)
        for s in shape { put(s) }
        put(step); put(count); put(checksum); put(first)
    }

    package init(decoding bytes: UnsafeRawPointer) {
        var o = 0
        func get<T>(_: T.Type) -> T { defer { o += MemoryLayout<T>.size }; return bytes.loadUnaligned(fromByteOffset: o, as: T.self) }
        magic = get(UInt32.self); version = get(UInt32.self); kind = get(UInt32.self)
        layer = get(Int32.self); shard = get(Int32.self)
        shape = (0..<4).map { _ in get(Int32.self) }
        step = get(Int64.self); count = get(Int64.self); checksum = get(UInt64.self); first = get(Int32.self)
    }

    package var description: String {
        let k = MessageKind(rawValue: kind).map(\.description) ?? "unknown kind \(kind)"
        return "\(k), step \(step), layer \(layer), shard \(shard)\(first != 0 ? " from sample \(first)" : ""), shape \(shape), \(count) values"
    }

    /// Why `self` (received) is not `expected`, or nil when it is; the payload is checked
    /// separately (`checksum`).
    package func mismatch(expected e: WireHeader) -> String? {
        if magic != WireHeader.magic { return String(format: "bad magic 0x%08x (not an asymml message)", magic) }
        if version != WireHeader.version { return "protocol version \(version), expected \(WireHeader.version)" }
        if kind != e.kind || step != e.step || layer != e.layer || shard != e.shard || shape != e.shape || count != e.count
            || first != e.first {
            return "got [\(self)], expected [\(e)]"
        }
        return nil
    }
}

/// A Fletcher-style checksum over the payload's 32-bit words, in eight interleaved lanes so
/// that it vectorises: one cheap pass (it runs on both sides of every transfer), and unlike
/// a plain sum it sees a swap of two values.
package func payloadChecksum(_ values: UnsafePointer<Float>, count: Int) -> UInt64 {
    payloadDigest(values, count: count).checksum
}

/// The checksum of `payloadChecksum` and, from the same pass, whether every value is finite
/// (the exponent bits are all ones for NaN and infinity only): what the trusted rank checks
/// of every reply.
package func payloadDigest(_ values: UnsafePointer<Float>, count: Int) -> (checksum: UInt64, finite: Bool) {
    let exponent: UInt32 = 0x7F80_0000
    var a = SIMD8<UInt32>(repeating: 0), b = SIMD8<UInt32>(repeating: 0), seen = SIMD8<UInt32>(repeating: 0)
    let raw = UnsafeRawPointer(values)
    var i = 0
    while i + 8 <= count {
        let w = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self)
        a &+= w
        b &+= a
        seen = pointwiseMax(seen, w & exponent)
        i += 8
    }
    var tailA: UInt64 = 0, tailB: UInt64 = 0, tailSeen: UInt32 = 0
    while i < count {
        let w = raw.load(fromByteOffset: 4 * i, as: UInt32.self)
        tailA &+= UInt64(w)
        tailB &+= tailA
        tailSeen = max(tailSeen, w & exponent)
        i += 1
    }
    var sum = UInt64(count) ^ (tailA << 32) ^ tailB
    for lane in 0..<8 {
        sum = sum &* 0x100000001B3 ^ (UInt64(a[lane]) << 32 | UInt64(b[lane]))
    }
    return (sum, max(seen.max(), tailSeen) != exponent)
}
