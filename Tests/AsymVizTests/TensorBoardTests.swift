import AsymViz
import Foundation
import XCTest

final class TensorBoardTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "asymviz-tb-\(UUID().uuidString)"
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private let scalars: [(tag: String, step: Int64, value: Float)] = [
        ("loss/train", 0, 2.302585), ("accuracy", 0, 0.1), ("loss/train", 1, 1.5),
        ("loss/train", 100, 0.25), ("accuracy", 100, 0.9875), ("lr", 5_000_000_000, -3.5e-4),
    ]

    /// Writes `scalars` with a fresh writer and returns the event file's path.
    private func writeEvents() throws -> String {
        let writer = try TensorBoardWriter(directory: directory)
        for s in scalars {
            writer.addScalar(tag: s.tag, value: s.value, step: s.step)
        }
        writer.flush()
        return writer.path
    }

    func testCRC32C() {
        XCTAssertEqual(crc32c(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(crc32c([UInt8]()), 0)
    }

    func testFileName() throws {
        let path = try writeEvents()
        let name = (path as NSString).lastPathComponent
        XCTAssertTrue(name.hasPrefix("events.out.tfevents."), name)
        XCTAssertEqual((path as NSString).deletingLastPathComponent, directory)
        // A second writer in the same second must not overwrite the first file.
        let second = try TensorBoardWriter(directory: directory)
        XCTAssertNotEqual(second.path, path)
    }

    func testWriteReadRoundTrip() throws {
        let path = try writeEvents()
        let read = try readTensorBoardScalars(path: path)
        XCTAssertEqual(read.map(\.tag), scalars.map(\.tag))
        XCTAssertEqual(read.map(\.step), scalars.map(\.step))
        XCTAssertEqual(read.map(\.value), scalars.map(\.value))
    }

    func testReaderDetectsCorruptionAndToleratesTruncation() throws {
        let path = try writeEvents()
        let original = try XCTUnwrap(FileManager.default.contents(atPath: path))

        var corrupted = [UInt8](original)
        corrupted[corrupted.count - 6] ^= 0xFF  // inside the last record's data
        try Data(corrupted).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try readTensorBoardScalars(path: path)) { error in
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }

        // A writer still running may leave half a record at the end.
        try Data(original.dropLast(3)).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(try readTensorBoardScalars(path: path).count, scalars.count - 1)
    }

    /// Cross-checks the format with TensorBoard's own reader, when installed.
    func testTensorBoardReadsEvents() throws {
        guard (try? runPython(["-c", "import tensorboard"]))?.status == 0 else {
            throw XCTSkip("python3 with the tensorboard package is not available")
        }
        _ = try writeEvents()
        let script = """
            import json, sys
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
            ea = EventAccumulator(sys.argv[1])
            ea.Reload()
            print(json.dumps({tag: [[e.step, e.value] for e in ea.Scalars(tag)]
                              for tag in ea.Tags()["scalars"]}))
            """
        let result = try runPython(["-c", script, directory])
        XCTAssertEqual(result.status, 0)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: result.stdout) as? [String: [[Double]]])
        XCTAssertEqual(Set(json.keys), Set(scalars.map(\.tag)))
        for (tag, events) in json {
            let expected = scalars.filter { $0.tag == tag }
            XCTAssertEqual(events.map { Int64($0[0]) }, expected.map(\.step), tag)
            // Compared as Float: the values are float32 and JSON parsing may be off in the last double bit.
            XCTAssertEqual(events.map { Float($0[1]) }, expected.map(\.value), tag)
        }
    }

    private func runPython(_ arguments: [String]) throws -> (status: Int32, stdout: Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, stdout)
    }
}
