import CZlib
import Foundation
import XCTest

import AsymHDF5

final class HDF5FileTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("AsymHDF5Tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(at: directory)
    }

    private func path(_ name: String) -> String {
        directory.appendingPathComponent(name).path
    }

    /// Asserts that `body` throws an `HDF5Error` whose description contains every one of `parts`.
    private func assertFails(mentioning parts: [String], file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> Void) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let error = error as? HDF5Error else {
                return XCTFail("not an HDF5Error: \(error)", file: file, line: line)
            }
            for part in parts {
                XCTAssertTrue(error.description.contains(part), "\"\(error)\" lacks \"\(part)\"",
                              file: file, line: line)
            }
        }
    }

    private static let shapes: [[Int]] = [[], [5], [2, 3], [2, 3, 4], [2, 1, 3, 2], [0, 3]]

    func testFloatDatasetsRoundTripAtEveryRank() throws {
        let filePath = path("floats.h5")
        let file = try HDF5File.create(path: filePath)
        for (index, shape) in Self.shapes.enumerated() {
            let values = (0..<shape.reduce(1, *)).map { Float($0) * 0.25 - 1 }
            try file.writeFloats("/model/rank\(index)/weight", shape: shape, values: values)
        }
        try file.close()

        let reopened = try HDF5File.open(path: filePath)
        for (index, shape) in Self.shapes.enumerated() {
            let read = try reopened.readFloats("/model/rank\(index)/weight")
            XCTAssertEqual(read.shape, shape)
            XCTAssertEqual(read.values, (0..<shape.reduce(1, *)).map { Float($0) * 0.25 - 1 })
            XCTAssertEqual(try reopened.datasetShape("/model/rank\(index)/weight"), shape)
        }
    }

    func testInt64DatasetsRoundTripAtEveryRank() throws {
        let filePath = path("ints.h5")
        let file = try HDF5File.create(path: filePath)
        for (index, shape) in Self.shapes.enumerated() {
            let values = (0..<shape.reduce(1, *)).map { Int64($0) * 1_000_000_007 - Int64.max / 2 }
            try values.withUnsafeBufferPointer { try file.writeInt64s("counts\(index)", shape: shape, values: $0) }
        }
        try file.close()

        let reopened = try HDF5File.open(path: filePath)
        for (index, shape) in Self.shapes.enumerated() {
            let read = try reopened.readInt64s("/counts\(index)")
            XCTAssertEqual(read.shape, shape)
            XCTAssertEqual(read.values, (0..<shape.reduce(1, *)).map { Int64($0) * 1_000_000_007 - Int64.max / 2 })
        }
    }

    func testAttributesRoundTripOnRootGroupAndDataset() throws {
        let filePath = path("attributes.h5")
        let file = try HDF5File.create(path: filePath)
        try file.writeFloats("/model/dense/bias", shape: [2], values: [1, 2])
        for object in ["/", "/model", "/model/dense/bias"] {
            try file.setAttribute("name", string: "résumé \(object)", at: object)
            try file.setAttribute("epoch", int64: -42, at: object)
            try file.setAttribute("lr", float: 0.125, at: object)
        }
        try file.setAttribute("epoch", int64: 7)  // replaces the root's value
        try file.setAttribute("empty", string: "")
        try file.close()

        let reopened = try HDF5File.open(path: filePath)
        for object in ["/", "/model", "/model/dense/bias"] {
            XCTAssertEqual(try reopened.stringAttribute("name", at: object), "résumé \(object)")
            XCTAssertEqual(try reopened.int64Attribute("epoch", at: object), object == "/" ? 7 : -42)
            XCTAssertEqual(try reopened.floatAttribute("lr", at: object), 0.125)
        }
        XCTAssertEqual(try reopened.stringAttribute("empty"), "")
        XCTAssertTrue(try reopened.hasAttribute("lr", at: "/model"))
        XCTAssertFalse(try reopened.hasAttribute("momentum", at: "/model"))
        assertFails(mentioning: [filePath, "/model", "no attribute 'momentum'"]) {
            _ = try reopened.floatAttribute("momentum", at: "/model")
        }
        assertFails(mentioning: [filePath, "/model", "'lr' is not int64"]) {
            _ = try reopened.int64Attribute("lr", at: "/model")
        }
        assertFails(mentioning: [filePath, "/", "'epoch' is not a variable-length string"]) {
            _ = try reopened.stringAttribute("epoch")
        }
    }

    func testStoredCrc32IsZlibsCrc32OfTheLittleEndianBytes() throws {
        let file = try HDF5File.create(path: path("crc.h5"))
        let values: [Float] = [1.5, -2, 3.25, 0]
        try file.writeFloats("/w", shape: [4], values: values)
        let expected = values.withUnsafeBytes { bytes in
            crc32_z(0, bytes.baseAddress?.assumingMemoryBound(to: Bytef.self), bytes.count)
        }
        XCTAssertEqual(try file.int64Attribute("crc32", at: "/w"), Int64(expected))
        // Spelled out: the bytes of 1.5 as little-endian IEEE 754 are 00 00 c0 3f.
        XCTAssertEqual(Array(values.withUnsafeBytes { $0 }.prefix(4)), [0x00, 0x00, 0xC0, 0x3F])
    }

    func testNavigation() throws {
        let file = try HDF5File.create(path: path("tree.h5"))
        try file.createGroups("/model/conv1")
        try file.createGroups("/model/conv1")  // already there: fine
        try file.writeFloats("/model/conv1/weight", shape: [1], values: [1])
        try file.writeInt64s("/model/step", shape: [], values: [3])

        XCTAssertEqual(try file.listChildren("/"), ["model"])
        XCTAssertEqual(try file.listChildren("/model"), ["conv1", "step"])
        XCTAssertEqual(try file.listChildren("/model/conv1"), ["weight"])
        XCTAssertEqual(try file.kind(of: "/"), .group)
        XCTAssertEqual(try file.kind(of: "/model/conv1"), .group)
        XCTAssertEqual(try file.kind(of: "/model/conv1/weight"), .dataset)
        XCTAssertTrue(try file.exists("/"))
        XCTAssertTrue(try file.exists("/model/conv1/weight"))
        XCTAssertTrue(try file.exists("model/step"))
        XCTAssertFalse(try file.exists("/model/conv2/weight"))
        XCTAssertFalse(try file.exists("/optimizer/state/m"))
        assertFails(mentioning: ["/optimizer", "no such group"]) { _ = try file.listChildren("/optimizer") }
        assertFails(mentioning: ["/model/conv1/weight", "already exists"]) {
            try file.writeFloats("/model/conv1/weight", shape: [1], values: [2])
        }
        assertFails(mentioning: ["/model/bad", "shape [2, 2] does not hold 3 values"]) {
            try file.writeFloats("/model/bad", shape: [2, 2], values: [1, 2, 3])
        }
        try file.flush()
        try file.close()
        assertFails(mentioning: ["file is closed"]) { _ = try file.exists("/") }
    }

    func testReadingTheWrongElementTypeNamesThePath() throws {
        let filePath = path("types.h5")
        let file = try HDF5File.create(path: filePath)
        try file.writeFloats("/model/w", shape: [2], values: [1, 2])
        try file.writeInt64s("/model/n", shape: [2], values: [1, 2])
        assertFails(mentioning: [filePath, "/model/w", "not int64"]) { _ = try file.readInt64s("/model/w") }
        assertFails(mentioning: [filePath, "/model/n", "not float32"]) { _ = try file.readFloats("/model/n") }
    }

    func testCorruptedDataIsRejectedByCrc32() throws {
        let filePath = path("corrupt.h5")
        let pattern = (0..<64).map { Float($0) + 0.123_456 }
        let file = try HDF5File.create(path: filePath)
        try file.writeFloats("/model/weight", shape: [8, 8], values: pattern)
        try file.close()

        var bytes = try Data(contentsOf: URL(fileURLWithPath: filePath))
        let needle = pattern.withUnsafeBytes { Data($0) }
        let found = try XCTUnwrap(bytes.range(of: needle), "data not stored contiguously")
        bytes[found.lowerBound + 100] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: filePath))

        let reopened = try HDF5File.open(path: filePath)
        XCTAssertEqual(try reopened.datasetShape("/model/weight"), [8, 8])
        assertFails(mentioning: [filePath, "/model/weight", "crc32 mismatch"]) {
            _ = try reopened.readFloats("/model/weight")
        }
    }

    func testTruncatedFileIsRejectedNamingTheFile() throws {
        let filePath = path("truncated.h5")
        let file = try HDF5File.create(path: filePath)
        try file.writeFloats("/model/weight", shape: [32, 32], values: [Float](repeating: 0.5, count: 1024))
        try file.setAttribute("note", string: "to be cut")
        try file.close()

        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: filePath))
        let size = try handle.seekToEnd()
        try handle.truncate(atOffset: size / 2)
        try handle.close()

        assertFails(mentioning: [filePath]) {
            let truncated = try HDF5File.open(path: filePath)
            _ = try truncated.readFloats("/model/weight")
        }
    }

    func testMissingFileAndMissingDatasetAreNamed() throws {
        let missing = path("absent.h5")
        assertFails(mentioning: [missing, "cannot open file"]) { _ = try HDF5File.open(path: missing) }

        let filePath = path("present.h5")
        let file = try HDF5File.create(path: filePath)
        try file.createGroups("/model")
        assertFails(mentioning: [filePath, "/model/conv1/weight", "no such dataset"]) {
            _ = try file.readFloats("/model/conv1/weight")
        }
        assertFails(mentioning: [filePath, "/model/conv1/weight", "no such dataset"]) {
            _ = try file.datasetShape("/model/conv1/weight")
        }
        assertFails(mentioning: [filePath, "/nowhere", "no such object"]) {
            try file.setAttribute("x", int64: 1, at: "/nowhere")
        }
    }

    func testH5dumpReadsTheHeader() throws {
        let h5dump = "/usr/bin/h5dump"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: h5dump), "h5dump is not installed")
        let filePath = path("dump.h5")
        let file = try HDF5File.create(path: filePath)
        try file.writeFloats("/model/conv1/weight", shape: [2, 3, 1, 1], values: [1, 2, 3, 4, 5, 6])
        try file.writeInt64s("/optimizer/step", shape: [], values: [10])
        try file.setAttribute("format", string: "asymml-checkpoint")
        try file.close()

        let process = Process()
        process.executableURL = URL(fileURLWithPath: h5dump)
        process.arguments = ["-H", filePath]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("H5T_STRING"), text)
        XCTAssertTrue(text.contains("\"crc32\""), text)
        XCTAssertTrue(text.contains("DATASPACE  SIMPLE { ( 2, 3, 1, 1 ) / ( 2, 3, 1, 1 ) }"), text)
    }
}
