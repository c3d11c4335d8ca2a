import AsymKernels
import Foundation

/// The optimizer of `optimizer.type` over a model's parameters, with a learning-rate
/// schedule: torch.optim.SGD or torch.optim.AdamW.
package struct Optimizer {
    package let config: OptimizerConfig
    /// Steps per epoch and total steps, which the schedules are expressed in.
    package let stepsPerEpoch: Int
    package let totalSteps: Int
    /// AdamW's moments and step count; nil for SGD, whose momentum buffers the parameters hold.
    package let adamW: AdamWState?

    package init(_ config: OptimizerConfig, stepsPerEpoch: Int, totalSteps: Int) {
        self.config = config
        self.stepsPerEpoch = max(1, stepsPerEpoch)
        self.totalSteps = max(1, totalSteps)
        adamW = config.type == .adamw ? AdamWState() : nil
    }

    /// The learning rate of step `step` (0-based), as PyTorch's schedulers would give it
    /// when stepped once per optimizer step (cosine) or once per epoch (step).
    package func learningRate(step: Int) -> Double {
        let base = config.lr, s = config.schedule
        switch s.type {
        case .step:
            let epoch = step / stepsPerEpoch
            return base * pow(s.gamma, Double(epoch / s.stepEpochs))
        case .cosine:
            let t = Double(min(step, totalSteps)) / Double(totalSteps)
            return s.minLR + (base - s.minLR) * (1 + cos(Double.pi * t)) / 2
        case .constant:
            return base
        }
    }

    /// Applies one step to every parameter with learning rate `learningRate`.
    package func apply(learningRate: Double, to parameters: [Parameter]) {
        let c = config
        if let adamW {
            adamW.steps += 1
            let h = AdamWHyper(lr: learningRate, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: c.weightDecay,
                               step: adamW.steps)
            for p in parameters {
                let m = adamW.moments(of: p)
                adamWStep(h, param: p.value.data, grad: p.grad.data, expAvg: m.expAvg.data, expAvgSq: m.expAvgSq.data,
                          count: p.value.count)
            }
            return
        }
        let h = SGDHyper(lr: Float(learningRate), momentum: Float(c.momentum), dampening: Float(c.dampening),
                         weightDecay: Float(c.weightDecay), nesterov: c.nesterov)
        for p in parameters {
            sgdStep(h, param: p.value.data, grad: p.grad.data, momentum: p.momentum.data, count: p.value.count,
                    firstStep: !p.hasMomentum)
            p.hasMomentum = true
        }
    }
}

/// The name the trainer and the attack tools know the optimizer by, from when it was SGD alone.
package typealias SGDOptimizer = Optimizer

/// AdamW's state: each parameter's first and second moment, and the steps taken (the bias
/// corrections depend on it). A class, because the optimizer is a value inside the trainer
/// while this changes every step, and checkpoints save and restore it.
package final class AdamWState {
    /// One parameter's moments, of its shape: `exp_avg` and `exp_avg_sq` in PyTorch's state.
    package struct Moments {
        package let expAvg: Tensor
        package let expAvgSq: Tensor
    }

    /// Steps applied so far (PyTorch's `step`; the same for every parameter here).
    package var steps = 0
    /// By parameter identity; each entry keeps its parameter alive, so an identity is never reused.
    private var moments: [ObjectIdentifier: (parameter: Parameter, moments: Moments)] = [:]

    /// The moments of `p`, zero until its first step.
    package func moments(of p: Parameter) -> Moments {
        if let entry = moments[ObjectIdentifier(p)] { return entry.moments }
        let m = Moments(expAvg: Tensor(shape: p.value.shape), expAvgSq: Tensor(shape: p.value.shape))
        moments[ObjectIdentifier(p)] = (p, m)
        return m
    }
}
