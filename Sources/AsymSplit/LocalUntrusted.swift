import AsymKernels
import Dispatch

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
        var residual: Tensor?
        var output: Tensor?
        var inputGrad: Tensor?
        /// corr(R_s, dY_s) per sample, of the last per-sample backward pass.
        var perSampleShares: Tensor?
    }
    private var slots: [Int: Slot] = [:]
    private let scratch = Scratch()
    /// Seconds spent computing since the last `takeComputeSeconds()`, and in all.
    private var seconds = 0.0
    package private(set) var totalSeconds = 0.0

    package init() {}

    /// Registers split layer `info` with its (replicated) weight and bias, read only.
    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        slots[info.layer] = Slot(info: info, weight: weight, bias: bias, gradShare: Tensor(shape: weight.shape))
    }

    package func geometry(layer: Int) -> ConvGeometry? { slots[layer]?.info.geometry }
    package var layerCount: Int { slots.count }
    /// The split layers' weight values in all (the size of their packed shares).
    package var weightCount: Int { slots.values.map(\.gradShare.count).reduce(0, +) }

    /// Y_U = conv(R, W) + b for `batch` samples; keeps R for the backward pass.
    package func forward(layer: Int, residual: Tensor, batch: Int) -> Tensor {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var s = slots[layer]!
        let g = s.info.geometry
        let y = Tensor.reuse(s.output, shape: [batch, g.outChannels, g.outHeight, g.outWidth])
        conv2dForward(g, x: residual.data, batch: batch, weight: s.weight.data, bias: s.bias?.data, y: y.data, scratch: scratch)
        s.output = y
        s.residual = residual
        slots[layer] = s
        count(since: t0)
        return y
    }

    /// dX = conv_transpose(dY, W); accumulates corr(R, dY) into the layer's gradient share.
    package func backward(layer: Int, outputGrad dy: Tensor, batch: Int) -> Tensor {
        let t0 = DispatchTime.now().uptimeNanoseconds
        backwardBatch = batch
        var s = slots[layer]!
        let g = s.info.geometry
        let dx = Tensor.reuse(s.inputGrad, shape: [batch, g.inChannels, g.height, g.width])
        conv2dBackward(g, x: s.residual!.data, batch: batch, weight: s.weight.data, dy: dy.data,
                       dWeight: s.gradShare.data, dBias: nil, dx: dx.data, scratch: scratch)
        s.inputGrad = dx
        slots[layer] = s
        count(since: t0)
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
        slots[layer] = s
        count(since: t0)
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

    /// Hands every layer's weight-gradient share of the step to `body`, in layer order, and
    /// zeroes it for the next step.
    package func takeGradientShares(_ body: (_ layer: Int, _ share: Tensor) throws -> Void) rethrows {
        for layer in slots.keys.sorted() {
            let share = slots[layer]!.gradShare
            try body(layer, share)
            share.zero()
        }
    }

    /// The local batch of the last backward pass (the samples the shares cover).
    package private(set) var backwardBatch = 0
}

/// The untrusted executor in the same process: the worker, minus the wire.
package final class LocalUntrusted: UntrustedExecutor {
    package let worker = UntrustedWorker()
    private var outputs: [Int: Tensor] = [:], inputGrads: [Int: Tensor] = [:], weightShares: [Int: Tensor] = [:]

    package init() {}

    package func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        worker.register(info, weight: weight, bias: bias)
    }

    package func startForward(_ r: Residual) {
        outputs[r.layer] = worker.forward(layer: r.layer, residual: r.tensor, batch: r.batch)
    }

    package func finishForward(layer: Int) -> Tensor { outputs[layer]! }

    package func startBackward(_ g: OutputGradient) {
        inputGrads[g.layer] = worker.backward(layer: g.layer, outputGrad: g.tensor, batch: g.batch)
    }

    package func finishBackward(layer: Int) -> Tensor { inputGrads[layer]! }

    package func startBackwardPerSample(_ g: OutputGradient) {
        (inputGrads[g.layer], weightShares[g.layer]) = worker.backwardPerSample(layer: g.layer, outputGrad: g.tensor, batch: g.batch)
    }

    package func finishWeightShares(layer: Int) -> Tensor { weightShares[layer]! }

    package func takeComputeSeconds() -> Double { worker.takeComputeSeconds() }

    package func collectGradientShares(_ body: (Int, UnsafePointer<Float>, Range<Int>) throws -> Void) throws {
        let samples = 0..<worker.backwardBatch
        try worker.takeGradientShares { layer, share in try body(layer, share.data, samples) }
    }

    /// The worker reads the model's own weight tensors: nothing to send.
    package func publishWeights() {}
}
