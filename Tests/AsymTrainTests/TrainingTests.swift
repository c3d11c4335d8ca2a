import AsymKernels
import AsymModel
import AsymTools
import AsymTrain
import Foundation
import XCTest

final class TrainingTests: XCTestCase {
    /// After the first steps, training allocates no kernel memory: no oneDNN primitive or
    /// buffer, no scratch growth, in plain mode and in asym mode (trusted and in-process
    /// untrusted sides alike).
    func testSteadyStateStepsAllocateNoKernelMemory() throws {
        setThreads(1)
        for mode in ["plain", "asym"] {
            let t = try Trainer(config: try smokeConfig(["asym.mode=\(mode)", "asym.rank=4"]))
            for _ in 0..<2 { _ = try t.step() }
            let before = (dnnlAllocations, Scratch.growths)
            for _ in 0..<4 { _ = try t.step() }
            XCTAssertGreaterThan(before.0, 0, "\(mode): the oneDNN path ran")
            XCTAssertEqual(dnnlAllocations, before.0, "\(mode): oneDNN primitives or buffers")
            XCTAssertEqual(Scratch.growths, before.1, "\(mode): scratch growths")
        }
    }

    /// The layers share buffers by liveness (docs/DESIGN.md §10) without changing a value:
    /// steps give bit-identical parameters whether the layers share the model's arena or each
    /// owns its buffers (as before the arena), in plain and asym mode. The plan keeps exactly
    /// the outputs that a backward pass reads: an input that a plain convolution or the linear
    /// layer keeps (through in-place ReLUs and flatten, unless flatten copies a blocked map
    /// into NCHW order); a split convolution keeps U and V instead.
    func testSharedBuffersChangeNoValue() throws {
        setThreads(1)
        // smoke: conv1 relu conv2 relu maxpool conv3 relu flatten fc; asym splits conv2 and conv3.
        var kept = ["plain": [true, true, false, false, true, true, true, true, false],
                    "asym": [false, false, false, false, false, true, true, true, false]]
        for mode in ["plain", "asym"] {
            let shared = try Trainer(config: try smokeConfig(["asym.mode=\(mode)"]))
            let own = try Trainer(config: try smokeConfig(["asym.mode=\(mode)"]))
            if (shared.model.layers[7] as! FlattenLayer).block > 1 { kept[mode]![5...6] = [false, false] }
            XCTAssertEqual(shared.model.layers.map { !$0.memory!.transientOutput }, kept[mode], mode)
            for l in own.model.layers {
                l.memory = nil
                (l as? ReLULayer)?.inPlace = false
            }
            for _ in 0..<3 {
                _ = try shared.step()
                _ = try own.step()
            }
            XCTAssertEqual(modelValues(shared), modelValues(own), mode)
        }
    }

    /// Maps kept channel-blocked after plain oneDNN convolutions (`Model.planLayouts`)
    /// change no value: steps and evaluation give bit-identical results to all-NCHW maps
    /// (`ASYMML_BLOCKED=0`), with a batch that leaves a short last chunk. In asym mode the
    /// maps that split convolutions read stay NCHW (smoke splits conv2 and conv3).
    func testBlockedMapsChangeNoValue() throws {
        setThreads(1)
        defer { blockedMaps = true }
        // 16 channels: whole blocks on AVX-512 (16) and AVX2 (8); batch 20 leaves a chunk of 4.
        let overrides = ["model.layers.0.out=16", "model.layers.2.out=16", "data.batch_size=20"]
        func trainer(blocked: Bool, mode: String = "plain") throws -> Trainer {
            blockedMaps = blocked
            return try Trainer(config: try smokeConfig(overrides + ["asym.mode=\(mode)"]))
        }
        let blocked = try trainer(blocked: true), plain = try trainer(blocked: false)
        let convs = blocked.model.layers.compactMap { $0 as? Conv2dLayer }
        XCTAssertEqual(convs.map { $0.blocks.input == 1 }, [true, false, false], "conv2 and conv3 read blocked maps")
        XCTAssertEqual(convs.map { $0.blocks.output == 1 }, [false, false, false], "conv3's goes to flatten")
        XCTAssertEqual(blocked.model.layers.compactMap { ($0 as? PoolLayer)?.block }, [convs[1].blocks.output])
        XCTAssertEqual(blocked.model.layers.compactMap { ($0 as? FlattenLayer)?.block }, [convs[2].blocks.output])
        XCTAssertTrue(plain.model.layers.allSatisfy { ($0 as? Conv2dLayer)?.blocks ?? .nchw == .nchw })
        for _ in 0..<3 {
            _ = try blocked.step()
            _ = try plain.step()
        }
        XCTAssertEqual(modelValues(blocked).map(\.bitPattern), modelValues(plain).map(\.bitPattern))
        let (a, b) = (try blocked.evaluate(blocked.data.test), try plain.evaluate(plain.data.test))
        XCTAssertEqual(a.loss.bitPattern, b.loss.bitPattern)

        let asym = try trainer(blocked: true, mode: "asym")
        XCTAssertTrue(asym.model.layers.allSatisfy { ($0 as? Conv2dLayer)?.blocks ?? .nchw == .nchw })
    }

    /// A few hundred steps on the synthetic set reduce the loss and learn the task.
    func testTrainingReducesLossOnSyntheticData() throws {
        setThreads(1)
        let t = try Trainer(config: try smokeConfig(["train.epochs=10"]))
        let (first, last, before, after) = try trainAndMeasure(t, steps: 320, window: 20)
        print("synthetic: train loss \(first) -> \(last), test accuracy \(before.accuracy) -> \(after.accuracy)")
        XCTAssertLessThan(last, 0.5 * first)
        XCTAssertGreaterThan(after.accuracy, 0.9)
    }

    /// The residual network (batch norm, blocks, projection shortcut) trains too, and its whole
    /// backward pass agrees with finite differences of the loss.
    func testResidualModelGradientsMatchFiniteDifferences() throws {
        setThreads(1)
        var c = try smokeConfig()
        c.model.layers = [
            LayerSpec(name: "conv1", type: .conv, out: 4, kernel: 3, padding: 1),
            LayerSpec(name: "bn1", type: .batchnorm),
            LayerSpec(name: "relu", type: .relu),
            LayerSpec(name: "block", type: .basicBlock, out: 6, stride: 2),
            LayerSpec(name: "pool", type: .globalAvgpool),
            LayerSpec(name: "flat", type: .flatten),
            LayerSpec(name: "fc", type: .linear, out: 4),
        ]
        let t = try Trainer(config: c)
        let batch = 4
        let x = Tensor(shape: [batch] + c.model.input)
        var rng = RNG(seed: 5)
        for i in 0..<x.count { x[i] = rng.normal() }
        let labels: [Int32] = [0, 1, 2, 3]
        t.model.zeroGradients()
        t.model.trainingPass(images: x, labels: labels, batch: batch, normalizer: batch)
        func loss() -> Double {
            let logits = t.model.forward(x, batch: batch, training: true)
            return softmaxCrossEntropy(logits: logits.data, labels: labels, batch: batch, classes: 4,
                                       normalizer: batch, dLogits: nil).lossSum / Double(batch)
        }
        var worst = 0.0
        for p in t.model.parameters {
            for i in [0, p.value.count / 2, p.value.count - 1] {
                let saved = p.value[i], eps: Float = 1e-2
                p.value[i] = saved + eps; let up = loss()
                p.value[i] = saved - eps; let down = loss()
                p.value[i] = saved
                let numeric = (up - down) / Double(2 * eps)
                let err = abs(numeric - Double(p.grad[i])) / max(1, abs(numeric))
                worst = max(worst, err)
                XCTAssertLessThan(err, 2e-2, "param \(p.name)[\(i)]: numeric \(numeric), analytic \(p.grad[i])")
            }
        }
        print("resnet block gradcheck: max relative error \(worst)")
    }

    /// `data.shuffle: false` visits the training set in file order.
    func testUnshuffledOrderIsFileOrder() throws {
        let t = try Trainer(config: try smokeConfig(["data.shuffle=false"]))
        let perm = t.order.permutation(epoch: 3)
        XCTAssertEqual(Array(perm.prefix(5)), [0, 1, 2, 3, 4])
        let s = try Trainer(config: try smokeConfig())
        XCTAssertNotEqual(s.order.permutation(epoch: 0), s.order.permutation(epoch: 1))
    }
}
