import AsymKernels
import Foundation

/// torch.optim.SGD over a model's parameters, with a learning-rate schedule.
package struct SGDOptimizer {
    package let config: OptimizerConfig
    /// Steps per epoch and total steps, which the schedules are expressed in.
    package let stepsPerEpoch: Int
    package let totalSteps: Int

    package init(_ config: OptimizerConfig, stepsPerEpoch: Int, totalSteps: Int) {
        self.config = config
        self.stepsPerEpoch = max(1, stepsPerEpoch)
        self.totalSteps = max(1, totalSteps)
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
        SGDOptimizer.apply(config, learningRate: learningRate, to: parameters)
    }

    /// The step itself, for replicas that know the rate but not the schedule (untrusted ranks).
    package static func apply(_ config: OptimizerConfig, learningRate: Double, to parameters: [Parameter]) {
        let h = SGDHyper(lr: Float(learningRate), momentum: Float(config.momentum),
                         dampening: Float(config.dampening), weightDecay: Float(config.weightDecay),
                         nesterov: config.nesterov)
        for p in parameters {
            sgdStep(h, param: p.value.data, grad: p.grad.data, momentum: p.momentum.data, count: p.value.count,
                    firstStep: !p.hasMomentum)
            p.hasMomentum = true
        }
    }
}
