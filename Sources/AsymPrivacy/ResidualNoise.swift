import AsymKernels
import AsymSecrets
import AsymSplit
import Foundation

/// Noise on the residuals that cross (`asym.residual_noise`), after 3LegRace (Niu et al.,
/// PoPETs 2022): each sample's residual is clipped to L2 norm `clip` and Gaussian noise of
/// standard deviation `std * clip` is added before it leaves the trusted side.
///
/// This is a comparison point, not the default: unlike masking (§9) it is NOT exact. The
/// untrusted side convolves R' = clip(R) + n, so the layer computes conv(L + R') instead of
/// conv(X); training sees noisier activations and ends at another model. Its backward pass
/// stays consistent with that forward (the untrusted share is corr(R', dY)).
///
/// The release of one sample's residual is the Gaussian mechanism with L2 sensitivity
/// 2 * clip (one sample replaced by another), so per release
/// epsilon = 2 * sqrt(2 ln(1.25 / delta)) / std (the classic bound, stated for epsilon <= 1;
/// larger values are a loose guide). Every split layer and step is one more release: the
/// guarantee composes and weakens over training.
package final class ResidualNoiseExecutor: ExecutorWrapper {
    package let inner: UntrustedExecutor
    package let std: Float, clip: Float
    private var stream = SecretStream()
    private var noisy: [Int: Tensor] = [:]

    package init(wrapping inner: UntrustedExecutor, std: Float, clip: Float) {
        precondition(std > 0 && clip > 0, "residual noise needs std > 0 and clip > 0")
        self.inner = inner
        self.std = std
        self.clip = clip
    }

    /// Per-release (epsilon, delta) of the Gaussian mechanism for noise multiplier `std`.
    package static func privacy(std: Double, delta: Double = 1e-5) -> (epsilon: Double, delta: Double) {
        (2 * (2 * log(1.25 / delta)).squareRoot() / std, delta)
    }

    package func startForward(_ r: Residual) {
        let out = Tensor.reuse(noisy[r.layer], shape: r.tensor.shape)
        noisy[r.layer] = out
        let size = r.tensor.count / max(r.batch, 1)
        stream.fillNormal(out.data, count: out.count, scale: std * clip)
        for s in 0..<r.batch {
            let x = r.tensor.data + s * size, y = out.data + s * size
            let norm = Float(sumOfSquares(x, count: size).squareRoot())
            let scale = norm > clip ? clip / norm : 1
            for i in 0..<size { y[i] += scale * x[i] }
        }
        inner.startForward(r.crossing(as: out, placement: r.placement))
    }

    /// Whole batches only: one noisy release per residual batch.
    package var pipelines: Bool { false }
}
