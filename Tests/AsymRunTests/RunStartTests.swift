import AsymKernels
import AsymModel
import AsymRun
import AsymTestSupport
import AsymTrain
import Foundation
import XCTest

/// Nothing a user does loses their work: a run folder is never clobbered, a refused resume
/// writes nothing, `--resume auto` steps past a damaged checkpoint, a resumed run's metrics
/// hold each step once, and `inspect` verifies every checksum.
final class RunStartTests: XCTestCase {
    func smoke(_ overrides: [String] = []) throws -> Config {
        try Config.load(path: repositoryRoot + "/configs/smoke.yaml", overrides: ["train.max_steps=12", "train.checkpoint_every=4"] + overrides)
    }

    func folder() -> String {
        let path = NSTemporaryDirectory() + "asymml-run-\(UUID().uuidString)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func train(_ config: Config, _ dir: String, resume: String? = nil, force: Bool = false) throws -> Evaluation? {
        try Commands.train(config: config, options: TrainOptions(runDir: dir, resume: resume, echo: false, force: force))
    }

    func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        XCTFail("expected an error")
        return ""
    }

    func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    func testRerunIsRefusedUnlessResumedOrForced() throws {
        setThreads(1)
        let dir = folder()
        try train(try smoke(), dir)
        let config = read(dir + "/config.yaml"), metrics = read(dir + "/metrics.jsonl")
        let checkpoint = try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoints/step-00000012.h5"))
        let refused = message { _ = try self.train(try self.smoke(["optimizer.lr=0.01"]), dir) }
        XCTAssertTrue(refused.hasPrefix("run folder \(dir) holds an earlier run"), refused)
        XCTAssertTrue(refused.contains("--resume auto") && refused.contains("--force"), refused)
        // Nothing was touched.
        XCTAssertEqual(read(dir + "/config.yaml"), config)
        XCTAssertEqual(read(dir + "/metrics.jsonl"), metrics)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoints/step-00000012.h5")), checkpoint)
        // --force starts over: the old checkpoints and metrics are gone, the new config is saved.
        try train(try smoke(["optimizer.lr=0.01", "train.max_steps=6"]), dir, force: true)
        XCTAssertTrue(read(dir + "/config.yaml").contains("lr: 0.01"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/checkpoints/step-00000012.h5"))
        XCTAssertEqual(CheckpointStore(folder: dir + "/checkpoints", keep: 3).checkpoints().map { ($0 as NSString).lastPathComponent },
                       ["step-00000004.h5", "step-00000006.h5"])
        XCTAssertTrue(message { _ = try self.train(try self.smoke(), dir, resume: "auto", force: true) }.contains("give one of them"))
    }

    func testRefusedResumeLeavesTheFolderUntouched() throws {
        setThreads(1)
        let dir = folder()
        try train(try smoke(), dir)
        let before = try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map { ($0, read(dir + "/" + $0)) }
        let refused = message { _ = try self.train(try self.smoke(["data.batch_size=8", "train.threads=2"]), dir, resume: "auto") }
        XCTAssertTrue(refused.contains("data.batch_size changed from 16 to 8"), refused)
        let after = try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map { ($0, read(dir + "/" + $0)) }
        XCTAssertEqual(after.map(\.0), before.map(\.0))
        for (a, b) in zip(after, before) { XCTAssertEqual(a.1, b.1, a.0) }
    }

    /// A truncated latest checkpoint is skipped for the newest one that verifies, the run says
    /// so, ends where an uninterrupted run ends, and metrics.jsonl holds every step once.
    func testResumeAutoStepsPastATruncatedCheckpoint() throws {
        setThreads(1)
        let dir = folder(), reference = folder()
        try train(try smoke(), dir)
        let latest = dir + "/checkpoints/step-00000012.h5"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: latest))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: latest))
        try train(try smoke(["train.max_steps=16"]), dir, resume: "auto")
        let log = read(dir + "/train.log")
        XCTAssertTrue(log.contains("resume auto: skipped checkpoint \(latest)"), log)
        XCTAssertTrue(log.contains("resumed from \(dir)/checkpoints/step-00000008.h5 at step 8"), log)
        try train(try smoke(["train.max_steps=16"]), reference)
        let a = try Checkpoint.verify(dir + "/checkpoints/step-00000016.h5"), b = try Checkpoint.verify(reference + "/checkpoints/step-00000016.h5")
        XCTAssertEqual(a.map(\.crc32), b.map(\.crc32), "the resumed run ends bit for bit where the uninterrupted one does")
        let steps = read(dir + "/metrics.jsonl").split(separator: "\n").compactMap { line -> String? in
            guard let r = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return "\(r["step"]!) \(r["test_accuracy"] == nil ? "train" : "eval")"
        }
        let order = steps.map { Int($0.split(separator: " ")[0])! }
        XCTAssertEqual(order, order.sorted(), "records in step order: \(steps)")
        XCTAssertEqual(Set(steps).count, steps.count, "\(steps)")
    }

    /// `inspect` verifies every dataset: a flipped byte gives the listing, then one error
    /// naming the dataset and both checksums in decimal (as `evaluate` reports it).
    func testInspectVerifiesEveryChecksum() throws {
        setThreads(1)
        let dir = folder()
        try train(try smoke(["train.max_steps=4"]), dir)
        let path = dir + "/checkpoints/step-00000004.h5"
        let good = try Commands.inspect(path: path)
        XCTAssertTrue(good.contains("crc32 ") && good.contains(" ok") && !good.contains("MISMATCH"), good)
        let t = try Trainer(config: try smoke())
        try Checkpoint.load(path, into: t)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let w = t.model.parameters[0].value
        let at = try XCTUnwrap(bytes.range(of: Data(bytes: w.data, count: 16))).lowerBound
        bytes[at + 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        do {
            _ = try Commands.inspect(path: path)
            XCTFail("a flipped byte passed inspect")
        } catch let e as InspectionFailed {
            XCTAssertTrue(e.listing.contains("MISMATCH"), e.listing)
            XCTAssertTrue(e.description.contains("crc32 mismatch: stored") && e.description.contains("computed"), e.description)
            let evaluate = message { _ = try Commands.evaluate(config: try self.smoke(), checkpoint: path) }
            let detail = { (s: String) in s.components(separatedBy: "crc32 mismatch: ").last ?? "" }
            XCTAssertEqual(detail(e.description).prefix(30), detail(evaluate).prefix(30), "inspect and evaluate report it alike")
        }
    }

    /// `evaluate` without --config reads the config stored in the checkpoint.
    func testEvaluateReadsTheStoredConfig() throws {
        setThreads(1)
        let dir = folder()
        let last = try XCTUnwrap(try train(try smoke(["train.max_steps=4"]), dir))
        let path = dir + "/checkpoints/step-00000004.h5"
        let e = try Commands.evaluate(config: try Commands.storedConfig(path, overrides: []), checkpoint: path)
        XCTAssertEqual(e.accuracy, last.accuracy)
        XCTAssertEqual(e.loss, last.loss, accuracy: 1e-12)
    }
}
