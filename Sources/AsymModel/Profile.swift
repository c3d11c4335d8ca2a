import Dispatch
import Foundation

/// Trusted seconds per layer, forward and backward (`asymml bench --profile`): wall time of
/// each layer minus what the in-process untrusted executor computed meanwhile.
package final class LayerProfile {
    package private(set) var forward: [Double]
    package private(set) var backward: [Double]
    /// Other trusted work per step: data loading, the loss, zeroing and the SGD update.
    package private(set) var other = 0.0
    package private(set) var steps = 0
    /// Layer seconds up to the end of the last step.
    private var layerSecondsBefore = 0.0
    /// Cumulative seconds the untrusted side has computed (0 when there is none).
    let untrustedClock: () -> Double

    package init(layers: Int, untrustedClock: @escaping () -> Double) {
        forward = Array(repeating: 0, count: layers)
        backward = Array(repeating: 0, count: layers)
        self.untrustedClock = untrustedClock
    }

    func start() -> (wall: UInt64, untrusted: Double) { (DispatchTime.now().uptimeNanoseconds, untrustedClock()) }

    func stop(_ mark: (wall: UInt64, untrusted: Double), layer: Int, backward isBackward: Bool) {
        let wall = Double(DispatchTime.now().uptimeNanoseconds - mark.wall) / 1e9
        let trusted = wall - (untrustedClock() - mark.untrusted)
        if isBackward { backward[layer] += trusted } else { forward[layer] += trusted }
    }

    /// Closes a training step of `trustedSeconds`: what the layers did not account for is "other".
    package func endStep(trustedSeconds: Double) {
        let layers = forward.reduce(0, +) + backward.reduce(0, +)
        other += trustedSeconds - (layers - layerSecondsBefore)
        layerSecondsBefore = layers
        steps += 1
    }

    /// A table in ms per step, largest first.
    package func table(_ model: Model) -> String {
        let n = Double(max(steps, 1))
        var rows = model.layers.enumerated().map { i, l in (l.name, l.kind.rawValue, forward[i] / n, backward[i] / n) }
        rows.append(("(other)", "data, loss, SGD", other / n, 0))
        let total = rows.map { $0.2 + $0.3 }.reduce(0, +)
        var lines = [String(format: "trusted ms per step (%.1f in all):", 1000 * total)]
        for r in rows.sorted(by: { $0.2 + $0.3 > $1.2 + $1.3 }) where r.2 + r.3 > 0.0005 * total {
            lines.append(String(format: "  %@ %@ forward %7.2f  backward %7.2f", r.0.padding(toLength: 14, withPad: " ", startingAt: 0),
                                r.1.padding(toLength: 15, withPad: " ", startingAt: 0), 1000 * r.2, 1000 * r.3))
        }
        // Each layer type runs on one kind of kernel (conv: oneDNN or im2col + OpenBLAS,
        // linear: OpenBLAS, the rest: the project's loops), so this is each path's share.
        var byType: [String: Double] = [:]
        for r in rows { byType[r.1, default: 0] += r.2 + r.3 }
        lines.append("  share of step time by layer type: " + byType.sorted { $0.value > $1.value }
            .map { String(format: "%@ %.0f%%", $0.key, 100 * $0.value / max(total, 1e-12)) }.joined(separator: ", "))
        return lines.joined(separator: "\n")
    }
}
