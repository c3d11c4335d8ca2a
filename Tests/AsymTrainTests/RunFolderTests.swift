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

    func testPlotOfAFolderWithoutMetricsSaysSo() {
        let message = errorMessage { try Pictures.plot(runDir: "/nonexistent-run", out: "/tmp/x") }
        XCTAssertTrue(message.contains("is this a run folder"), message)
    }
}
