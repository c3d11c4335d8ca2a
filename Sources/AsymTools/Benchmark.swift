import AsymModel
import AsymTrain
import AsymData
import AsymKernels
import AsymSplit
import AsymPrivacy
import AsymIntegrity
import Foundation

package func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
}

/// One mode's timings: medians over the timed steps.
package struct ModeTiming {
    package var mode: Mode
    package var trainStepSeconds: Double, inferBatchSeconds: Double
    /// The part of a step (or of an inference batch) that the trusted side computed.
    package var trustedTrainSeconds: Double, trustedInferSeconds: Double
    /// Trusted time per layer over the timed training steps (`--profile`).
    package var profile: String?
}

/// `asymml bench`: throughput of the plain model (samples/s, GFLOP/s against an sgemm peak
/// measured in the same run), and the trusted side's compute per step in tee-only and asym
/// modes, the latter with the integrity checks off and on (`asym.verify`), all on synthetic
/// data of the config's shape.
package struct BenchmarkResult {
    package var batch: Int, threads: Int
    package var plain: ModeTiming
    /// Nil when `--plain-only`.
    package var teeOnly: ModeTiming?
    package var asym: ModeTiming?
    /// asym with `asym.verify: true` (the other timings run with the checks off).
    package var asymVerified: ModeTiming?
    package var plan: Plan
    /// FLOPs of one plain training step and of one inference batch (the plan's count).
    package var trainFlops: Double, inferFlops: Double
    /// GFLOP/s of a 2048^3 sgemm on OpenBLAS and on oneDNN, measured in this run.
    package var sgemmOpenBLAS: Double, sgemmDNNL: Double

    package var trainSamplesPerSecond: Double { Double(batch) / plain.trainStepSeconds }
    package var inferSamplesPerSecond: Double { Double(batch) / plain.inferBatchSeconds }
    package var trainGFlops: Double { trainFlops / plain.trainStepSeconds / 1e9 }
    package var inferGFlops: Double { inferFlops / plain.inferBatchSeconds / 1e9 }
    package var sgemmPeak: Double { max(sgemmOpenBLAS, sgemmDNNL) }
    /// The speed-up that fast accelerators would give: tee-only trusted time over asym's.
    package var trainingSpeedup: Double? { teeOnly.flatMap { t in asym.map { t.trustedTrainSeconds / $0.trustedTrainSeconds } } }
    package var inferenceSpeedup: Double? { teeOnly.flatMap { t in asym.map { t.trustedInferSeconds / $0.trustedInferSeconds } } }
    /// What the checks add to asym's trusted time: 0.15 is 15 % more.
    package var verifyTrainingCost: Double? { asymVerified.flatMap { v in asym.map { v.trustedTrainSeconds / $0.trustedTrainSeconds - 1 } } }
    package var verifyInferenceCost: Double? { asymVerified.flatMap { v in asym.map { v.trustedInferSeconds / $0.trustedInferSeconds - 1 } } }

    package var text: String {
        var lines = [
            String(format: "%@: batch %d, %d threads, conv on %@ (oneDNN isa %@)", plan.name, batch, threads,
                   convKernels.rawValue, dnnlISA),
            String(format: "  plain      training %8.1f samples/s (%6.1f ms/step)   inference %8.1f samples/s",
                   trainSamplesPerSecond, 1000 * plain.trainStepSeconds, inferSamplesPerSecond),
            String(format: "  plain      training %6.1f GFLOP/s (%.0f%% of sgemm peak), inference %6.1f GFLOP/s (%.0f%%); sgemm 2048^3: OpenBLAS %.1f, oneDNN %.1f GFLOP/s",
                   trainGFlops, 100 * trainGFlops / sgemmPeak, inferGFlops, 100 * inferGFlops / sgemmPeak, sgemmOpenBLAS, sgemmDNNL),
        ]
        if let teeOnly, let asym, let trainingSpeedup, let inferenceSpeedup {
            let tb = plan.trainingBound, ib = plan.forwardBound
            lines += [
                String(format: "  tee-only   trusted %7.1f ms/step training, %7.1f ms/batch inference",
                       1000 * teeOnly.trustedTrainSeconds, 1000 * teeOnly.trustedInferSeconds),
                String(format: "  asym       trusted %7.1f ms/step training, %7.1f ms/batch inference (basis %@)",
                       1000 * asym.trustedTrainSeconds, 1000 * asym.trustedInferSeconds, plan.basis.rawValue),
                String(format: "  trusted-time speed-up over tee-only: training %.1fx of a %.1fx bound (%.0f%%), inference %.1fx of %.1fx (%.0f%%)",
                       trainingSpeedup, tb, 100 * trainingSpeedup / tb, inferenceSpeedup, ib, 100 * inferenceSpeedup / ib),
            ]
            if let asymVerified, let verifyTrainingCost, let verifyInferenceCost {
                lines.insert(String(format: "  asym+verify trusted %7.1f ms/step training (%+.1f%%), %7.1f ms/batch inference (%+.1f%%)",
                                    1000 * asymVerified.trustedTrainSeconds, 100 * verifyTrainingCost,
                                    1000 * asymVerified.trustedInferSeconds, 100 * verifyInferenceCost), at: lines.count - 1)
            }
        }
        return lines.joined(separator: "\n") + [plain.profile, teeOnly?.profile, asym?.profile, asymVerified?.profile]
            .compactMap { $0.map { "\n" + $0 } }.joined()
    }

    package var json: String {
        var fields: [(String, JSONValue)] = [
            ("config", .string(plan.name)), ("batch", .int(batch)), ("threads", .int(threads)),
            ("conv_kernels", .string(convKernels.rawValue)), ("dnnl_isa", .string(dnnlISA)),
            ("train_samples_per_s", .number(trainSamplesPerSecond)), ("infer_samples_per_s", .number(inferSamplesPerSecond)),
            ("train_gflops", .number(trainGFlops)), ("infer_gflops", .number(inferGFlops)),
            ("sgemm_gflops", .object([("openblas", .number(sgemmOpenBLAS)), ("dnnl", .number(sgemmDNNL))])),
        ]
        if let teeOnly, let asym, let trainingSpeedup, let inferenceSpeedup {
            fields += [
                ("trusted_s_per_step", .object([("tee-only", .number(teeOnly.trustedTrainSeconds)), ("asym", .number(asym.trustedTrainSeconds))]
                                               + (asymVerified.map { [("asym-verify", .number($0.trustedTrainSeconds))] } ?? []))),
                ("trusted_s_per_inference_batch", .object([("tee-only", .number(teeOnly.trustedInferSeconds)), ("asym", .number(asym.trustedInferSeconds))]
                                                          + (asymVerified.map { [("asym-verify", .number($0.trustedInferSeconds))] } ?? []))),
                ("training_speedup", .number(trainingSpeedup)), ("training_bound", .number(plan.trainingBound)),
                ("inference_speedup", .number(inferenceSpeedup)), ("inference_bound", .number(plan.forwardBound)),
            ]
        }
        if let verifyTrainingCost, let verifyInferenceCost {
            fields += [("verify_training_cost", .number(verifyTrainingCost)), ("verify_inference_cost", .number(verifyInferenceCost))]
        }
        return JSONValue.object(fields).json
    }
}

/// The config that `bench` and `bench --calibrate` time: synthetic data of the config's
/// shape, enough for two warm-up and `steps` timed steps; no step limit; checks off.
func timingConfig(_ config: Config, steps: Int) throws -> Config {
    guard steps >= 1 else { throw UsageError("--steps: time at least 1 step, got \(steps)") }
    var c = config
    c.data.dataset = .synthetic
    c.data.syntheticTrain = c.data.batchSize * (steps + 2)
    c.data.syntheticTest = c.data.batchSize
    c.data.classes = try Model(c.model).classes
    c.train.maxSteps = nil
    c.asym.verify = false
    return c
}

/// Times `steps` training steps and inference batches per mode after two warm-up steps,
/// and keeps the medians (timings on a shared machine are noisy; the median resists that).
/// asym runs with the integrity checks off and on; the plan's bounds are those without.
/// `plainOnly` skips tee-only and asym (the PyTorch comparison needs plain mode only).
package func benchmark(config: Config, steps: Int, profile: Bool = false, plainOnly: Bool = false) throws -> BenchmarkResult {
    let c = try timingConfig(config, steps: steps)
    let data = try DataSource(c)
    func time(_ mode: Mode, verify: Bool = false) throws -> ModeTiming {
        var m = c
        m.asym.mode = mode
        m.asym.verify = verify
        // The in-process untrusted side, kept here for its clock (the profile takes its
        // seconds out of each layer's wall time).
        let local = LocalUntrusted()
        let trainer = try Trainer(config: m, data: data, executor: local)
        var step: [Double] = [], trusted: [Double] = []
        // With checks on a masked config, the profile is the masking layer's: coding and each
        // check section (the layer table above covers the same layers without checks).
        let masking = profile && verify ? trainer.untrusted as? MaskingExecutor : nil
        var coding0 = 0.0
        for i in 0..<(steps + 2) {
            if profile && i == 2 && !verify {
                trainer.model.profile = LayerProfile(layers: trainer.model.layers.count,
                                                     untrustedClock: { local.worker.totalSeconds })
            }
            if let masking, i == 2 {
                masking.checkTiming = true
                _ = masking.takeCheckSeconds()
                coding0 = masking.codingSeconds
            }
            try trainer.step()
            if i >= 2 {
                step.append(trainer.lastStepSeconds)
                trusted.append(trainer.lastStepSeconds - trainer.lastUntrustedSeconds)
            }
        }
        var table = trainer.model.profile.map { "\(mode.rawValue), " + $0.table(trainer.model) }
        if let masking {
            masking.checkTiming = false
            table = maskingProfile(coding: masking.codingSeconds - coding0, checks: masking.takeCheckSeconds(), steps: steps,
                                   trustedStep: median(trusted))
        }
        let x = Tensor(shape: [c.data.batchSize] + c.model.input)
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: c.data.batchSize)
        defer { labels.deallocate() }
        data.test.gather(indices: Int32(0)..<Int32(c.data.batchSize), images: x.data, labels: labels)
        trainer.model.profile = nil
        var infer: [Double] = [], inferTrusted: [Double] = []
        _ = trainer.untrusted?.takeComputeSeconds()
        for i in 0..<(steps + 2) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = trainer.model.forward(x, batch: c.data.batchSize, training: false)
            let total = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            let untrusted = trainer.untrusted?.takeComputeSeconds() ?? 0
            if i >= 2 { infer.append(total); inferTrusted.append(total - untrusted) }
        }
        return ModeTiming(mode: mode, trainStepSeconds: median(step), inferBatchSeconds: median(infer),
                          trustedTrainSeconds: median(trusted), trustedInferSeconds: median(inferTrusted), profile: table)
    }
    let plan = try Plan(c)
    var verified = c
    verified.asym.verify = true
    let checksApply = (try? FeatureRules.check(verified, launch: nil)) != nil
    return BenchmarkResult(batch: c.data.batchSize, threads: kernelThreads, plain: try time(.plain),
                           teeOnly: plainOnly ? nil : try time(.teeOnly), asym: plainOnly ? nil : try time(.asym),
                           asymVerified: plainOnly || !checksApply ? nil : try time(.asym, verify: true), plan: plan,
                           trainFlops: plan.plainTrainingFlops, inferFlops: plan.plainForwardFlops,
                           sgemmOpenBLAS: sgemmRate(n: 2048, onDNNL: false), sgemmDNNL: sgemmRate(n: 2048, onDNNL: true))
}

/// `bench --profile` with checks on a masked config: the masking layer's trusted time per
/// training step (means over the timed steps, the checks' forward and backward passes of
/// every step): encoding and decoding with the noise, and each check section.
private func maskingProfile(coding: Double, checks: [IntegritySection: Double], steps: Int, trustedStep: Double) -> String {
    let perStep = { (seconds: Double) in 1e3 * seconds / Double(steps) }
    let sections = IntegritySection.allCases.compactMap { section in
        checks[section].flatMap { $0 > 0 ? String(format: "%@ %.1f", section.rawValue, perStep($0)) : nil }
    }
    let checked = perStep(checks.values.reduce(0, +))
    return String(format: "asym+verify, masking layer, ms/step (trusted step %.1f): encode and decode with the noise %.1f, checks %.1f (",
                  1e3 * trustedStep, perStep(coding), checked) + sections.joined(separator: ", ") + ")"
}
