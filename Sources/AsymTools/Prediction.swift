import AsymModel
import AsymTrain
import Foundation

/// `asymml plan --hardware`: the time of a step on given hardware, from the plan's FLOPs and
/// bytes and the hardware's rates (docs/DESIGN.md §10).
///
/// The model: each layer's trusted work runs at the rate of its kernel class; an untrusted
/// rank convolves the residuals at the accelerator's rate; each pass of a split layer sends
/// one message out and gets one back (R then Y_U forward, dY then dX backward), and the
/// weights and the weight-gradient share cross once per step. One trusted rank and one
/// untrusted rank (three with spread masking, each computing a third, all through the trusted
/// rank's one link); ranks do not compute while they wait, so without micro-batches a split layer's
/// pass takes t + l + u (trusted work, link, untrusted work). With k micro-batches the three
/// stages overlap as a pipeline: (t + l + u) / k + (k - 1) / k * max(t, l, u), with k
/// messages each way. The optimizer's update counts as elementwise work on every parameter.
/// With `shared_cores` (a local run: every rank on one machine's cores) the untrusted ranks
/// share the cores while they compute with each other and with the trusted rank, whose wait
/// polls (`Communicator.waitAll` spins on MPI_Testall): (members + 1) / cores times as long,
/// when more. A step takes at least the compute of all ranks over the cores.
package struct Prediction {
    /// Seconds of one training step or one inference batch.
    package struct Times {
        package var trusted = 0.0, untrusted = 0.0, link = 0.0, wall = 0.0
    }

    package let plan: Plan
    package let hardware: Hardware

    package init(plan: Plan, hardware: Hardware) {
        self.plan = plan
        self.hardware = hardware
    }

    /// Values an SGD step with momentum touches per parameter (weight, gradient, velocity; read and write).
    package static let updateTouches = 5.0

    /// The work of one pass of a memory-bound row: the values it reads and writes, once
    /// forward, twice backward (its input gradient, from dY and what the forward kept).
    package static func elementwiseWork(_ r: Plan.Row, backward: Bool) -> Double { (backward ? 2 : 1) * r.elements }

    /// The same over a training step (forward and backward) or an inference pass.
    package static func elementwiseWork(_ r: Plan.Row, training: Bool) -> Double {
        elementwiseWork(r, backward: false) + (training ? elementwiseWork(r, backward: true) : 0)
    }

    /// The optimizer's update, as elementwise work.
    package static func updateWork(_ plan: Plan) -> Double { updateTouches * Double(plan.parameters) }

    private func seconds(_ work: Double, _ kernel: Plan.KernelClass) -> Double {
        let rate: Double
        switch kernel {
        case .gemm: rate = hardware.teeGflops
        case .split: rate = hardware.teeSplitGflops
        case .elementwise: rate = hardware.teeElementwiseGflops
        }
        return work / (rate * 1e9)
    }

    private func linkSeconds(bytes: Double, messages: Double) -> Double {
        bytes / (hardware.linkGbps * 1e9 / 8) + messages * hardware.linkLatencyMicroseconds * 1e-6
    }

    /// One pass of the trusted work of `row` (forward, or backward in training).
    private func trustedPass(_ r: Plan.Row, backward: Bool, training: Bool) -> Double {
        if r.kernel == .elementwise { return seconds(Prediction.elementwiseWork(r, backward: backward), .elementwise) }
        let verify = plan.verify ? (backward ? r.verifyBackward : (training ? r.verifyForward : r.verifyInference)) : 0
        return seconds((backward ? r.trustedBackward : r.trustedForward) + verify, r.kernel)
    }

    /// A training step (`training`) or an inference batch, with `k` micro-batches.
    package func times(training: Bool, microbatches k: Int) -> Times {
        var t = Times()
        // Masking sends a batch's groups as one message: micro-batches do not overlap there.
        let kk = plan.masking == nil ? Double(max(1, k)) : 1
        // More ranks than shared cores: while the members compute they share the cores, with
        // each other and with the trusted rank polling for their replies.
        let crowding = hardware.sharedCores.map { max(1, Double(plan.members + 1) / $0) } ?? 1
        for r in plan.rows {
            for backward in training ? [false, true] : [false] {
                let trusted = trustedPass(r, backward: backward, training: training)
                t.trusted += trusted
                guard r.kernel == .split else { t.wall += trusted; continue }
                // The members compute their parts at once; the trusted rank's link carries all.
                let untrusted = (backward ? r.untrustedBackward : r.untrustedForward) / (hardware.accelGflops * 1e9) / Double(plan.members)
                let link = linkSeconds(bytes: r.bytesCrossing / 2 + (backward ? r.weightBytes : 0), messages: 2 * kk)
                t.untrusted += untrusted
                t.link += link
                let u = untrusted * crowding
                t.wall += (trusted + link + u) / kk + (kk - 1) / kk * max(trusted, link, u)
            }
        }
        if training {
            let update = seconds(Prediction.updateWork(plan), .elementwise)
            t.trusted += update
            t.wall += update
        }
        // Ranks on shared cores: a step takes at least every rank's compute over the cores.
        if let cores = hardware.sharedCores {
            t.wall = max(t.wall, (t.trusted + t.untrusted * Double(plan.members)) / cores)
        }
        return t
    }

    /// The same step on one tee-only rank: every layer whole, at the trusted rates.
    package func teeOnly(training: Bool) -> Double {
        var total = training ? seconds(Prediction.updateWork(plan), .elementwise) : 0
        for r in plan.rows {
            switch r.kernel {
            case .elementwise: total += seconds(Prediction.elementwiseWork(r, training: training), .elementwise)
            case .gemm, .split: total += seconds(r.teeOnlyForward + (training ? r.teeOnlyBackward : 0), .gemm)
            }
        }
        return total
    }

    package static let microbatchCounts = [1, 2, 4]

    package var table: String {
        var lines = ["prediction for 1 trusted + \(plan.members) untrusted rank\(plan.members > 1 ? "s" : ""), batch \(plan.batch) (\(hardware.summary)):",
                     "                  trusted ms  untrusted ms    link ms   wall ms k=1      k=2      k=4   tee-only ms   speed-up k=1 (k=4)"]
        for training in [true, false] {
            let runs = Prediction.microbatchCounts.map { times(training: training, microbatches: $0) }
            let one = runs[0], tee = teeOnly(training: training)
            lines.append(String(format: "%@ %10.1f %13.1f %10.1f %13.1f %8.1f %8.1f %13.1f %9.2fx (%.2fx)",
                                (training ? "training step  " : "inference batch") as NSString,
                                1e3 * one.trusted, 1e3 * one.untrusted, 1e3 * one.link, 1e3 * runs[0].wall,
                                1e3 * runs[1].wall, 1e3 * runs[2].wall, 1e3 * tee, tee / one.wall, tee / runs[2].wall))
        }
        lines.append(String(format: "trusted-time speed-up over tee-only (fast accelerators): %.1fx training, %.1fx inference",
                            teeOnly(training: true) / times(training: true, microbatches: 1).trusted,
                            teeOnly(training: false) / times(training: false, microbatches: 1).trusted))
        return lines.joined(separator: "\n")
    }

    package var json: JSONValue {
        func side(_ training: Bool) -> JSONValue {
            let one = times(training: training, microbatches: 1)
            return .object([("trusted_s", .number(one.trusted)), ("untrusted_s", .number(one.untrusted)),
                            ("link_s", .number(one.link)), ("tee_only_s", .number(teeOnly(training: training))),
                            ("wall_s", .object(Prediction.microbatchCounts.map {
                                ("\($0)", .number(times(training: training, microbatches: $0).wall)) }))])
        }
        return .object([("hardware", .object(zip(Hardware.keys, hardware.values).compactMap { key, v in v.map { (key, .number($0)) } })),
                        ("training", side(true)), ("inference", side(false))])
    }
}
