/// One SGD step on one parameter, exactly as torch.optim.SGD defines it:
///
///     g = grad + weight_decay * p
///     buf = g                                   (first step)
///     buf = momentum * buf + (1 - dampening) * g (later steps)
///     g = nesterov ? g + momentum * buf : buf    (when momentum != 0)
///     p = p - lr * g
package struct SGDHyper: Equatable, Sendable {
    package var lr: Float, momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    package init(lr: Float, momentum: Float = 0, dampening: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.lr = lr; self.momentum = momentum; self.dampening = dampening
        self.weightDecay = weightDecay; self.nesterov = nesterov
    }
}

/// `firstStep` says the momentum buffer holds nothing yet (PyTorch's `buf is None`).
package func sgdStep(_ h: SGDHyper, param p: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
                    momentum buf: UnsafeMutablePointer<Float>, count: Int, firstStep: Bool) {
    parallelRanges(count, grain: 1 << 15) { r in
        for i in r {
            var g = grad[i] + h.weightDecay * p[i]
            if h.momentum != 0 {
                let b = firstStep ? g : h.momentum * buf[i] + (1 - h.dampening) * g
                buf[i] = b
                g = h.nesterov ? g + h.momentum * b : b
            }
            p[i] -= h.lr * g
        }
    }
}
