import AsymModel
import AsymTrain
import AsymSplit
import AsymKernels
import Foundation

/// `asymml bench --calibrate`: this machine's rate for each kernel class of `Hardware`,
/// measured on the config's own layers (synthetic data of its shape, the config's threads).
///
/// A tee-only run with the per-layer profile gives the GEMM rate (its convolution and linear
/// layers: plan FLOPs over their seconds) and the elementwise rate (the other layers and the
/// optimizer's update: values touched over their seconds); an asym run with the in-process
/// untrusted side gives the split layers' trusted rate and the accelerator's rate (the
/// untrusted side's FLOPs over its own clock). The link comes from `link`, which the caller
/// measures between two MPI ranks.
package struct Calibration {
    package var hardware: Hardware
    package var config: String, threads: Int, steps: Int

    package var file: String {
        hardware.file(comment: """
            asymml bench --calibrate: \(config), \(threads) threads, \(steps) timed steps, \(ISO8601DateFormatter().string(from: Date()))
            rates in GFLOP/s as `asymml plan` counts them (elementwise: values read or written per second / 1e9)
            """)
    }
}

package func calibrate(config: Config, steps: Int, link: () throws -> (gbps: Double, latencyMicroseconds: Double))
    throws -> Calibration {
    let c = try timingConfig(config, steps: steps)
    let plan = try Plan(c)
    let data = try DataSource(c)

    /// Per-layer trusted seconds per step (forward + backward), "other" per step, and the
    /// untrusted side's seconds per step.
    func profile(_ mode: Mode) throws -> (layers: [Double], other: Double, untrusted: Double) {
        var m = c
        m.asym.mode = mode
        let local = LocalUntrusted()
        let trainer = try Trainer(config: m, data: data, executor: local)
        guard trainer.model.layers.count == plan.rows.count else {
            throw ConfigError("calibration: the plan has \(plan.rows.count) rows for \(trainer.model.layers.count) layers")
        }
        for _ in 0..<2 { try trainer.step() }
        let profile = LayerProfile(layers: trainer.model.layers.count, untrustedClock: { local.worker.totalSeconds })
        trainer.model.profile = profile
        let untrustedBefore = local.worker.totalSeconds
        for _ in 0..<steps {
            try trainer.step()
        }
        trainer.model.profile = nil
        let n = Double(steps)
        return (zip(profile.forward, profile.backward).map { ($0 + $1) / n }, profile.other / n,
                (local.worker.totalSeconds - untrustedBefore) / n)
    }

    let tee = try profile(.teeOnly), asym = try profile(.asym)
    var gemm = (work: 0.0, seconds: 0.0), elementwise = (work: 0.0, seconds: 0.0), split = (work: 0.0, seconds: 0.0)
    for (i, r) in plan.rows.enumerated() {
        switch r.kernel {
        case .gemm:
            gemm.work += r.teeOnlyForward + r.teeOnlyBackward; gemm.seconds += tee.layers[i]
        case .split:
            gemm.work += r.teeOnlyForward + r.teeOnlyBackward; gemm.seconds += tee.layers[i]
            split.work += r.trustedForward + r.trustedBackward; split.seconds += asym.layers[i]
        case .elementwise:
            elementwise.work += Prediction.elementwiseWork(r, training: true); elementwise.seconds += tee.layers[i]
        }
    }
    elementwise.work += Prediction.updateWork(plan)
    elementwise.seconds += tee.other
    let untrustedFlops = plan.rows.map { $0.untrustedForward + $0.untrustedBackward }.reduce(0, +)
    func rate(_ x: (work: Double, seconds: Double)) -> Double { x.work / max(x.seconds, 1e-9) / 1e9 }
    let measured = try link()
    return Calibration(hardware: Hardware(teeGflops: rate(gemm), teeSplitGflops: rate(split), teeElementwiseGflops: rate(elementwise),
                                          accelGflops: untrustedFlops / max(asym.untrusted, 1e-9) / 1e9,
                                          linkGbps: measured.gbps, linkLatencyMicroseconds: measured.latencyMicroseconds,
                                          // A local run's ranks (launch/local.sh) share these cores.
                                          sharedCores: Double(ProcessInfo.processInfo.activeProcessorCount)),
                       config: c.name, threads: kernelThreads, steps: steps)
}
