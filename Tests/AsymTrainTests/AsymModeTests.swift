import AsymKernels
import AsymSplit
import AsymModel
import AsymTools
import AsymTrain
import Foundation
import XCTest

final class AsymModeTests: XCTestCase {
    /// 20 steps in asym (both bases, all rank policies) and in tee-only give the weights of
    /// 20 plain steps from the same seed and data order, to 1e-4 relative.
    func testAsymAndTeeOnlyTrainTheSameModelAsPlain() throws {
        setThreads(1)
        let base = ["train.epochs=2"]
        let plain = try Trainer(config: try smokeConfig(base))
        for _ in 0..<20 { try plain.step() }
        let variants: [[String]] = [
            ["asym.mode=tee-only"],
            ["asym.mode=asym"],
            ["asym.mode=asym", "asym.basis=batch"],
            ["asym.mode=asym", "asym.rank=3"],
            ["asym.mode=asym", "asym.rank={policy: energy, tau: 0.05, max: 8}"],
            ["asym.mode=asym", "asym.svd_iterations=1", "model.layers.2.rank=8"],
            // Masked offload (exact): K samples cross as K+2 noisy mixtures.
            ["asym.mode=asym", "asym.mask={inputs_per_group: 2, noise_scale: 3}"],
            ["asym.mode=asym", "asym.basis=batch", "asym.mask={inputs_per_group: 4, noise_scale: 3}"],
            // Spread (exact): 3K mixtures with K noise vectors per side, placed for 3 ranks.
            ["asym.mode=asym", "asym.mask={inputs_per_group: 1, noise_scale: 3, spread: true}"],
            ["asym.mode=asym", "asym.basis=batch", "asym.mask={inputs_per_group: 3, noise_scale: 3, spread: true}"],
            ["asym.mode=asym", "asym.mask={inputs_per_group: 2, noise_scale: 10, spread: true}"],  // the scale that hides labels
            // Residual noise with std 0 is off: exact.
            ["asym.mode=asym", "asym.residual_noise={std: 0, clip: 1}"],
        ]
        for v in variants {
            let t = try Trainer(config: try smokeConfig(base + v))
            XCTAssertEqual(t.splitLayers.count, v.contains("asym.mode=asym") ? 2 : 0, "\(v)")
            for _ in 0..<20 { try t.step() }
            let worst = assertTensorsClose(t, plain, 1e-5, "\(v)")
            print("\(v): worst tensor after 20 steps against plain: \(worst.0) \(worst.1)")
            for (name, energy) in t.residualEnergies {
                XCTAssertTrue(energy >= 0 && energy <= 1, "\(name) residual energy \(energy)")
            }
        }
    }

    /// A residual network (batch norm, a stride-2 block with a projection shortcut, whose
    /// 3x3 and 1x1 convolutions are all split) trains the same model in asym mode as plain.
    /// Micro-batches change when the halves run, never what they compute: every sample's
    /// convolutions are chunked as in the whole batch and the shares add up in the same order,
    /// so k = 2 and 4 give k = 1's model bit for bit, and that equals plain's up to rounding.
    func testMicrobatchesTrainTheSameModel() throws {
        setThreads(1)
        let base = ["train.epochs=2", "data.batch_size=32", "asym.mode=asym"]
        let plain = try Trainer(config: try smokeConfig(["train.epochs=2", "data.batch_size=32"]))
        for _ in 0..<10 { try plain.step() }
        for basis in ["sample", "batch"] {
            var whole: Trainer?
            for k in [1, 2, 4] {
                let t = try Trainer(config: try smokeConfig(base + ["asym.basis=\(basis)", "asym.microbatches=\(k)"]))
                for _ in 0..<10 { try t.step() }
                _ = assertTensorsClose(t, plain, 1e-5, "basis \(basis), k = \(k)")
                if let whole {
                    for (p, q) in zip(t.model.parameters, whole.model.parameters) {
                        XCTAssertEqual(p.value.buffer.map(\.bitPattern), q.value.buffer.map(\.bitPattern), "basis \(basis), k = \(k)")
                    }
                }
                whole = whole ?? t
            }
        }
        XCTAssertThrowsError(try smokeConfig(base + ["asym.microbatches=2", "asym.verify=true"])) {
            XCTAssertTrue("\($0)".contains("asym.microbatches"), "\($0)")
        }
        XCTAssertThrowsError(try smokeConfig(base + ["asym.microbatches=0"]))
    }

    func testResidualBlocksSplitExactly() throws {
        setThreads(1)
        var c = try smokeConfig(["train.epochs=2"])
        // conv1 has no bias, as in ResNet: batch norm right after it removes any bias, so a
        // bias' gradient there would be pure rounding noise, and no tensor to compare.
        var conv1 = LayerSpec(name: "conv1", type: .conv, out: 6, kernel: 3, padding: 1)
        conv1.bias = false
        c.model.layers = [
            conv1,
            LayerSpec(name: "bn1", type: .batchnorm),
            LayerSpec(name: "relu", type: .relu),
            LayerSpec(name: "block1", type: .basicBlock, out: 6, stride: 1),
            LayerSpec(name: "block2", type: .basicBlock, out: 10, stride: 2),
            LayerSpec(name: "pool", type: .globalAvgpool),
            LayerSpec(name: "flat", type: .flatten),
            LayerSpec(name: "fc", type: .linear, out: 4),
        ]
        let plain = try Trainer(config: c)
        for _ in 0..<10 { try plain.step() }
        for basis in Basis.allCases {
            var a = c
            a.asym.mode = .asym
            a.asym.basis = basis
            let t = try Trainer(config: a)
            XCTAssertEqual(t.splitLayers.map(\.name), ["block1.conv1", "block1.conv2", "block2.conv1", "block2.conv2", "block2.shortcut.conv"])
            for _ in 0..<10 { try t.step() }
            let worst = assertTensorsClose(t, plain, 1e-5, "resnet blocks, basis \(basis)")
            print("resnet blocks, basis \(basis): worst tensor after 10 steps against plain: \(worst.0) \(worst.1)")
        }
    }

    /// Residual noise (3LegRace) is not exact: the model moves away from plain's, and the
    /// per-release epsilon follows the Gaussian mechanism.
    func testResidualNoiseIsNotExact() throws {
        setThreads(1)
        let plain = try Trainer(config: try smokeConfig())
        let noisy = try Trainer(config: try smokeConfig(["asym.mode=asym", "asym.residual_noise={std: 0.5, clip: 1}"]))
        for _ in 0..<5 { try plain.step(); try noisy.step() }
        let worst = tensorDifferences(noisy, plain).map(\.1).max()!
        print("residual noise std 0.5: worst tensor difference to plain after 5 steps \(worst)")
        XCTAssertGreaterThan(worst, 1e-3)
        XCTAssertEqual(ResidualNoiseExecutor.privacy(std: 1).epsilon, 9.69, accuracy: 0.01)
    }

    /// The placement rule: the first conv trusted, other convs split, the rest trusted;
    /// per-layer overrides win.
    func testPlacementRuleAndOverrides() throws {
        let c = try Config.load(path: repoRoot + "/configs/vgg-cifar.yaml", overrides: ["model.layers.2.placement=trusted"])
        let placements = try placeLayers(try Model(c.model), c)
        let convs = placements.filter { $0.layer is Conv2dLayer }
        XCTAssertEqual(convs.map(\.side.rawValue), ["trusted", "trusted", "split", "split", "split", "split", "split"])
        // Default schedule: 2, 4, 8, ... capped at 32 and at the input channels.
        XCTAssertEqual(convs.compactMap { $0.settings?.maxRank }, [2, 4, 8, 16, 32])
        XCTAssertTrue(placements.filter { !($0.layer is Conv2dLayer) }.allSatisfy { $0.side == .trusted })
        let bad = errorMessage {
            let wrong = try Config.load(path: repoRoot + "/configs/vgg-cifar.yaml", overrides: ["model.layers.2.rank=65"])
            _ = try placeLayers(try Model(wrong.model), wrong)
        }
        XCTAssertTrue(bad.contains("rank 65 must lie in 1...64"), bad)
    }

    /// The plan's totals: vgg-cifar with a batch basis keeps the trusted share of training
    /// FLOPs at or under 8%; the integrity checks add at most 15% to the trusted FLOPs, and
    /// count in the totals exactly when `asym.verify` is on.
    func testPlanTrustedShare() throws {
        let c = try Config.load(path: repoRoot + "/configs/vgg-cifar.yaml", overrides: ["asym.basis=batch"])
        let plan = try Plan(c)
        print(plan.table)
        XCTAssertLessThanOrEqual(plan.training.trustedShare, 0.08)
        XCTAssertTrue(plan.json.contains("\"totals\": {\"forward\": {\"trusted_flops\""))
        let verified = try Plan(try Config.load(path: repoRoot + "/configs/vgg-cifar.yaml",
                                                overrides: ["asym.basis=batch", "asym.verify=true"]))
        XCTAssertGreaterThan(plan.verifyTraining, 0)
        XCTAssertEqual(verified.training.trustedFlops, plan.training.trustedFlops + plan.verifyTraining,
                       accuracy: 1e-6 * plan.training.trustedFlops)
        XCTAssertEqual(verified.forward.trustedFlops, plan.forward.trustedFlops + plan.verifyInference,
                       accuracy: 1e-6 * plan.forward.trustedFlops)
        XCTAssertEqual(verified.training.untrustedFlops, plan.training.untrustedFlops)
        XCTAssertLessThanOrEqual(plan.verifyTraining / plan.training.trustedFlops, 0.15)
        XCTAssertTrue(verified.json.contains("\"verify_training_flops\""))
    }
}

/// `asym.verify` during training: every injected fault is caught; under `recompute` the run
/// ends with the weights of an honest verified run.
final class VerifiedTrainingTests: XCTestCase {
    func train(_ overrides: [String], fault: String?, steps: Int = 6) throws -> Trainer {
        let local = LocalUntrusted()
        local.worker.fault = try fault.map { try Fault.parse($0).fault }
        let t = try Trainer(config: try smokeConfig(["asym.mode=asym", "asym.verify=true"] + overrides), executor: local)
        t.log = { _ in }
        for _ in 0..<steps { try t.step() }
        return t
    }

    func testEveryFaultIsCaughtAndRecomputeKeepsTheModel() throws {
        setThreads(1)
        let honest = try train([], fault: nil)
        for kind in ["flip", "scale", "zero", "replay", "grad"] {
            let abort = errorMessage { _ = try self.train([], fault: "1:\(kind):2") }
            XCTAssertTrue(abort.contains("the in-process untrusted side, step 2: integrity check failed"), "\(kind): \(abort)")
            let recomputed = try train(["asym.on_verify_failure=recompute"], fault: "1:\(kind):2")
            let worst = assertTensorsClose(recomputed, honest, 1e-5, "recompute after \(kind)")
            print("\(kind): caught (\(abort.split(separator: ":").dropFirst(3).first ?? "")); recompute worst tensor \(worst.0) \(worst.1)")
        }
    }

    func testFaultSyntaxIsOneClearLine() {
        for bad in ["0:flip:2", "1:bend:2", "1:flip", "x:flip:1"] {
            XCTAssertTrue(errorMessage { _ = try Fault.parse(bad) }.contains("is not RANK:KIND:STEP"), bad)
        }
    }
}

/// `plan --hardware`: the spec's syntax, and the prediction's composition of the plan.
final class PredictionTests: XCTestCase {
    func testHardwareSpecsParseOrSayWhatIsWrong() throws {
        let file = NSTemporaryDirectory() + "hardware-\(UUID().uuidString).yaml"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let h = Hardware(teeGflops: 50, teeSplitGflops: 20, teeElementwiseGflops: 2, accelGflops: 1000, linkGbps: 25,
                         linkLatencyMicroseconds: 3)
        try h.file(comment: "a test\nof two lines").write(toFile: file, atomically: true, encoding: .utf8)
        XCTAssertEqual(try Hardware.parse(file), h)
        var faster = h
        faster.linkGbps = 100
        XCTAssertEqual(try Hardware.parse("\(file),link_gbps=100"), faster)
        let bare = try Hardware.parse("tee_gflops=10,accel_gflops=100,link_gbps=1")
        XCTAssertEqual(bare.teeSplitGflops, 10 * Hardware.splitFraction)
        XCTAssertEqual(bare.linkLatencyMicroseconds, 0)
        for (spec, expected) in [("tee_gflops=10,accel_gflops=100", "link_gbps is missing"),
                                 ("tee_gflops=10,accel_gflops=100,link_gbps=1,warp=9", "unknown key 'warp'"),
                                 ("tee_gflops=-1,accel_gflops=100,link_gbps=1", "tee_gflops must be a positive number"),
                                 ("/nonexistent/hw.yaml", "cannot read the hardware file /nonexistent/hw.yaml")] {
            let message = errorMessage { _ = try Hardware.parse(spec) }
            XCTAssertTrue(message.contains(expected), "\(spec): \(message)")
        }
    }

    /// Without micro-batches every split pass is trusted + link + untrusted in sequence; with
    /// more the wall time falls towards the slowest stage, never below it; on infinitely fast
    /// accelerators and links the speed-up is the trusted-time one; tee-only counts each
    /// layer whole at the trusted rates.
    func testPredictionComposesThePlan() throws {
        let plan = try Plan(try Config.load(path: repoRoot + "/configs/vgg-cifar.yaml", overrides: ["asym.basis=batch"]))
        let h = Hardware(teeGflops: 40, teeSplitGflops: 10, teeElementwiseGflops: 1, accelGflops: 200, linkGbps: 10,
                         linkLatencyMicroseconds: 5)
        let p = Prediction(plan: plan, hardware: h)
        for training in [true, false] {
            let one = p.times(training: training, microbatches: 1)
            XCTAssertEqual(one.wall, one.trusted + one.untrusted + one.link, accuracy: 1e-9)
            var previous = one.wall
            for k in [2, 4, 8] {
                let t = p.times(training: training, microbatches: k)
                XCTAssertLessThan(t.wall, previous, "k = \(k)")
                XCTAssertGreaterThanOrEqual(t.wall, max(t.trusted, t.untrusted), "k = \(k)")
                previous = t.wall
            }
            // Split rows at the GEMM rate, the others as counted: tee-only by hand.
            let update = training ? Prediction.updateTouches * Double(plan.parameters) / 1e9 : 0
            let byHand = plan.rows.map { r -> Double in
                r.kernel == .elementwise ? (training ? 3 : 1) * r.elements / 1e9
                    : (r.teeOnlyForward + (training ? r.teeOnlyBackward : 0)) / 40e9
            }.reduce(0, +) + update
            XCTAssertEqual(p.teeOnly(training: training), byHand, accuracy: 1e-9 * byHand)
        }
        let ideal = Prediction(plan: plan, hardware: Hardware(teeGflops: 40, teeSplitGflops: 40, teeElementwiseGflops: 1e9,
                                                              accelGflops: 1e12, linkGbps: 1e12))
        let t = ideal.times(training: true, microbatches: 1)
        let gemmRows = plan.rows.filter { $0.kernel != .elementwise }
        let bound = gemmRows.map { $0.teeOnlyForward + $0.teeOnlyBackward }.reduce(0, +)
            / gemmRows.map { $0.trustedForward + $0.trustedBackward }.reduce(0, +)
        XCTAssertEqual(ideal.teeOnly(training: true) / t.wall, bound, accuracy: 1e-3 * bound)
        XCTAssertTrue(plan.json(extra: [("prediction", p.json)]).contains("\"prediction\": {\"hardware\""))
    }
}
