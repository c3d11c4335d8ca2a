import AsymKernels
import Dispatch

/// The untrusted executor in the same process: what an untrusted rank does, minus the wire.
///
/// It holds references to the replicated weights (read only) and its own weight-gradient
/// shares, which `addGradientShares` adds into the model's gradients (the in-process stand-in
/// for the cluster-wide allreduce).
public final class LocalUntrusted: UntrustedExecutor {
    struct Slot {
        let info: SplitLayerInfo
        let weight: Tensor
        let bias: Tensor?
        let gradShare: Tensor
        var residual: Tensor?
        var output: Tensor?
        var inputGrad: Tensor?
    }
    private var slots: [Int: Slot] = [:]
    private let scratch = Scratch()
    private var seconds = 0.0

    public init() {}

    /// Registers split layer `info` with its (replicated) weight and bias.
    public func register(_ info: SplitLayerInfo, weight: Tensor, bias: Tensor?) {
        slots[info.layer] = Slot(info: info, weight: weight, bias: bias, gradShare: Tensor(shape: weight.shape))
    }

    public func startForward(_ r: Residual) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var s = slots[r.layer]!
        let g = s.info.geometry
        let y = Tensor.reuse(s.output, shape: [r.batch, g.outChannels, g.outHeight, g.outWidth])
        conv2dForward(g, x: r.tensor.data, batch: r.batch, weight: s.weight.data, bias: s.bias?.data, y: y.data, scratch: scratch)
        s.output = y
        s.residual = r.tensor
        slots[r.layer] = s
        seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    public func finishForward(layer: Int) -> Tensor { slots[layer]!.output! }

    public func startBackward(_ d: OutputGradient) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var s = slots[d.layer]!
        let g = s.info.geometry
        let dx = Tensor.reuse(s.inputGrad, shape: [d.batch, g.inChannels, g.height, g.width])
        conv2dBackward(g, x: s.residual!.data, batch: d.batch, weight: s.weight.data, dy: d.tensor.data,
                       dWeight: s.gradShare.data, dBias: nil, dx: dx.data, scratch: scratch)
        s.inputGrad = dx
        slots[d.layer] = s
        seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    public func finishBackward(layer: Int) -> Tensor { slots[layer]!.inputGrad! }

    public func takeComputeSeconds() -> Double {
        defer { seconds = 0 }
        return seconds
    }

    /// Adds every layer's weight-gradient share into `grads[layer]` and zeroes the shares.
    public func addGradientShares(into grads: [Int: Tensor]) {
        for (layer, s) in slots {
            guard let g = grads[layer] else { continue }
            accumulate(s.gradShare.data, into: g.data, count: g.count)
            s.gradShare.zero()
        }
    }
}
