import AsymKernels
import AsymModel
import AsymTools
import AsymTrain
import Foundation
import XCTest

final class CheckpointTests: XCTestCase {
    /// Train 2N steps straight, and N steps + checkpoint + resume + N steps: bit-identical,
    /// in plain mode and in asym mode with a batch basis (whose warm start is saved).
    func testInterruptedAndResumedEqualsUninterrupted() throws {
        try checkResume([])
        try checkResume(["asym.mode=asym", "asym.basis=batch"])
    }

    func checkResume(_ mode: [String]) throws {
        setThreads(1)
        let c = try smokeConfig(["train.max_steps=24", "train.epochs=2", "optimizer.schedule=cosine"] + mode)
        let straight = try Trainer(config: c)
        for _ in 0..<24 { try straight.step() }

        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let first = try Trainer(config: c)
        for _ in 0..<11 { try first.step() }  // stops mid-epoch (32 steps per epoch)
        let store = CheckpointStore(folder: folder, keep: 2)
        try store.save(first, world: WorldInfo(trusted: 1, untrusted: 0, mode: .plain))
        XCTAssertEqual(store.latest(), "\(folder)/step-00000011.h5")

        let resumed = try Trainer(config: c)
        try Checkpoint.load(store.latest()!, into: resumed)
        XCTAssertEqual(resumed.position.step, 11)
        for _ in 11..<24 { try resumed.step() }
        XCTAssertEqual(modelValues(resumed), modelValues(straight), "resumed run differs from the uninterrupted one")
    }

    func testKeepLatestAndAtomicity() throws {
        setThreads(1)
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let t = try Trainer(config: try smokeConfig())
        let store = CheckpointStore(folder: folder, keep: 2)
        for _ in 0..<4 {
            try t.step()
            try store.save(t, world: WorldInfo(trusted: 1, untrusted: 0, mode: .plain))
        }
        XCTAssertEqual(store.checkpoints().map { ($0 as NSString).lastPathComponent }, ["step-00000003.h5", "step-00000004.h5"])
        XCTAssertEqual(try String(contentsOfFile: folder + "/latest", encoding: .utf8), "step-00000004.h5\n")
        // A writer killed mid-write leaves only a hidden temporary file: latest still loads.
        FileManager.default.createFile(atPath: folder + "/.step-00000005.h5.tmp-1", contents: Data(repeating: 7, count: 100))
        let other = try Trainer(config: try smokeConfig())
        try Checkpoint.load(store.latest()!, into: other)
        XCTAssertEqual(other.position.step, 4)
        // The next save clears the leftover.
        try store.save(other, world: WorldInfo(trusted: 1, untrusted: 0, mode: .plain))
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/.step-00000005.h5.tmp-1"))
    }

    func testCorruptTruncatedAndMismatchedFilesAreRejected() throws {
        setThreads(1)
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let t = try Trainer(config: try smokeConfig())
        try t.step()
        let path = try CheckpointStore(folder: folder, keep: 5).save(t, world: WorldInfo(trusted: 1, untrusted: 0, mode: .plain))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))

        // Truncated.
        let cut = folder + "/cut.h5"
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        let truncated = errorMessage { try Checkpoint.load(cut, into: try Trainer(config: try smokeConfig())) }
        XCTAssertTrue(truncated.contains("cut.h5"), truncated)

        // One weight's bytes flipped: the crc32 check catches it.
        var corrupt = bytes
        let w = t.model.parameters[0].value
        let needle = Data(bytes: w.data, count: 16)
        let at = try XCTUnwrap(corrupt.range(of: needle)).lowerBound
        corrupt[at + 2] ^= 0xFF
        let bad = folder + "/bad.h5"
        try corrupt.write(to: URL(fileURLWithPath: bad))
        let crc = errorMessage { try Checkpoint.load(bad, into: try Trainer(config: try smokeConfig())) }
        XCTAssertTrue(crc.contains("crc32"), crc)

        // A model that differs in shape.
        let other = try Trainer(config: try smokeConfig(["model.layers.0.out=6"]))
        let shape = errorMessage { try Checkpoint.load(path, into: other) }
        XCTAssertTrue(shape.contains("model differs"), shape)

        // A changed batch size cannot continue the data position.
        let batch = errorMessage { try Checkpoint.load(path, into: try Trainer(config: try smokeConfig(["data.batch_size=32"]))) }
        XCTAssertTrue(batch.contains("data.batch_size changed from 16 to 32"), batch)

        // A changed learning rate is accepted and noted.
        let notes = try Checkpoint.load(path, into: try Trainer(config: try smokeConfig(["optimizer.lr=0.01"])))
        XCTAssertEqual(notes, ["optimizer.lr changed from 0.05 to 0.01"])

        // h5dump can read the header.
        if FileManager.default.fileExists(atPath: "/usr/bin/h5dump") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/h5dump")
            p.arguments = ["-H", path]
            p.standardOutput = FileHandle.nullDevice
            try p.run(); p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
        }
    }
}
