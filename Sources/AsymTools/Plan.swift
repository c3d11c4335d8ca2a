import AsymModel
import AsymTrain
import AsymKernels
import AsymSplit
import Foundation

/// `asymml plan`: per layer, where it runs, its FLOPs on each side (forward and backward)
/// and the bytes that cross per step; and the totals with the trusted share. It describes
/// the asym split of the config whatever its `asym.mode` (tee-only puts everything trusted).
/// The integrity checks' trusted FLOPs (`asym.verify`) have their own columns, and count
/// in the trusted totals when the config turns them on.
package struct Plan {
    /// Which of the calibrated rates (`Hardware`) a layer's trusted work runs at.
    package enum KernelClass: String, Sendable { case gemm, split, elementwise }
    package struct Row {
        package var name: String, kind: String, placement: String, rank: String
        package var trustedForward: Double, untrustedForward: Double
        package var trustedBackward: Double, untrustedBackward: Double
        package var bytesCrossing: Double
        /// The checks' trusted FLOPs: a training step's forward and backward, an inference pass.
        package var verifyForward = 0.0, verifyBackward = 0.0, verifyInference = 0.0
        /// What the prediction (`plan --hardware`) needs: the class of the layer's trusted work,
        /// its FLOPs in tee-only mode, the values it reads and writes in a forward pass (the
        /// work of memory-bound layers), and the weights and weight-gradient share that cross.
        package var kernel = KernelClass.gemm
        package var teeOnlyForward = 0.0, teeOnlyBackward = 0.0
        package var elements = 0.0
        package var weightBytes = 0.0
    }
    package struct Totals {
        package var trustedFlops: Double, untrustedFlops: Double, bytesCrossing: Double
        package var trustedShare: Double { trustedFlops / max(trustedFlops + untrustedFlops, 1) }
    }
    package var rows: [Row] = []
    package let basis: Basis
    package let name: String
    package let batch: Int
    /// `asym.verify`: the checks' FLOPs count in the trusted totals.
    package let verify: Bool
    /// Model parameters (the optimizer's update touches each a few times per step).
    package let parameters: Int
    /// With `asym.mask`: what the masking costs are counted for (trusted coding in the trusted
    /// columns, every combination in the untrusted ones and the bytes).
    package let masking: String?
    /// The untrusted ranks a trusted rank's messages go to: 3 with spread masking (each
    /// computes a third of the combinations), else 1.
    package let members: Int

    package init(_ config: Config) throws {
        let model = try Model(config.model)
        let placements = try placeLayers(model, config)
        basis = config.asym.basis
        name = config.name
        batch = config.data.batchSize
        verify = config.asym.verify
        parameters = model.parameterCount
        let a = config.asym
        masking = a.maskGroup == 0 ? nil : a.maskSpread
            ? "spread, K = \(a.maskGroup): 3 combinations per sample, K on each of 3 untrusted ranks; encode, noise and decode counted as trusted work"
            : "K = \(a.maskGroup) without spread: \(a.maskGroup + 2) combinations per \(a.maskGroup) samples on one rank"
        // Spread places a group's combinations on 3 untrusted ranks; without spread on one.
        let maskCost = a.maskGroup > 0 ? SplitCost.Masking(groupSize: a.maskGroup, spread: a.maskSpread,
                                                           members: a.maskSpread ? 3 : 1) : nil
        members = Int(maskCost?.members ?? 1)
        let b = Double(batch)
        var first = true
        for p in placements {
            let l = p.layer
            var row = Row(name: l.name, kind: l.kind.rawValue, placement: "trusted", rank: "-", trustedForward: 0,
                          untrustedForward: 0, trustedBackward: 0, untrustedBackward: 0, bytesCrossing: 0)
            let forward = Double(l.forwardFlops) * b
            row.elements = b * Double(l.inputShape.reduce(1, *) + l.outputShape.reduce(1, *))
            row.kernel = l is Conv2dLayer || l is LinearLayer || l is BasicBlock ? .gemm : .elementwise
            if let conv = l as? Conv2dLayer, p.side == .split, let s = p.settings {
                let cost = SplitCost(geometry: conv.geometry, rank: s.maxRank, iterations: s.iterations, basis: s.basis, batch: batch,
                                     masking: maskCost)
                row.placement = "split"
                row.rank = s.tau.map { "<=\(s.maxRank) (tau \($0))" } ?? "\(s.maxRank)"
                row.trustedForward = cost.trustedForward
                row.untrustedForward = cost.untrustedForward
                row.trustedBackward = cost.trustedBackward
                row.untrustedBackward = cost.untrustedBackward
                row.bytesCrossing = cost.bytesToUntrusted + cost.bytesFromUntrusted
                row.verifyForward = cost.verifyForward
                row.verifyBackward = cost.verifyBackward
                row.verifyInference = cost.verifyInference
                row.kernel = .split
                row.teeOnlyForward = cost.wholeForward
                row.teeOnlyBackward = cost.wholeBackward
                row.weightBytes = 2 * 4 * Double(conv.geometry.weightCount)
            } else {
                row.trustedForward = forward
                // GEMM layers: dW and (but for the first layer) dX; the others: about twice forward.
                let gemm = l is Conv2dLayer || l is LinearLayer
                row.trustedBackward = gemm ? (first ? forward : 2 * forward) : 2 * forward
                (row.teeOnlyForward, row.teeOnlyBackward) = (row.trustedForward, row.trustedBackward)
            }
            if l is Conv2dLayer || l is LinearLayer { first = false }
            rows.append(row)
        }
    }

    /// The FLOPs of the plain model (every layer whole): one forward pass, one training step.
    package var plainForwardFlops: Double { rows.map(\.teeOnlyForward).reduce(0, +) }
    package var plainTrainingFlops: Double { rows.map { $0.teeOnlyForward + $0.teeOnlyBackward }.reduce(0, +) }

    /// The checks' FLOPs over all layers: per inference batch, per training step.
    package var verifyInference: Double { rows.map(\.verifyInference).reduce(0, +) }
    package var verifyTraining: Double { rows.map { $0.verifyForward + $0.verifyBackward }.reduce(0, +) }

    /// The bound on the trusted-time speed-up over tee-only: tee-only's FLOPs over the trusted
    /// side's, the checks left out (bench times them apart). With masking the untrusted side
    /// does more than tee-only would, so the trusted share no longer gives the bound.
    package var trainingBound: Double { plainTrainingFlops / max(training.trustedFlops - (verify ? verifyTraining : 0), 1) }
    package var forwardBound: Double { plainForwardFlops / max(forward.trustedFlops - (verify ? verifyInference : 0), 1) }

    package var forward: Totals {
        Totals(trustedFlops: rows.map(\.trustedForward).reduce(0, +) + (verify ? verifyInference : 0),
               untrustedFlops: rows.map(\.untrustedForward).reduce(0, +),
               bytesCrossing: rows.map { $0.bytesCrossing / 2 }.reduce(0, +))
    }

    package var training: Totals {
        Totals(trustedFlops: rows.map { $0.trustedForward + $0.trustedBackward }.reduce(0, +) + (verify ? verifyTraining : 0),
               untrustedFlops: rows.map { $0.untrustedForward + $0.untrustedBackward }.reduce(0, +),
               bytesCrossing: rows.map(\.bytesCrossing).reduce(0, +))
    }

    package var table: String {
        func m(_ x: Double) -> String { String(format: "%9.1f", x / 1e6) }
        func left(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
        func right(_ s: String) -> String { String(repeating: " ", count: max(0, 9 - s.count)) + s }
        let columns = [left("layer", 18), left("type", 12), left("place", 8), left("rank", 16)].joined(separator: " ")
        var lines = [columns + " " + ["T fwd", "U fwd", "T bwd", "U bwd", "MB/step", "verify"].map(right).joined(separator: " "),
                     "  (asym split, basis \(basis.rawValue); MFLOP per step of \(batch) samples; T = trusted, U = untrusted;",
                     "   verify = the integrity checks' trusted MFLOP per training step, \(verify ? "on" : "off") in this config)",
                     "  " + (masking.map { "masking: \($0)" } ?? "no masking (asym.mask: off): residuals and output gradients cross in the clear")]
        for r in rows where r.trustedForward + r.untrustedForward > 0 {
            lines.append([left(r.name, 18), left(r.kind, 12), left(r.placement, 8), left(r.rank, 16)].joined(separator: " ") + " "
                         + [r.trustedForward, r.untrustedForward, r.trustedBackward, r.untrustedBackward].map(m).joined(separator: " ")
                         + String(format: " %9.2f ", r.bytesCrossing / 1e6) + m(r.verifyForward + r.verifyBackward))
        }
        for (name, t) in [("forward", forward), ("training", training)] {
            lines.append(String(format: "%@: trusted %.1f MFLOP, untrusted %.1f MFLOP, trusted share %.2f%%, %.2f MB crossing",
                                name, t.trustedFlops / 1e6, t.untrustedFlops / 1e6, 100 * t.trustedShare, t.bytesCrossing / 1e6))
        }
        let unverified = (forward.trustedFlops - (verify ? verifyInference : 0),
                          training.trustedFlops - (verify ? verifyTraining : 0))
        lines.append(String(format: "verification (asym.verify, %@): %.1f MFLOP per training step (+%.1f%% trusted), %.1f per inference batch (+%.1f%%)",
                            verify ? "on" : "off", verifyTraining / 1e6, 100 * verifyTraining / max(unverified.1, 1),
                            verifyInference / 1e6, 100 * verifyInference / max(unverified.0, 1)))
        lines.append(String(format: "bound on the trusted-time speed-up over tee-only (checks aside): %.1fx forward, %.1fx training",
                            forwardBound, trainingBound))
        return lines.joined(separator: "\n")
    }

    package var json: String { json(extra: []) }

    /// The plan as one JSON object, with `extra` keys at the end (e.g. `prediction`).
    package func json(extra: [(String, JSONValue)]) -> String {
        func totals(_ t: Totals) -> JSONValue {
            .object([("trusted_flops", .number(t.trustedFlops)), ("untrusted_flops", .number(t.untrustedFlops)),
                     ("trusted_share", .number(t.trustedShare)), ("bytes_crossing", .number(t.bytesCrossing))])
        }
        let layers = rows.map { r -> String in
            JSONValue.object([("name", .string(r.name)), ("type", .string(r.kind)), ("placement", .string(r.placement)),
                              ("rank", .string(r.rank)),
                              ("trusted_forward_flops", .number(r.trustedForward)), ("untrusted_forward_flops", .number(r.untrustedForward)),
                              ("trusted_backward_flops", .number(r.trustedBackward)), ("untrusted_backward_flops", .number(r.untrustedBackward)),
                              ("bytes_crossing", .number(r.bytesCrossing)),
                              ("verify_training_flops", .number(r.verifyForward + r.verifyBackward)),
                              ("verify_inference_flops", .number(r.verifyInference))]).json
        }
        return "{\"basis\": \"\(basis.rawValue)\", \"batch\": \(batch), \"verify\": \(verify), \"layers\": [" + layers.joined(separator: ", ") + "], \"totals\": "
            + JSONValue.object([("forward", totals(forward)), ("training", totals(training))]).json
            + extra.map { ", \"\($0.0)\": \($0.1.json)" }.joined() + "}"
    }
}
