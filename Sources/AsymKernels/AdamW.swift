#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// One AdamW step's constants, as torch.optim.AdamW (Loshchilov & Hutter) defines the step
/// `t` (1-based) on a parameter p with gradient g:
///
///     p = p * (1 - lr * weight_decay)          (decoupled: never enters the moments)
///     m = m + (1 - beta1) * (g - m)            (torch's lerp; = beta1 * m + (1 - beta1) * g)
///     v = beta2 * v + (1 - beta2) * g * g
///     p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
///
/// Every constant is computed in Double, once per step, as PyTorch does in Python floats:
/// 1 - beta2 from a Float beta2 would be off by 1e-5 relative for beta2 = 0.999.
package struct AdamWHyper: Equatable, Sendable {
    package var decay: Float, beta2: Float, oneMinusBeta1: Float, oneMinusBeta2: Float, eps: Float
    /// lr / (1 - beta1^t) and sqrt(1 - beta2^t).
    package var stepSize: Float, secondCorrection: Float

    package init(lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step t: Int) {
        decay = Float(1 - lr * weightDecay)
        self.beta2 = Float(beta2)
        oneMinusBeta1 = Float(1 - beta1); oneMinusBeta2 = Float(1 - beta2)
        self.eps = Float(eps)
        stepSize = Float(lr / (1 - pow(beta1, Double(t))))
        secondCorrection = Float((1 - pow(beta2, Double(t))).squareRoot())
    }
}

/// One AdamW step on `count` values: `expAvg` and `expAvgSq` are the first and second moment
/// (zero before the first step). Element-wise, so any split across threads gives the same bits.
package func adamWStep(_ h: AdamWHyper, param p: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
                       expAvg m: UnsafeMutablePointer<Float>, expAvgSq v: UnsafeMutablePointer<Float>, count: Int) {
    parallelRanges(count, grain: 1 << 15) { r in
        for i in r {
            let g = grad[i]
            p[i] *= h.decay
            m[i] += h.oneMinusBeta1 * (g - m[i])
            v[i] = h.beta2 * v[i] + h.oneMinusBeta2 * g * g
            p[i] -= h.stepSize * m[i] / (v[i].squareRoot() / h.secondCorrection + h.eps)
        }
    }
}
