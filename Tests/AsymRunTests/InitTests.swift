import AsymKernels
import AsymModel
import AsymRun
import AsymTestSupport
import AsymTrain
import Foundation
import XCTest

/// `asymml train --init PATH`: a new run from a model's tensors, and the mistakes it refuses.
final class InitTests: XCTestCase {
    func testInitStartsANewRunFromTheTensors() throws {
        setThreads(1)
        let source = try trainedCheckpoint(InitFixtures.config(), steps: 5)
        let expected = try Commands.evaluate(config: try InitFixtures.config(), checkpoint: source)

        // max_steps 0: the run's step-0 checkpoint holds the loaded tensors, bit for bit, and
        // evaluates as the source does. AdamW, where the source trained with SGD: the optimizer
        // state is not read.
        let dir = InitFixtures.folder(self)
        let config = try InitFixtures.config(["train.max_steps=0", "optimizer.type=adamw", "optimizer.momentum=0"])
        try Commands.train(config: config, options: TrainOptions(runDir: dir, initFrom: source, echo: false))
        let written = dir + "/checkpoints/step-00000000.h5"
        XCTAssertEqual(try InitFixtures.modelBits(written), try InitFixtures.modelBits(source))
        let e = try Commands.evaluate(config: config, checkpoint: written)
        XCTAssertEqual(e.loss, expected.loss)
        XCTAssertEqual(e.accuracy, expected.accuracy)
        let log = try String(contentsOfFile: dir + "/train.log", encoding: .utf8)
        XCTAssertTrue(log.contains("initialized from \(source): 26 model tensors"), log)

        // Training from there: step 1 onwards in a new folder's metrics, from the loaded model.
        let next = InitFixtures.folder(self)
        try Commands.train(config: try InitFixtures.config(["train.max_steps=3", "train.log_every=1"]), options: TrainOptions(runDir: next, initFrom: source, echo: false))
        let steps = try String(contentsOfFile: next + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["loss"] != nil }.compactMap { $0["step"] as? Int }
        XCTAssertEqual(steps, [1, 2, 3])
    }

    /// Each mistake is one `asymml: error: --init PATH: ...` line and exit status 1, before any
    /// step and before anything is written to the run folder.
    func testBadInitFilesAreOneErrorLine() throws {
        setThreads(1)
        let scratch = InitFixtures.folder(self)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let text = scratch + "/notes.h5"
        try "not HDF5".write(toFile: text, atomically: true, encoding: .utf8)
        let withBias = try trainedCheckpoint(InitFixtures.config(), steps: 1)
        let noBias = try trainedCheckpoint(InitFixtures.config(["model.layers.6.bias=false"]), steps: 1)
        let wider = try trainedCheckpoint(InitFixtures.config(["model.layers.6.out=3", "data.classes=3"]), steps: 1)
        let cases: [(String, [String], String)] = [
            (scratch + "/missing.h5", [], "no such file"),
            (text, [], "cannot open it as HDF5"),
            (withBias, ["--set", "model.layers.6.bias=false"], "/model/fc/bias is not a tensor of the config's model"),
            (noBias, [], "/model/fc/bias is missing; the config's model has 26 tensors"),
            (wider, [], "/model/fc/weight has shape [3, 16], the config's model needs [4, 16]"),
        ]
        for (path, extra, why) in cases {
            let dir = scratch + "/run"
            let r = try runJob([releaseBinary, "train", "--config", InitFixtures.configFile] + InitFixtures.overrides.flatMap { ["--set", $0] }
                               + extra + ["--init", path, "--run-dir", dir])
            XCTAssertEqual(r.status, 1, r.output)
            let lines = r.output.split(separator: "\n", omittingEmptySubsequences: true)
            XCTAssertEqual(lines.count, 1, r.output)
            XCTAssertTrue(r.output.hasPrefix("asymml: error: --init \(path): \(why)"), r.output)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/metrics.jsonl"), why)
        }
        let both = try runJob([releaseBinary, "train", "--config", InitFixtures.configFile, "--init", withBias, "--resume", "auto",
                               "--run-dir", scratch + "/run"])
        XCTAssertEqual(both.status, 1)
        XCTAssertEqual(both.output, "asymml: error: --init starts a new run from a model's tensors and --resume continues a run: give one of them\n")
    }

    /// A checkpoint of `config` after `steps` steps, in a folder removed after the test.
    func trainedCheckpoint(_ config: Config, steps: Int) throws -> String {
        let dir = InitFixtures.folder(self)
        var c = config
        c.train.maxSteps = steps
        try Commands.train(config: c, options: TrainOptions(runDir: dir, echo: false))
        return dir + String(format: "/checkpoints/step-%08d.h5", steps)
    }
}

/// The model of the --init and conversion tests: the smoke job with every kind of tensor a
/// checkpoint holds (a convolution without bias, batch norm with its statistics and
/// num_batches_tracked, a basic block with a shortcut, a linear layer).
enum InitFixtures {
    static let configFile = repositoryRoot + "/configs/smoke.yaml"
    static let overrides = [
        "model.layers=[{name: conv1, type: conv, out: 8, kernel: 3, padding: 1, bias: false}, {name: bn1, type: batchnorm}, " +
        "{type: relu}, {name: layer1.0, type: basic_block, out: 16, stride: 2}, {type: global_avgpool}, {type: flatten}, {name: fc, type: linear, in: 16, out: 4}]",
        "train.threads=1",
    ]

    static func config(_ more: [String] = []) throws -> Config {
        try Config.load(path: configFile, overrides: overrides + more)
    }

    static func folder(_ test: XCTestCase) -> String {
        let path = NSTemporaryDirectory() + "asymml-init-\(UUID().uuidString)"
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Every model tensor of a checkpoint (of `config()`'s model) as bits, in model order:
    /// equal arrays mean bit-identical tensors.
    static func modelBits(_ checkpoint: String) throws -> [UInt32] {
        let t = try Trainer(config: try config())
        try Checkpoint.load(checkpoint, into: t, for: .evaluate)
        return t.model.leaves.flatMap { l in
            (l.parameters.map(\.value) + l.buffers.map(\.value)).flatMap { $0.array.map(\.bitPattern) }
                + (l.batchesTracked.map { [UInt32(truncatingIfNeeded: $0), UInt32(truncatingIfNeeded: $0 >> 32)] } ?? [])
        }
    }
}
