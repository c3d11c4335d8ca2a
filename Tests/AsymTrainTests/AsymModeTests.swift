import AsymKernels
import AsymModel
import AsymTools
import AsymTrain
import XCTest

final class AsymModeTests: XCTestCase {
    /// Relative difference of two weight vectors: max |a - b| / max |b|.
    func relative(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max()! / b.map(abs).max()!
    }

    /// 20 steps in asym (both bases, all rank policies) and in tee-only give the weights of
    /// 20 plain steps from the same seed and data order, to 1e-4 relative.
    func testAsymAndTeeOnlyTrainTheSameModelAsPlain() throws {
        setThreads(1)
        let base = ["train.epochs=2"]
        let plain = try Trainer(config: try smokeConfig(base))
        for _ in 0..<20 { try plain.step() }
        let reference = modelValues(plain)
        let variants: [[String]] = [
            ["asym.mode=tee-only"],
            ["asym.mode=asym"],
            ["asym.mode=asym", "asym.basis=batch"],
            ["asym.mode=asym", "asym.rank=3"],
            ["asym.mode=asym", "asym.rank={policy: energy, tau: 0.05, max: 8}"],
            ["asym.mode=asym", "asym.svd_iterations=1", "model.layers.2.rank=8"],
        ]
        for v in variants {
            let t = try Trainer(config: try smokeConfig(base + v))
            XCTAssertEqual(t.splitLayers.count, v.contains("asym.mode=asym") ? 2 : 0, "\(v)")
            for _ in 0..<20 { try t.step() }
            let diff = relative(modelValues(t), reference)
            print("\(v): max relative weight difference to plain after 20 steps \(diff)")
            XCTAssertLessThan(diff, 1e-4, "\(v)")
            for (name, energy) in t.residualEnergies {
                XCTAssertTrue(energy >= 0 && energy <= 1, "\(name) residual energy \(energy)")
            }
        }
    }

    /// A residual network (batch norm, a stride-2 block with a projection shortcut, whose
    /// 3x3 and 1x1 convolutions are all split) trains the same model in asym mode as plain.
    func testResidualBlocksSplitExactly() throws {
        setThreads(1)
        var c = try smokeConfig(["train.epochs=2"])
        c.model.layers = [
            LayerSpec(name: "conv1", type: .conv, out: 6, kernel: 3, padding: 1),
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
            let diff = relative(modelValues(t), modelValues(plain))
            print("resnet blocks, basis \(basis): max relative difference to plain after 10 steps \(diff)")
            XCTAssertLessThan(diff, 1e-4)
        }
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
    /// FLOPs at or under 8%.
    func testPlanTrustedShare() throws {
        let c = try Config.load(path: repoRoot + "/configs/vgg-cifar.yaml", overrides: ["asym.basis=batch"])
        let plan = try Plan(c)
        print(plan.table)
        XCTAssertLessThanOrEqual(plan.training.trustedShare, 0.08)
        XCTAssertTrue(plan.json.contains("\"totals\": {\"forward\": {\"trusted_flops\""))
    }
}
