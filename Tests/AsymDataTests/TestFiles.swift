// Helpers that write small IDX and CIFAR-10 files for the loader tests.
import AsymData
import CZlib
import Foundation
import XCTest

/// A fresh temporary directory, removed when the test ends.
func makeTemporaryDirectory(_ test: XCTestCase) throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("asymdata-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url.path
}

/// Writes `bytes` to `path`, gzip-compressed through zlib when `gzip` is true.
func writeFile(_ path: String, _ bytes: [UInt8], gzip: Bool = false) throws {
    guard gzip else {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return
    }
    guard let file = gzopen(path, "wb") else { throw CocoaError(.fileWriteUnknown) }
    let written = bytes.withUnsafeBytes { gzwrite(file, $0.baseAddress, UInt32($0.count)) }
    guard gzclose(file) == Z_OK, written == Int32(bytes.count) else { throw CocoaError(.fileWriteUnknown) }
}

/// An IDX header: magic 0x0000 08 rank, then each dimension, all big-endian.
func idxHeader(rank: UInt8, _ dims: [UInt32]) -> [UInt8] {
    var bytes: [UInt8] = [0, 0, 0x08, rank]
    for d in dims { bytes += [UInt8(d >> 24), UInt8((d >> 16) & 0xFF), UInt8((d >> 8) & 0xFF), UInt8(d & 0xFF)] }
    return bytes
}

/// Three 2x3 images whose pixels include 0 and 255, and their labels.
let idxPixels: [UInt8] = [0, 1, 2, 3, 4, 5, 255, 254, 128, 127, 7, 9, 10, 20, 30, 40, 50, 60]
let idxLabels: [UInt8] = [0, 9, 4]

/// Writes `prefix`-images/labels files (prefix "train" or "t10k") into `directory`.
func writeIDX(_ directory: String, prefix: String = "train", images: [UInt8]? = nil, labels: [UInt8]? = nil,
              gzip: Bool = true) throws {
    try writeFile("\(directory)/\(prefix)-images-idx3-ubyte.gz", images ?? idxHeader(rank: 3, [3, 2, 3]) + idxPixels,
                  gzip: gzip)
    try writeFile("\(directory)/\(prefix)-labels-idx1-ubyte.gz", labels ?? idxHeader(rank: 1, [3]) + idxLabels,
                  gzip: gzip)
}

/// `count` CIFAR-10 records: record r has label labels[r] and pixel i = (first + r * 7 + i) % 256.
func cifarRecords(labels: [UInt8], first: Int) -> [UInt8] {
    var bytes: [UInt8] = []
    for (r, label) in labels.enumerated() {
        bytes.append(label)
        bytes += (0..<3072).map { UInt8((first + r * 7 + $0) % 256) }
    }
    return bytes
}

/// Asserts that `body` throws a DataError whose description contains every string in `expected`.
func assertDataError(_ expected: [String], file: StaticString = #filePath, line: UInt = #line,
                     _ body: () throws -> Any) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        guard let error = error as? DataError else {
            return XCTFail("expected a DataError, got \(error)", file: file, line: line)
        }
        for text in expected {
            XCTAssertTrue(error.description.contains(text), "\"\(error)\" lacks \"\(text)\"", file: file, line: line)
        }
    }
}
