import AsymKernels
import AsymSplit
import AsymPrivacy
import AsymModel
import AsymTools
import AsymTrain
import Foundation
import XCTest

final class AsymModeTests: XCTestCase {
    /// ResNet-18 and VGG-16 (batch norm, basic blocks with projection shortcuts) in every
    /// mode: tee-only, the unprotected split and the private default (spread masking, checks
    /// on) compute the same first-step loss as plain to 2e-5 (the whole forward pass: splits,
    /// decodes, blocks, batch norm; measured 1.4e-7 unprotected, 1-5e-6
    /// private: the decodes of 12 to 19 split layers at noise 30) and take the step. Their
    /// tensors are not compared after an update: on a few synthetic samples these deep ReLU
    /// networks turn rounding-level differences into percent-level gradient differences
    /// (scaling plain's parameters by 1 +- 1e-7 moved resnet18-cifar's gradients by up to 9.7%
    /// after one step; asym's own differences were 1%), while resnet-cifar stays at 4e-6.
    func testResNet18AndVGG16TrainInEveryMode() throws {
        setThreads(1)
        for file in ["resnet18-cifar", "vgg16-cifar"] {
            let base = ["data.dataset=synthetic", "data.synthetic_train=8", "data.synthetic_test=4", "data.batch_size=8",
                        "data.augment={random_crop: 0, horizontal_flip: false}", "train.threads=1", "optimizer.lr=0.01"]
            func firstLoss(_ overrides: [String]) throws -> Double {
                let t = try Trainer(config: try Config.load(path: "\(repoRoot)/configs/\(file).yaml", overrides: base + overrides))
                t.log = { _ in }
                let loss = try t.step().loss
                XCTAssertEqual(t.position.step, 1)
                return loss
            }
            let plain = try firstLoss(["asym.mode=plain"])
            for v in [["asym.mode=tee-only"], ["asym.mode=asym", "asym.mask=off", "asym.verify=false"], ["asym.mode=asym"]] {
                let loss = try firstLoss(v)
                print("\(file) \(v): first-step loss \(loss), plain \(plain)")
                XCTAssertEqual(loss, plain, accuracy: 2e-5 * plain, "\(file) \(v): first-step loss")
            }
        }
    }

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
            ["asym.mode=asym", "asym.mask={inputs_per_group: 2, noise_scale: 3, spread: false}"],
            ["asym.mode=asym", "asym.basis=batch", "asym.mask={inputs_per_group: 4, noise_scale: 3, spread: false}"],
            // Spread (exact): 3K mixtures with K noise vectors per side, placed for 3 ranks; the
            // private default (K = 1, noise 30, checks on) in both bases, and K = 2, 3.
            ["asym.mode=asym", "asym.mask={inputs_per_group: 1, noise_scale: 30, spread: true}", "asym.verify=true"],
            ["asym.mode=asym", "asym.basis=batch", "asym.mask={inputs_per_group: 1, noise_scale: 30, spread: true}", "asym.verify=true"],
            ["asym.mode=asym", "asym.basis=batch", "asym.mask={inputs_per_group: 3, noise_scale: 3, spread: true}"],
            ["asym.mode=asym", "asym.mask={inputs_per_group: 2, noise_scale: 30, spread: true}"],
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
        // With the checks, and with spread masking and its checks (the masking layer sends a
        // batch's groups together, so its micro-batches leave as one message): the same model.
        for extra in [["asym.verify=true"], ["asym.verify=true", "asym.mask={inputs_per_group: 1, noise_scale: 30, spread: true}"],
                      ["asym.basis=batch", "asym.mask={inputs_per_group: 2, noise_scale: 30, spread: true}"]] {
            for k in [1, 2, 4] {
                let t = try Trainer(config: try smokeConfig(base + extra + ["asym.microbatches=\(k)"]))
                for _ in 0..<10 { try t.step() }
                let worst = assertTensorsClose(t, plain, 1e-5, "\(extra), k = \(k)")
                print("\(extra), k = \(k): worst tensor after 10 steps against plain: \(worst.0) \(worst.1)")
            }
        }
        XCTAssertThrowsError(try smokeConfig(base + ["asym.microbatches=2", "asym.residual_noise={std: 0.1, clip: 1}"])) {
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

    /// Unmasked, with spread masking (the masking layer checks every combination before it
    /// decodes) and with masking without spread (one correlation per combination checked).
    func testEveryFaultIsCaughtAndRecomputeKeepsTheModel() throws {
        setThreads(1)
        for masking in [[], ["asym.mask={inputs_per_group: 1, noise_scale: 30, spread: true}"],
                        ["asym.mask={inputs_per_group: 2, noise_scale: 3, spread: false}"]] {
            let honest = try train(masking, fault: nil)
            XCTAssertTrue(honest.integrityHeadroom.values.allSatisfy { $0 > 0 && $0 < 0.5 }, "\(masking): \(honest.integrityHeadroom)")
            for kind in ["flip", "scale", "zero", "replay", "grad"] {
                let abort = errorMessage { _ = try self.train(masking, fault: "1:\(kind):2") }
                XCTAssertTrue(abort.contains("the in-process untrusted side, step 2: integrity check failed"), "\(masking) \(kind): \(abort)")
                let recomputed = try train(masking + ["asym.on_verify_failure=recompute"], fault: "1:\(kind):2")
                let worst = assertTensorsClose(recomputed, honest, 1e-5, "\(masking): recompute after \(kind)")
                print("\(masking) \(kind): caught (\(abort.split(separator: ":").dropFirst(3).first ?? "")); recompute worst tensor \(worst.0) \(worst.1)")
            }
        }
    }

    func testFaultSyntaxIsOneClearLine() {
        for bad in ["0:flip:2", "1:bend:2", "1:flip", "x:flip:1"] {
            XCTAssertTrue(errorMessage { _ = try Fault.parse(bad) }.contains("is not RANK:KIND:STEP"), bad)
        }
    }
}
