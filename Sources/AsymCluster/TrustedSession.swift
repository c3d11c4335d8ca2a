import AsymModel
import AsymKernels
import AsymSplit
import AsymTrain
import Dispatch

/// The MPI tag of every message between a trusted rank and its untrusted group.
let wireTag = 17
/// Replicas compare parameter checksums every this many steps.
let replicaCheckInterval = 50

/// Raised when a message breaks the protocol: the job must end (the caller aborts).
package struct ProtocolError: Error, CustomStringConvertible {
    package let description: String
}

/// A trusted rank's view of the cluster: the untrusted executor over MPI (residuals out,
/// output shares back, in shards across its untrusted group) and the collective operations
/// of data-parallel training.
package final class TrustedSession: Collective, UntrustedExecutor {
    let world: Communicator
    let trustedComm: Communicator
    /// The ranks that hold gradients: everyone in asym mode, the trusted ranks otherwise.
    let gradientComm: Communicator
    package let layout: ClusterLayout
    package let trustedIndex: Int
    package var trustedCount: Int { layout.trusted.count }
    /// The untrusted world ranks this rank sends shards to.
    package let group: [Int]

    private var infos: [Int: SplitLayerInfo] = [:]
    private var outputs: [Int: Tensor] = [:], inputGrads: [Int: Tensor] = [:]
    private var pending: [Request] = []
    /// The replies an exchange waits for: group member, its samples, the header it must carry.
    private var expected: [(shard: Int, peer: Int, samples: Range<Int>, header: WireHeader)] = []
    private let sendHeaders: UnsafeMutableRawPointer, receiveHeaders: UnsafeMutableRawPointer
    private var step = 0
    private var waitSeconds = 0.0
    /// Bytes sent to and received from the untrusted group so far.
    package private(set) var bytesSent = 0, bytesReceived = 0

    package init(world: Communicator, trustedComm: Communicator, gradientComm: Communicator, layout: ClusterLayout) {
        self.world = world
        self.trustedComm = trustedComm
        self.gradientComm = gradientComm
        self.layout = layout
        trustedIndex = layout.trusted.firstIndex(of: world.rank)!
        group = layout.mode == .plain ? [] : layout.group(ofTrusted: trustedIndex)
        sendHeaders = .allocate(byteCount: max(1, group.count) * WireHeader.size, alignment: 8)
        receiveHeaders = .allocate(byteCount: max(1, group.count) * WireHeader.size, alignment: 8)
    }

    deinit {
        sendHeaders.deallocate()
        receiveHeaders.deallocate()
    }

    /// Continues the protocol's step count from a checkpoint.
    package func resume(atStep step: Int) { self.step = step }

    // MARK: UntrustedExecutor

    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) { infos[info.layer] = info }

    package func startForward(_ r: Residual) {
        let g = infos[r.layer]!.geometry
        let y = Tensor.reuse(outputs[r.layer], shape: [r.batch, g.outChannels, g.outHeight, g.outWidth])
        outputs[r.layer] = y
        exchange(send: .residual, r.tensor.data, [g.inChannels, g.height, g.width],
                 receive: .outputShare, y.data, [g.outChannels, g.outHeight, g.outWidth], layer: r.layer, batch: r.batch)
    }

    package func finishForward(layer: Int) -> Tensor {
        complete()
        return outputs[layer]!
    }

    package func startBackward(_ d: OutputGradient) {
        let g = infos[d.layer]!.geometry
        let dx = Tensor.reuse(inputGrads[d.layer], shape: [d.batch, g.inChannels, g.height, g.width])
        inputGrads[d.layer] = dx
        exchange(send: .outputGradient, d.tensor.data, [g.outChannels, g.outHeight, g.outWidth],
                 receive: .inputGradient, dx.data, [g.inChannels, g.height, g.width], layer: d.layer, batch: d.batch)
    }

    package func finishBackward(layer: Int) -> Tensor {
        complete()
        return inputGrads[layer]!
    }

    package func progress() {
        guard !pending.isEmpty else { return }
        fatalOnError { try world.testAll(&pending) }
    }

    /// Seconds this rank waited for its untrusted group since the last call: the part of the
    /// step that the untrusted side's compute and the transfers did not overlap.
    package func takeComputeSeconds() -> Double {
        defer { waitSeconds = 0 }
        return waitSeconds
    }

    /// Sends shard s of `payload` (samples of `sampleShape`) to group member s, with its
    /// header, and posts the receive of its reply straight into `reply` at the same samples.
    private func exchange(send kind: MessageKind, _ payload: UnsafePointer<Float>, _ sampleShape: [Int],
                          receive replyKind: MessageKind, _ reply: UnsafeMutablePointer<Float>, _ replyShape: [Int],
                          layer: Int, batch: Int) {
        let inSize = sampleShape.reduce(1, *), outSize = replyShape.reduce(1, *)
        expected.removeAll(keepingCapacity: true)
        fatalOnError {
            for (s, peer) in group.enumerated() {
                let samples = shardRange(batch, shards: group.count, index: s)
                let n = samples.count
                if n == 0 { continue }  // a small (evaluation) batch leaves this member idle
                let data = payload + samples.lowerBound * inSize
                let header = WireHeader(kind: kind, step: step, layer: layer, shard: s, shape: [n] + sampleShape,
                                        payload: data, count: n * inSize)
                header.encode(into: sendHeaders + s * WireHeader.size)
                pending.append(try world.receiveBytes(receiveHeaders + s * WireHeader.size, count: WireHeader.size, from: peer, tag: wireTag))
                pending.append(try world.receiveFloats(reply + samples.lowerBound * outSize, count: n * outSize, from: peer, tag: wireTag))
                pending.append(try world.sendBytes(sendHeaders + s * WireHeader.size, count: WireHeader.size, to: peer, tag: wireTag))
                pending.append(try world.sendFloats(data, count: n * inSize, to: peer, tag: wireTag))
                expected.append((s, peer, samples, WireHeader(kind: replyKind, step: step, layer: layer, shard: s,
                                                              shape: [n] + replyShape, payload: nil, count: n * outSize)))
                bytesSent += WireHeader.size + 4 * n * inSize
                bytesReceived += WireHeader.size + 4 * n * outSize
            }
        }
        replyBase = reply
        replySampleSize = outSize
    }
    private var replyBase: UnsafeMutablePointer<Float>?
    private var replySampleSize = 0

    /// Waits for the exchange and validates every reply's header and checksum.
    private func complete() {
        let t0 = DispatchTime.now().uptimeNanoseconds
        fatalOnError {
            try world.waitAll(&pending)
            for (s, peer, samples, header) in expected {
                let got = WireHeader(decoding: receiveHeaders + s * WireHeader.size)
                if let why = got.mismatch(expected: header) {
                    throw ProtocolError(description: "wire protocol: rank \(world.rank) (trusted) received from rank \(peer) (untrusted): \(why)")
                }
                let sum = payloadChecksum(replyBase! + samples.lowerBound * replySampleSize, count: samples.count * replySampleSize)
                if sum != got.checksum {
                    throw ProtocolError(description: "wire protocol: rank \(world.rank) (trusted) received from rank \(peer) (untrusted): payload checksum mismatch for [\(got)]")
                }
            }
        }
        waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    // MARK: Collective

    package func gradientsReady(step: Int, learningRate: Double) throws {
        guard layout.mode == .asym else { return }
        var lr = [Float(learningRate)]
        for (s, peer) in group.enumerated() {
            try sendControl(.stepEnd, to: peer, shard: s, payload: &lr)
        }
    }

    package func sumGradients(_ values: UnsafeMutablePointer<Float>, count: Int) throws {
        try gradientComm.sumInPlace(values, count: count)
    }

    package func sumOverTrusted(_ values: [Double]) throws -> [Double] { try trustedComm.sum(values) }

    package func stepApplied(step finished: Int, parameters: [Parameter]) throws {
        step = finished + 1
        if step % replicaCheckInterval == 0 { try verifyReplicas(gradientComm, parameters: parameters, step: step) }
    }

    /// Tells the untrusted group that training is over. (A failure ends the job with
    /// MPI_Abort instead, which takes the untrusted ranks down too.)
    package func shutdown() throws {
        var none: [Float] = []
        for (s, peer) in group.enumerated() { try sendControl(.shutdown, to: peer, shard: s, payload: &none) }
    }

    private func sendControl(_ kind: MessageKind, to peer: Int, shard: Int, payload: inout [Float]) throws {
        let header = WireHeader(kind: kind, step: step, layer: -1, shard: shard, shape: [payload.count], payload: payload,
                                count: payload.count)
        header.encode(into: sendHeaders)
        var requests = [try world.sendBytes(sendHeaders, count: WireHeader.size, to: peer, tag: wireTag)]
        if !payload.isEmpty { requests.append(try world.sendFloats(payload, count: payload.count, to: peer, tag: wireTag)) }
        try world.waitAll(&requests)
    }

    /// The executor API cannot throw (the split convolution is pure compute); a transfer
    /// failure there ends the job at once, with the message on standard error.
    private func fatalOnError(_ body: () throws -> Void) {
        do { try body() } catch { failJob(world, "\(error)") }
    }
}

/// Checks that every replica holds bit-identical parameters (docs/DESIGN.md §4).
func verifyReplicas(_ comm: Communicator, parameters: [Parameter], step: Int) throws {
    var sum: UInt64 = 0
    for p in parameters { sum = sum &* 31 &+ payloadChecksum(p.value.data, count: p.value.count) }
    // Compared as doubles of the two 32-bit halves, which doubles hold exactly.
    if try !comm.allAgree([Double(sum >> 32), Double(sum & 0xFFFF_FFFF)]) {
        throw ProtocolError(description: "replicas diverged at step \(step): parameter checksums differ across ranks (rank \(comm.rank) has \(String(sum, radix: 16)))")
    }
}
