import AsymKernels
import AsymModel
import AsymTools
import AsymTrain
import AsymRun
import AsymViz
import Foundation
import XCTest

final class RunFolderTests: XCTestCase {
    /// A real asym run writes the contract's files: config.yaml, metrics.jsonl (read back),
    /// TensorBoard events with the same numbers, a final checkpoint; plot writes PNGs.
    func testRunFolderMetricsEventsAndPlots() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try smokeConfig(["asym.mode=asym", "train.epochs=2"])
        try Commands.train(config: config, options: TrainOptions(runDir: dir, echo: false))
        XCTAssertEqual(try Config.load(path: dir + "/config.yaml"), config)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/checkpoints/step-00000064.h5"))

        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let records = try lines.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        let training = records.filter { $0["loss"] != nil }, evaluation = records.filter { $0["test_accuracy"] != nil }
        XCTAssertEqual(training.count, 8)
        XCTAssertEqual(evaluation.count, 2)
        for r in training {
            for key in ["step", "epoch", "loss", "lr", "samples_per_s", "trusted_s", "untrusted_s", "bytes_to_untrusted", "residual_energy"] {
                XCTAssertNotNil(r[key], "training line lacks \(key)")
            }
            let energy = try XCTUnwrap(r["residual_energy"] as? [String: Double])
            XCTAssertEqual(Set(energy.keys), ["conv2", "conv3"])
        }
        for r in evaluation { for key in ["step", "epoch", "test_loss", "test_accuracy"] { XCTAssertNotNil(r[key]) } }

        // The event file holds the same scalars.
        let events = try FileManager.default.contentsOfDirectory(atPath: dir + "/tensorboard")
        XCTAssertEqual(events.count, 1)
        let scalars = try readTensorBoardScalars(path: dir + "/tensorboard/" + events[0])
        let lastLoss = try XCTUnwrap(training.last?["loss"] as? Double)
        let loss = scalars.filter { $0.tag == "loss" }
        XCTAssertEqual(loss.count, 8)
        XCTAssertEqual(Double(loss.last!.value), lastLoss, accuracy: 1e-5 * max(1, lastLoss))
        XCTAssertEqual(loss.last!.step, 64)
        XCTAssertTrue(scalars.contains { $0.tag == "residual_energy/conv2" })
        XCTAssertTrue(scalars.contains { $0.tag == "test_accuracy" && $0.step == 64 })

        // Plots: valid PNG files of the chart size.
        let pngs = try Pictures.plot(runDir: dir, out: dir + "/plots")
        XCTAssertEqual(pngs.map { ($0 as NSString).lastPathComponent }, ["loss.png", "accuracy.png", "residual_energy.png"])
        for p in pngs {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: p)))
            XCTAssertEqual(Array(bytes.prefix(8)), [137, 80, 78, 71, 13, 10, 26, 10])
            let width = bytes[16..<20].reduce(0) { $0 << 8 | Int($1) }, height = bytes[20..<24].reduce(0) { $0 << 8 | Int($1) }
            XCTAssertEqual([width, height], [640, 400])
        }
        let picture = try Pictures.privacy(config: config, checkpoint: dir + "/checkpoints/step-00000064.h5", out: dir)
        XCTAssertTrue(FileManager.default.fileExists(atPath: picture))
    }

    /// With train.eval_every, every evaluation is a record, and the plot reads each one at its step.
    func testPlotReadsEveryEvaluation() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try smokeConfig(["train.epochs=2", "train.eval_every=4"])
        try Commands.train(config: config, options: TrainOptions(runDir: dir, echo: false))
        let m = try Pictures.readMetrics(dir + "/metrics.jsonl")
        let evaluations = Array(stride(from: 4.0, through: 64, by: 4))
        XCTAssertEqual(m["test_accuracy"]?.map(\.0), evaluations)
        XCTAssertEqual(m["test_loss"]?.map(\.0), evaluations)
        XCTAssertTrue(m["test_accuracy"]!.allSatisfy { (0...1).contains($0.1) }, "accuracy is stored as a fraction")
        let pngs = try Pictures.plot(runDir: dir, out: dir + "/plots")
        XCTAssertEqual(pngs.map { ($0 as NSString).lastPathComponent }, ["loss.png", "accuracy.png"])
    }

    /// Steps a file repeats (a resume into a folder whose records went past the checkpoint)
    /// read as the run last went: in step order, once each.
    func testReadMetricsKeepsTheLastPassOverRepeatedSteps() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let lines = [
            #"{"step": 8, "loss": 1.0}"#, #"{"step": 8, "test_loss": 1.1, "test_accuracy": 0.5}"#,
            #"{"step": 16, "loss": 0.8}"#, #"{"step": 16, "test_loss": 0.9, "test_accuracy": 0.6}"#,
            #"{"step": 24, "loss": 0.7}"#,
            // Resumed from the checkpoint of step 8.
            #"{"step": 16, "loss": 0.75}"#, #"{"step": 16, "test_loss": 0.85, "test_accuracy": 0.65}"#,
            #"{"step": 24, "loss": 0.6}"#, #"{"step": 24, "test_loss": 0.7, "test_accuracy": 0.7}"#,
        ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/metrics.jsonl", atomically: true, encoding: .utf8)
        let m = try Pictures.readMetrics(dir + "/metrics.jsonl")
        XCTAssertEqual(m["loss"]?.map(\.0), [8, 16, 24])
        XCTAssertEqual(m["loss"]?.map(\.1), [1.0, 0.75, 0.6])
        XCTAssertEqual(m["test_accuracy"]?.map(\.0), [8, 16, 24])
        XCTAssertEqual(m["test_accuracy"]?.map(\.1), [0.5, 0.65, 0.7])
    }

    /// A run with one evaluation, or none yet, still gets its charts (the accuracy chart
    /// then says there is no evaluation).
    func testPlotWithOneEvaluationOrNone() throws {
        let dir = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let training = (1...4).map { #"{"step": \#($0 * 8), "loss": \#(1.0 / Double($0))}"# }
        for extra in [[], [#"{"step": 32, "test_loss": 0.3, "test_accuracy": 0.875}"#]] {
            try ((training + extra).joined(separator: "\n") + "\n").write(toFile: dir + "/metrics.jsonl", atomically: true, encoding: .utf8)
            let pngs = try Pictures.plot(runDir: dir, out: dir + "/plots")
            XCTAssertEqual(pngs.map { ($0 as NSString).lastPathComponent }, ["loss.png", "accuracy.png"])
            for p in pngs { XCTAssertGreaterThan(try Data(contentsOf: URL(fileURLWithPath: p)).count, 100) }
        }
    }

    func testPlotOfAFolderWithoutMetricsSaysSo() {
        let message = errorMessage { try Pictures.plot(runDir: "/nonexistent-run", out: "/tmp/x") }
        XCTAssertTrue(message.contains("is this a run folder"), message)
    }
}
