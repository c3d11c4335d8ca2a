import AsymKernels
import AsymModel
import AsymTools
import AsymTrain
import AsymTestSupport
import Foundation
import XCTest

/// The standard CIFAR models that practitioners bring (configs/resnet18-cifar.yaml,
/// configs/vgg16-cifar.yaml): they load, build with the well-known parameter counts, name
/// their tensors as PyTorch does, place their layers by the rule of docs/DESIGN.md §2.7, and
/// train.
final class ModelConfigsTests: XCTestCase {
    private func load(_ file: String, _ overrides: [String] = []) throws -> Config {
        try Config.load(path: repositoryRoot + "/configs/" + file, overrides: overrides)
    }

    /// Every state_dict key of a model, as `scripts/to_torch.py` writes it:
    /// `<layer>.<param>` with a block's `shortcut.conv`/`shortcut.bn` as torchvision's
    /// `downsample.0`/`downsample.1`.
    private func torchKeys(_ model: Model) -> [String] {
        model.leaves.flatMap { l -> [String] in
            let name = l.name.replacingOccurrences(of: ".shortcut.conv", with: ".downsample.0")
                .replacingOccurrences(of: ".shortcut.bn", with: ".downsample.1")
            let tensors = l.parameters.map(\.name) + l.buffers.map(\.name) + (l.batchesTracked != nil ? ["num_batches_tracked"] : [])
            return tensors.map { "\(name).\($0)" }
        }
    }

    /// The private default (asym, spread masking, checks) and the training settings.
    private func assertPrivateDefaults(_ c: Config, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(c.data.dataset, .cifar10, file: file, line: line)
        XCTAssertEqual(c.model.input, [3, 32, 32], file: file, line: line)
        XCTAssertEqual(c.asym.mode, .asym, file: file, line: line)
        XCTAssertEqual(c.asym.maskGroup, 1, file: file, line: line)
        XCTAssertEqual(c.asym.maskNoise, 30, file: file, line: line)
        XCTAssertTrue(c.asym.maskSpread, file: file, line: line)
        XCTAssertTrue(c.asym.verify, file: file, line: line)
        XCTAssertEqual(c.optimizer.lr, 0.1, file: file, line: line)
        XCTAssertEqual(c.optimizer.momentum, 0.9, file: file, line: line)
        XCTAssertEqual(c.optimizer.weightDecay, 5e-4, file: file, line: line)
        XCTAssertTrue(c.optimizer.nesterov, file: file, line: line)
        XCTAssertEqual(c.optimizer.schedule.type, .cosine, file: file, line: line)
    }

    /// Where the plan puts each layer: the first convolution trusted, every other one split
    /// (the 1x1 shortcuts too), everything else trusted.
    private func assertPlacement(_ c: Config, convolutions: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let plan = try Plan(c)
        let convs = plan.rows.filter { $0.kind == LayerType.conv.rawValue }
        XCTAssertEqual(convs.count, convolutions, file: file, line: line)
        XCTAssertEqual(convs.first?.placement, "trusted", file: file, line: line)
        XCTAssertEqual(convs.dropFirst().filter { $0.placement == "split" }.count, convolutions - 1, file: file, line: line)
        for r in plan.rows where r.kind != LayerType.conv.rawValue {
            XCTAssertEqual(r.placement, "trusted", "\(r.name) (\(r.kind))", file: file, line: line)
        }
        XCTAssertGreaterThan(plan.training.untrustedFlops, plan.training.trustedFlops, file: file, line: line)
    }

    func testResNet18CIFAR() throws {
        let c = try load("resnet18-cifar.yaml")
        assertPrivateDefaults(c)
        let model = try Model(c.model)
        XCTAssertEqual(model.parameterCount, 11_173_962)
        XCTAssertEqual(model.classes, 10)
        XCTAssertEqual(model.layers.map(\.outputShape)[2...10].map { $0 }, [
            [64, 32, 32], [64, 32, 32], [64, 32, 32], [128, 16, 16], [128, 16, 16],
            [256, 8, 8], [256, 8, 8], [512, 4, 4], [512, 4, 4],
        ])
        // torchvision's resnet18 keys (with a 3x3 stem and no max pooling): 122 of them.
        var expected: [String] = []
        func bn(_ p: String) { expected += ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"].map { "\(p).\($0)" } }
        expected.append("conv1.weight"); bn("bn1")
        for (stage, width) in [64, 128, 256, 512].enumerated() {
            for block in 0..<2 {
                let p = "layer\(stage + 1).\(block)"
                expected.append("\(p).conv1.weight"); bn("\(p).bn1")
                expected.append("\(p).conv2.weight"); bn("\(p).bn2")
                if block == 0 && width != 64 { expected.append("\(p).downsample.0.weight"); bn("\(p).downsample.1") }
            }
        }
        expected += ["fc.weight", "fc.bias"]
        XCTAssertEqual(torchKeys(model), expected)
        XCTAssertEqual(expected.count, 122)
        try assertPlacement(c, convolutions: 20)
    }

    func testVGG16CIFAR() throws {
        let c = try load("vgg16-cifar.yaml")
        assertPrivateDefaults(c)
        let model = try Model(c.model)
        XCTAssertEqual(model.parameterCount, 14_728_266)
        let classifier = model.leaves.last!.parameters.map(\.value.count).reduce(0, +)
        XCTAssertEqual(classifier, 5_130)
        XCTAssertEqual(model.parameterCount - classifier, 14_723_136)
        XCTAssertEqual(model.classes, 10)
        // 13 convolutions with batch norm; the map is 512x1x1 after the fifth pooling.
        let convs = model.leaves.compactMap { $0 as? Conv2dLayer }
        XCTAssertEqual(convs.map(\.geometry.outChannels), [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512])
        XCTAssertTrue(convs.allSatisfy { $0.geometry.kernel == 3 && $0.bias != nil })
        XCTAssertEqual(model.leaves.filter { $0 is BatchNormLayer }.count, 13)
        XCTAssertEqual(model.layers[model.layers.count - 3].outputShape, [512, 1, 1])
        // The names are pytorch-cifar's VGG('VGG16') module names (features.N as in torchvision's vgg16_bn).
        var expected: [String] = []
        var index = 0
        for x in [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0] {
            guard x > 0 else { index += 1; continue }
            expected += ["weight", "bias"].map { "features.\(index).\($0)" }
            expected += ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"].map { "features.\(index + 1).\($0)" }
            index += 3
        }
        expected += ["classifier.weight", "classifier.bias"]
        XCTAssertEqual(torchKeys(model), expected)
        try assertPlacement(c, convolutions: 13)
    }

    /// One SGD step of each on a few synthetic samples, in plain mode (the split of these
    /// layers is tested elsewhere): a finite loss near ln 10, and the weights move.
    func testOneTrainingStepEach() throws {
        setThreads(1)
        for file in ["resnet18-cifar.yaml", "vgg16-cifar.yaml"] {
            let c = try load(file, ["data.dataset=synthetic", "data.synthetic_train=8", "data.synthetic_test=4",
                                    "data.batch_size=4", "asym.mode=plain", "train.threads=1"])
            let t = try Trainer(config: c)
            let before = t.model.parameters[0].value.array
            let start = Date()
            let (loss, _) = try t.step()
            print("\(file): one step of 4 samples, loss \(loss), \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
            XCTAssertTrue(loss.isFinite, file)
            XCTAssertGreaterThan(loss, 0.5, file)
            XCTAssertLessThan(loss, 10, file)
            XCTAssertNotEqual(t.model.parameters[0].value.array, before, file)
            XCTAssertEqual(t.position.step, 1, file)
        }
    }
}
