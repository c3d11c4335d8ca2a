import AsymModel
import AsymKernels
import AsymSplit
import AsymTrain

/// The loop of an untrusted rank: it serves one trusted rank, computing the residual
/// convolutions of its shard of every split layer, and joins the gradient reduction and
/// the optimizer step at the end of each training step. It never loads data and holds
/// nothing but the replicated weights, the residuals and the output gradients it receives.
package final class UntrustedServer {
    let world: Communicator
    let gradientComm: Communicator
    let model: Model
    let config: Config
    let worker = UntrustedWorker()
    let trustedRank: Int
    let shard: Int
    private var splitGrads: [Int: Tensor] = [:]
    private var inputs: [Int: Tensor] = [:]
    private let header: UnsafeMutableRawPointer
    private let fused: Tensor
    private let control = Tensor(shape: [1])
    /// Pending transfers, reused from message to message.
    private var requests: [Request] = []
    /// The step the next message belongs to.
    package private(set) var step: Int

    package init(world: Communicator, gradientComm: Communicator, layout: ClusterLayout, model: Model, config: Config,
                startStep: Int) throws {
        self.world = world
        self.gradientComm = gradientComm
        self.model = model
        self.config = config
        (trustedRank, shard) = layout.server(ofUntrusted: world.rank)
        for (conv, info, _) in try model.splitConvolutions(config) {
            worker.register(info, weight: conv.weight.value, bias: conv.bias?.value)
            splitGrads[info.layer] = conv.weight.grad
        }
        header = .allocate(byteCount: WireHeader.size, alignment: 8)
        fused = Tensor(shape: [model.parameterCount])
        step = startStep
    }

    deinit { header.deallocate() }

    /// Serves until the trusted rank says shutdown.
    package func run() throws {
        while true {
            requests.append(try world.receiveBytes(header, count: WireHeader.size, from: trustedRank, tag: wireTag))
            try world.waitAll(&requests)
            let h = WireHeader(decoding: header)
            guard h.magic == WireHeader.magic, h.version == WireHeader.version, let kind = MessageKind(rawValue: h.kind) else {
                throw protocolError(h, "not a valid asymml header")
            }
            guard h.step == Int64(step) else { throw protocolError(h, "expected step \(step)") }
            guard h.shard == Int32(shard) else { throw protocolError(h, "expected shard \(shard)") }
            switch kind {
            case .residual, .outputGradient:
                try serve(kind, h)
            case .stepEnd:
                guard h.count == 1 else { throw protocolError(h, "a step end carries the learning rate") }
                try receivePayload(h, into: control)
                try endStep(learningRate: Double(control[0]))
            case .shutdown:
                return
            default:
                throw protocolError(h, "an untrusted rank never receives \(kind)")
            }
        }
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
        // Residuals are kept per layer until that layer's backward pass.
        let key = forward ? Int(h.layer) : -1 - Int(h.layer)
        let input = Tensor.reuse(inputs[key], shape: [n] + sampleShape)
        inputs[key] = input
        try receivePayload(h, into: input)
        let result = forward ? worker.forward(layer: Int(h.layer), residual: input, batch: n)
                             : worker.backward(layer: Int(h.layer), outputGrad: input, batch: n)
        let replyShape = forward ? [g.outChannels, g.outHeight, g.outWidth] : [g.inChannels, g.height, g.width]
        let reply = WireHeader(kind: forward ? .outputShare : .inputGradient, step: step, layer: Int(h.layer), shard: shard,
                               shape: [n] + replyShape, payload: result.data, count: result.count)
        reply.encode(into: header)
        requests.append(try world.sendBytes(header, count: WireHeader.size, to: trustedRank, tag: wireTag))
        requests.append(try world.sendFloats(result.data, count: result.count, to: trustedRank, tag: wireTag))
        try world.waitAll(&requests)
    }

    /// Receives the payload that `h` announces into `tensor` and checks its checksum.
    private func receivePayload(_ h: WireHeader, into tensor: Tensor) throws {
        let count = Int(h.count)
        requests.append(try world.receiveFloats(tensor.data, count: count, from: trustedRank, tag: wireTag))
        try world.waitAll(&requests)
        guard payloadChecksum(tensor.data, count: count) == h.checksum else { throw protocolError(h, "payload checksum mismatch") }
    }

    /// The end of a training step: the weight-gradient shares join the fused allreduce and
    /// every replica applies the same optimizer step.
    private func endStep(learningRate: Double) throws {
        model.zeroGradients()
        worker.addGradientShares(into: splitGrads)
        try model.parameters.withFused(fused) { try gradientComm.sumInPlace($0, count: $1) }
        SGDOptimizer.apply(config.optimizer, learningRate: learningRate, to: model.parameters)
        step += 1
        if step % replicaCheckInterval == 0 { try verifyReplicas(gradientComm, parameters: model.parameters, step: step) }
    }

    private func protocolError(_ h: WireHeader, _ why: String) -> ProtocolError {
        ProtocolError(description: "wire protocol: rank \(world.rank) (untrusted) received from rank \(trustedRank) (trusted): \(why): [\(h)]")
    }
}
