import AsymKernels
import Dispatch

/// A deliberate corruption of untrusted results, for tests and demonstrations of the
/// integrity checks (design §8): what a malicious rank might return.
public struct Fault: Equatable {
    public enum Kind: Equatable {
        /// One value changed by `relative` times the result's largest |entry|, at `index`
        /// (nil: a random one).
        case flip(index: Int?, relative: Float)
        /// The whole result scaled.
        case scale(Float)
        case zero
        /// The previous step's result for that layer, again.
        case replay
        /// A targeted additive pattern: `relative` times the share's largest |entry| added
        /// to every weight of output channel `channel` (always on the weight-gradient share).
        case grad(channel: Int, relative: Float)
    }
    public var kind: Kind
    public var target: IntegrityCheck
    /// The first step (counted in handed-out gradient shares) with the fault.
    public var fromStep: Int
    /// The split layer to corrupt; nil: every one.
    public var layer: Int?

    public init(_ kind: Kind, target: IntegrityCheck = .outputShare, fromStep: Int = 0, layer: Int? = nil) {
        if case .grad = kind { self.target = .gradientShare } else { self.target = target }
        self.kind = kind; self.fromStep = fromStep; self.layer = layer
    }
}

/// What an untrusted rank computes for the split layers: residual convolutions forward, input
/// gradients and its weight-gradient share backward. It runs on the untrusted side (an
/// untrusted rank, or in-process for tests and single-process runs) and sees only what that
/// side receives: residuals and output gradients.
public final class UntrustedWorker {
    struct Slot {
        let info: SplitLayerInfo
        let weight: Tensor
        let bias: Tensor?
        /// The share corr(R, dY) of dW, summed over the step's backward passes.
        let gradShare: Tensor
        var residual: Tensor?
        var output: Tensor?
        var inputGrad: Tensor?
        /// The last result of each kind, kept only for a replay fault.
        var previous: [IntegrityCheck: Tensor] = [:]
    }
    private var slots: [Int: Slot] = [:]
    private let scratch = Scratch()
    /// Seconds spent computing since the last `takeComputeSeconds()`, and in all.
    private var seconds = 0.0
    public private(set) var totalSeconds = 0.0
    /// Steps finished: gradient shares handed out.
    public private(set) var step = 0
    public var fault: Fault?
    private var faultRandom = RNG(seed: 0xFA17)

    public init() {}

    /// Registers split layer `info` with its (replicated) weight and bias, read only.
    public func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        slots[info.layer] = Slot(info: info, weight: weight, bias: bias, gradShare: Tensor(shape: weight.shape))
    }

    public func geometry(layer: Int) -> ConvGeometry? { slots[layer]?.info.geometry }
    public var layerCount: Int { slots.count }

    /// Y_U = conv(R, W) + b for `batch` samples; keeps R for the backward pass.
    public func forward(layer: Int, residual: Tensor, batch: Int) -> Tensor {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var s = slots[layer]!
        let g = s.info.geometry
        let y = Tensor.reuse(s.output, shape: [batch, g.outChannels, g.outHeight, g.outWidth])
        conv2dForward(g, x: residual.data, batch: batch, weight: s.weight.data, bias: s.bias?.data, y: y.data, scratch: scratch)
        s.output = y
        s.residual = residual
        count(since: t0)
        tamper(y, check: .outputShare, slot: &s)
        slots[layer] = s
        return y
    }

    /// dX = conv_transpose(dY, W); accumulates corr(R, dY) into the layer's gradient share.
    public func backward(layer: Int, outputGrad dy: Tensor, batch: Int) -> Tensor {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var s = slots[layer]!
        let g = s.info.geometry
        let dx = Tensor.reuse(s.inputGrad, shape: [batch, g.inChannels, g.height, g.width])
        conv2dBackward(g, x: s.residual!.data, batch: batch, weight: s.weight.data, dy: dy.data,
                       dWeight: s.gradShare.data, dBias: nil, dx: dx.data, scratch: scratch)
        s.inputGrad = dx
        count(since: t0)
        tamper(dx, check: .inputGradient, slot: &s)
        slots[layer] = s
        return dx
    }

    private func count(since t0: UInt64) {
        let t = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        seconds += t
        totalSeconds += t
    }

    public func takeComputeSeconds() -> Double {
        defer { seconds = 0 }
        return seconds
    }

    /// Hands every layer's weight-gradient share to `body` (in layer order), zeroes the
    /// shares and ends the step.
    public func takeGradientShares(_ body: (_ layer: Int, _ share: Tensor) -> Void) {
        for layer in slots.keys.sorted() {
            var s = slots[layer]!
            tamper(s.gradShare, check: .gradientShare, slot: &s)
            slots[layer] = s
            body(layer, s.gradShare)
            s.gradShare.zero()
        }
        step += 1
    }

    /// Adds every layer's weight-gradient share into `grads[layer]` and zeroes the shares.
    public func addGradientShares(into grads: [Int: Tensor]) {
        takeGradientShares { layer, share in
            if let g = grads[layer] { accumulate(share.data, into: g.data, count: g.count) }
        }
    }

    /// Applies the fault to `result` when it is active for this result; keeps the honest
    /// result for a replay fault.
    private func tamper(_ result: Tensor, check: IntegrityCheck, slot: inout Slot) {
        guard let fault, fault.target == check, fault.layer.map({ $0 == slot.info.layer }) ?? true else { return }
        let active = step >= fault.fromStep
        switch fault.kind {
        case .replay:
            let honest = Tensor(shape: result.shape)
            honest.copy(from: result)
            if active, let old = slot.previous[check], old.count == result.count { result.copy(from: old) }
            slot.previous[check] = honest
        case _ where !active:
            return
        case .flip(let index, let relative):
            let i = index ?? faultRandom.below(result.count)
            result[i] += relative * largestMagnitude(result)
        case .scale(let factor):
            for i in 0..<result.count { result[i] *= factor }
        case .zero:
            result.zero()
        case .grad(let channel, let relative):
            let delta = relative * largestMagnitude(result), rowSize = result.count / slot.info.geometry.outChannels
            for i in (channel * rowSize)..<((channel + 1) * rowSize) { result[i] += delta }
        }
    }

    private func largestMagnitude(_ t: Tensor) -> Float {
        var m: Float = 0
        for i in 0..<t.count { m = max(m, abs(t[i])) }
        return m
    }
}

/// The untrusted executor in the same process: the worker, minus the wire.
public final class LocalUntrusted: UntrustedExecutor {
    public let worker = UntrustedWorker()
    private var outputs: [Int: Tensor] = [:], inputGrads: [Int: Tensor] = [:]

    public init() {}

    public func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        worker.register(info, weight: weight, bias: bias)
    }

    public func startForward(_ r: Residual) {
        outputs[r.layer] = worker.forward(layer: r.layer, residual: r.tensor, batch: r.batch)
    }

    public func finishForward(layer: Int) -> Tensor { outputs[layer]! }

    public func startBackward(_ g: OutputGradient) {
        inputGrads[g.layer] = worker.backward(layer: g.layer, outputGrad: g.tensor, batch: g.batch)
    }

    public func finishBackward(layer: Int) -> Tensor { inputGrads[layer]! }

    public func takeComputeSeconds() -> Double { worker.takeComputeSeconds() }

    /// The in-process stand-in for the allreduce: adds the worker's shares into `grads`.
    public func addGradientShares(into grads: [Int: Tensor]) { worker.addGradientShares(into: grads) }

    /// The same, with each share checked (and, by policy, recomputed) by its split layer
    /// before it enters the sum; layers without `settings.verify` are added unchecked.
    public func addGradientShares(into grads: [Int: Tensor], verifiedBy splits: [Int: SplitConvolution]) {
        worker.takeGradientShares { layer, share in
            if let split = splits[layer], split.checker != nil { split.verifyGradientShare(share.data) }
            if let g = grads[layer] { accumulate(share.data, into: g.data, count: g.count) }
        }
    }
}
