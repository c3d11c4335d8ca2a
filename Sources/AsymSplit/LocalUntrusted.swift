import AsymKernels
import AsymIntegrity
import Dispatch

/// A deliberate corruption of untrusted results, for tests and demonstrations of the
/// integrity checks (design §8): what a malicious rank might return.
package struct Fault: Equatable {
    package enum Kind: Equatable {
        /// One value changed by `relative` times the result's largest |entry|, at `index`
        /// (nil: a random one).
        case flip(index: Int?, relative: Float)
        /// The whole result scaled.
        case scale(Float)
        case zero
        /// The previous result of that kind and size for that layer, again (the previous
        /// step's when a layer pass is one message; the previous piece's when it crosses in pieces).
        case replay
        /// A targeted additive pattern: `relative` times the share's largest |entry| added
        /// to every weight of output channel `channel` (always on the weight-gradient share).
        case grad(channel: Int, relative: Float)
    }
    package var kind: Kind
    package var target: IntegrityCheck
    /// The first step (counted in handed-out gradient shares) with the fault.
    package var fromStep: Int
    /// The split layer to corrupt; nil: every one.
    package var layer: Int?

    package init(_ kind: Kind, target: IntegrityCheck = .outputShare, fromStep: Int = 0, layer: Int? = nil) {
        if case .grad = kind { self.target = .gradientShare } else { self.target = target }
        self.kind = kind; self.fromStep = fromStep; self.layer = layer
    }

    /// `--inject-fault RANK:KIND:STEP`: untrusted rank RANK misbehaves from step STEP on.
    /// flip: one output value changed by 1% of the output's largest |entry|; scale: output
    /// shares scaled by 1.01; zero: input gradients zeroed; replay: the previous output shares
    /// of the same size; grad: half the share's largest |entry| added to output channel 0 of every
    /// weight-gradient share (a whole row shifted by a constant: the checker draws its secret
    /// filter so that its entries never nearly cancel, see `IntegrityChecker.startPass`).
    package static func parse(_ text: String) throws -> (rank: Int, fault: Fault) {
        let parts = text.split(separator: ":").map(String.init)
        let kinds = ["flip", "scale", "zero", "replay", "grad"]
        guard parts.count == 3, let rank = Int(parts[0]), rank >= 1, let step = Int(parts[2]), step >= 0,
              kinds.contains(parts[1]) else {
            throw FaultSyntaxError(description: "--inject-fault: '\(text)' is not RANK:KIND:STEP (RANK >= 1 an untrusted rank, KIND one of \(kinds.joined(separator: ", ")) or a wire fault kind listed by asymml train --help, STEP >= 0)")
        }
        let fault: Fault
        switch parts[1] {
        case "flip": fault = Fault(.flip(index: nil, relative: 0.01), target: .outputShare, fromStep: step)
        case "scale": fault = Fault(.scale(1.01), target: .outputShare, fromStep: step)
        case "zero": fault = Fault(.zero, target: .inputGradient, fromStep: step)
        case "replay": fault = Fault(.replay, target: .outputShare, fromStep: step)
        default: fault = Fault(.grad(channel: 0, relative: 0.5), fromStep: step)
        }
        return (rank, fault)
    }
}

package struct FaultSyntaxError: Error, CustomStringConvertible {
    package let description: String
}

/// What an untrusted rank computes for the split layers: residual convolutions forward, input
/// gradients and its weight-gradient share backward. It runs on the untrusted side (an
/// untrusted rank, or in-process for tests and single-process runs) and sees only what that
/// side receives: residuals and output gradients.
package final class UntrustedWorker {
    struct Slot {
        let info: SplitLayerInfo
        let weight: Tensor
        let bias: Tensor?
        /// The share corr(R, dY) of dW, summed over the step's backward passes.
        let gradShare: Tensor
        /// The same in double, for wide backward passes (`OutputGradient.wideShares`), and
        /// the low-order part it crosses with; allocated by the first wide pass.
        var wideShare: WideShare?
        var residual: Tensor?
        var output: Tensor?
        var inputGrad: Tensor?
        /// corr(R_s, dY_s) per sample, of the last per-sample backward pass.
        var perSampleShares: Tensor?
        /// The last result of each kind (the values of its message), kept only for a replay fault.
        var previous: [IntegrityCheck: [Float]] = [:]
    }
    private var slots: [Int: Slot] = [:]
    private let scratch = Scratch()
    /// Seconds spent computing since the last `takeComputeSeconds()`, and in all.
    private var seconds = 0.0
    package private(set) var totalSeconds = 0.0
    /// Steps finished: gradient shares handed out.
    package private(set) var step = 0
    /// Misbehaviour for tests and demos (`--inject-fault`); nil for an honest worker.
    package var fault: Fault?
    private var faultRandom = RNG(seed: 0xFA17)

    package init() {}

    /// Registers split layer `info` with its (replicated) weight and bias, read only.
    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        slots[info.layer] = Slot(info: info, weight: weight, bias: bias, gradShare: Tensor(shape: weight.shape))
    }

    package func geometry(layer: Int) -> ConvGeometry? { slots[layer]?.info.geometry }
    package var layerCount: Int { slots.count }
    /// The split layers' weight values in all (the size of their packed shares).
    package var weightCount: Int { slots.values.map(\.gradShare.count).reduce(0, +) }

    /// Y_U = conv(R, W) + b for the samples `samples` of `residual`, written at the same samples
    /// of the layer's output ([batch, Cout, Ho, Wo], `batch` >= samples.upperBound; a micro-batch
    /// fills its part, the rest is kept); keeps R for the backward pass of those samples.
    package func forward(layer: Int, residual: Tensor, samples: Range<Int>, batch: Int) -> Tensor {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var s = slots[layer]!
        let g = s.info.geometry
        let y = Tensor.grown(s.output, shape: [batch, g.outChannels, g.outHeight, g.outWidth],
                             keeping: samples.lowerBound * g.outputSize)
        conv2dForward(g, x: residual.data + samples.lowerBound * g.inputSize, batch: samples.count, weight: s.weight.data,
                      bias: s.bias?.data, y: y.data + samples.lowerBound * g.outputSize, scratch: scratch)
        s.output = y
        s.residual = residual
        count(since: t0)
        tamper(y, values: (samples.lowerBound * g.outputSize)..<(samples.upperBound * g.outputSize), check: .outputShare, slot: &s)
        slots[layer] = s
        return y
    }

    /// dX = conv_transpose(dY, W) for the samples `samples` of `dy` (and of the residual of
    /// the forward pass), written at those samples of dX ([batch, C, H, W]); accumulates
    /// corr(R, dY) of those samples into the layer's gradient share, in double when `wide`.
    package func backward(layer: Int, outputGrad dy: Tensor, samples: Range<Int>, batch: Int, wide: Bool = false) -> Tensor {
        let t0 = DispatchTime.now().uptimeNanoseconds
        backwardBatch = max(samples.upperBound, samples.lowerBound == 0 ? 0 : backwardBatch)
        var s = slots[layer]!
        let g = s.info.geometry, first = samples.lowerBound
        let dx = Tensor.grown(s.inputGrad, shape: [batch, g.inChannels, g.height, g.width], keeping: first * g.inputSize)
        conv2dBackward(g, x: s.residual!.data + first * g.inputSize, batch: samples.count, weight: s.weight.data,
                       dy: dy.data + first * g.outputSize, dWeight: wide ? nil : s.gradShare.data, dBias: nil,
                       dx: dx.data + first * g.inputSize, scratch: scratch)
        if wide {
            let share = s.wideShare ?? WideShare(count: g.weightCount)
            s.wideShare = share
            share.used = true
            conv2dWeightGradientWide(g, x: s.residual!.data + first * g.inputSize, batch: samples.count,
                                     dy: dy.data + first * g.outputSize, into: share.values, scratch: scratch)
        }
        s.inputGrad = dx
        count(since: t0)
        tamper(dx, values: (first * g.inputSize)..<(samples.upperBound * g.inputSize), check: .inputGradient, slot: &s)
        slots[layer] = s
        return dx
    }

    /// dX = conv_transpose(dY, W), and corr(R_s, dY_s) of every sample s kept apart,
    /// [batch, Cout, C, k, k], not added to the share: the samples are masked combinations that
    /// only the trusted side can combine (Masking.swift).
    package func backwardPerSample(layer: Int, outputGrad dy: Tensor, batch: Int) -> (inputGrad: Tensor, shares: Tensor) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var s = slots[layer]!
        let g = s.info.geometry
        let dx = Tensor.reuse(s.inputGrad, shape: [batch, g.inChannels, g.height, g.width])
        let shares = Tensor.reuse(s.perSampleShares, shape: [batch] + s.weight.shape)
        shares.zero()
        conv2dBackward(g, x: s.residual!.data, batch: batch, weight: s.weight.data, dy: dy.data,
                       dWeight: nil, dBias: nil, dx: dx.data, scratch: scratch)
        for b in 0..<batch {
            conv2dBackward(g, x: s.residual!.data + b * g.inputSize, batch: 1, weight: s.weight.data,
                           dy: dy.data + b * g.outputSize, dWeight: shares.data + b * g.weightCount, dBias: nil,
                           dx: nil, scratch: scratch)
        }
        s.inputGrad = dx
        s.perSampleShares = shares
        count(since: t0)
        tamper(dx, check: .inputGradient, slot: &s)
        tamper(shares, check: .gradientShare, slot: &s)
        slots[layer] = s
        return (dx, shares)
    }

    private func count(since t0: UInt64) {
        let t = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        seconds += t
        totalSeconds += t
    }

    package func takeComputeSeconds() -> Double {
        defer { seconds = 0 }
        return seconds
    }

    /// Hands every layer's weight-gradient share of the step to `body` (in layer order), with
    /// its low-order part when the step's passes were wide (the share is then the double
    /// result's float rounding), zeroes the shares and ends the step.
    package func takeGradientShares(_ body: (_ layer: Int, _ share: Tensor, _ low: Tensor?) throws -> Void) rethrows {
        for layer in slots.keys.sorted() {
            var s = slots[layer]!
            var low: Tensor?
            if let wide = s.wideShare, wide.used {
                splitWide(wide.values, count: wide.count, high: s.gradShare.data, low: wide.low.data)
                low = wide.low
            }
            tamper(s.gradShare, check: .gradientShare, slot: &s)
            slots[layer] = s
            try body(layer, s.gradShare, low)
            s.gradShare.zero()
            s.wideShare?.reset()
        }
        step += 1
    }

    /// Adds every layer's weight-gradient share into `grads[layer]` and zeroes the shares.

    /// Applies the fault to `result`'s `values` (those of the message being answered: other
    /// micro-batches' or pieces' rows are not this reply's; nil: all) when it is active for
    /// this result; keeps the honest values for a replay fault.
    private func tamper(_ result: Tensor, values range: Range<Int>? = nil, check: IntegrityCheck, slot: inout Slot) {
        guard let fault, fault.target == check, fault.layer.map({ $0 == slot.info.layer }) ?? true else { return }
        let range = range ?? 0..<result.count
        let active = step >= fault.fromStep, values = result.data + range.lowerBound, count = range.count
        switch fault.kind {
        case .replay:
            let honest = Array(UnsafeBufferPointer(start: values, count: count))
            if active, let old = slot.previous[check], old.count == count { values.update(from: old, count: count) }
            slot.previous[check] = honest
        case _ where !active:
            return
        case .flip(let index, let relative):
            let i = index ?? faultRandom.below(count)
            precondition(i < count, "a flip of value \(i) of a message of \(count) values")
            values[i] += relative * largestMagnitude(values, count: count)
        case .scale(let factor):
            for i in 0..<count { values[i] *= factor }
        case .zero:
            values.update(repeating: 0, count: count)
        case .grad(let channel, let relative):
            let delta = relative * largestMagnitude(values, count: count), rowSize = count / slot.info.geometry.outChannels
            for i in (channel * rowSize)..<((channel + 1) * rowSize) { values[i] += delta }
        }
    }

    private func largestMagnitude(_ values: UnsafePointer<Float>, count: Int) -> Float {
        var m: Float = 0
        for i in 0..<count { m = max(m, abs(values[i])) }
        return m
    }

    /// The local batch of the last backward pass (the samples the shares cover).
    package private(set) var backwardBatch = 0
}

/// A weight-gradient share accumulated in double, and the float low-order part it crosses
/// with (`splitWide`).
final class WideShare {
    let count: Int
    let values: UnsafeMutablePointer<Double>
    let low: Tensor
    /// Whether a wide pass added to it since the last step end.
    var used = false
    init(count: Int) {
        self.count = count
        values = .allocate(capacity: count)
        values.initialize(repeating: 0, count: count)
        low = Tensor(shape: [count])
    }
    deinit { values.deallocate() }
    func reset() {
        values.update(repeating: 0, count: count)
        used = false
    }
}

/// The untrusted executor in the same process: the worker, minus the wire.
package final class LocalUntrusted: UntrustedExecutor {
    package let worker = UntrustedWorker()
    private var outputs: [Int: Tensor] = [:], inputGrads: [Int: Tensor] = [:], weightShares: [Int: Tensor] = [:]

    package init() {}

    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        worker.register(info, weight: weight, bias: bias)
    }

    /// Micro-batches run one after the other, each as soon as it is handed over.
    package var pipelines: Bool { true }

    package func startForward(_ r: Residual) {
        precondition(r.piece == nil, "a layer pass in pieces crosses only where messages leave (MPI)")
        outputs[r.layer] = worker.forward(layer: r.layer, residual: r.tensor, samples: r.samples, batch: r.batch)
    }

    /// Each micro-batch ran when it was handed over: every sample is there.
    package func finishForward(layer: Int, samples: Range<Int>) -> Tensor { outputs[layer]! }

    package func startBackward(_ g: OutputGradient) {
        precondition(g.piece == nil, "a layer pass in pieces crosses only where messages leave (MPI)")
        inputGrads[g.layer] = worker.backward(layer: g.layer, outputGrad: g.tensor, samples: g.samples, batch: g.batch,
                                              wide: g.wideShares)
    }

    package func finishBackward(layer: Int, samples: Range<Int>) -> Tensor { inputGrads[layer]! }

    package func startBackwardPerSample(_ g: OutputGradient) {
        (inputGrads[g.layer], weightShares[g.layer]) = worker.backwardPerSample(layer: g.layer, outputGrad: g.tensor, batch: g.batch)
    }

    package func finishWeightShares(layer: Int) -> Tensor { weightShares[layer]! }

    /// Nothing is in flight: the work ran at each `start*` call.
    package func progress() {}

    /// The group is this process, the placement of a message's rows is not needed.
    package var members: Int? { nil }

    package func takeComputeSeconds() -> Double { worker.takeComputeSeconds() }

    /// The in-process worker's time is the trusted process's own (`takeComputeSeconds`).
    package var untrustedLoad: (compute: Double, idle: Double)? { nil }

    package func collectGradientShares(_ body: (Int, UnsafeMutablePointer<Float>, UnsafePointer<Float>?, Range<Int>) throws -> Void) throws {
        let samples = 0..<worker.backwardBatch
        try worker.takeGradientShares { layer, share, low in try body(layer, share.data, low.map { UnsafePointer($0.data) }, samples) }
    }

    /// The worker reads the model's own weight tensors: nothing to send.
    package func publishWeights() {}

    package func source(ofSample sample: Int, batch: Int) -> String { "the in-process untrusted side" }

    /// In one process the untrusted half already runs here: excluding it means computing
    /// honestly from now on (a fault injected for a test or demo stops).
    package func exclude(sourcesOfSamples samples: [Int], batch: Int) -> String {
        worker.fault = nil
        return "the in-process untrusted side is excluded: its work runs on the trusted side (tee-only for the split layers)"
    }
}
