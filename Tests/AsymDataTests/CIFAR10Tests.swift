import AsymData
import XCTest

final class CIFAR10Tests: XCTestCase {
    func testTrainUsesExistingBatchesInOrderAndKeepsNCHW() throws {
        let directory = try makeTemporaryDirectory(self)
        // Batch 2 is missing on purpose; batch 3 is written first so order cannot come from creation time.
        try writeFile("\(directory)/data_batch_3.bin", cifarRecords(labels: [7], first: 100))
        try writeFile("\(directory)/data_batch_1.bin", cifarRecords(labels: [3, 9], first: 0))
        let normalization = Normalization(mean: [0.1, 0.2, 0.3], std: [0.5, 0.25, 2])
        let data = try loadCIFAR10(directory: directory, split: .train, normalization: normalization)
        XCTAssertEqual(data.count, 3)
        XCTAssertEqual([data.channels, data.height, data.width, data.classes], [3, 32, 32, 10])
        XCTAssertEqual(data.labels, [3, 9, 7])
        // Sample n, channel c, pixel i comes from byte 1 + c * 1024 + i of its record.
        for (n, (first, record)) in [(0, 0), (0, 1), (100, 0)].enumerated() {
            for c in 0..<3 {
                for i in [0, 1, 500, 1023] {
                    let byte = Float((first + record * 7 + c * 1024 + i) % 256)
                    let expected = (byte / 255 - normalization.mean[c]) / normalization.std[c]
                    XCTAssertEqual(data.images[(n * 3 + c) * 1024 + i], expected, "sample \(n) channel \(c) pixel \(i)")
                }
            }
        }
        // The set keeps the pixel bytes, a quarter of the floats; gather normalises a batch of them.
        guard case .bytes(let bytes, _) = data.pixels else { return XCTFail("CIFAR-10 pixels should stay bytes") }
        XCTAssertEqual(bytes.count, 3 * 3072)
        let batch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * 3072), labels = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
        defer { batch.deallocate(); labels.deallocate() }
        data.gather(indices: [Int32(2), 0], images: batch, labels: labels)
        let images = data.images
        XCTAssertEqual(Array(UnsafeBufferPointer(start: batch, count: 3072)), Array(images[(2 * 3072)..<(3 * 3072)]))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: batch + 3072, count: 3072)), Array(images[0..<3072]))
        XCTAssertEqual([labels[0], labels[1]], [7, 3])
    }

    func testTestSplitAndSingleValueNormalization() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeFile("\(directory)/test_batch.bin", cifarRecords(labels: [0, 1, 2, 3], first: 5))
        let data = try loadCIFAR10(directory: directory, split: .test,
                                   normalization: Normalization(mean: [0.5], std: [0.5]))
        XCTAssertEqual(data.labels, [0, 1, 2, 3])
        XCTAssertEqual(data.images[0], (5 / 255 - 0.5) / 0.5)
        XCTAssertEqual(data.images[3 * 3072 + 2 * 1024], (Float((5 + 21 + 2048) % 256) / 255 - 0.5) / 0.5)
    }

    func testMissingFiles() throws {
        let directory = try makeTemporaryDirectory(self)
        assertDataError(["data_batch_1.bin", "no such file", "data.path"]) {
            try loadCIFAR10(directory: directory, split: .train, normalization: nil)
        }
        assertDataError(["test_batch.bin", "no such file"]) {
            try loadCIFAR10(directory: directory, split: .test, normalization: nil)
        }
    }

    func testTruncatedFile() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeFile("\(directory)/data_batch_1.bin", cifarRecords(labels: [1, 2], first: 0))
        try writeFile("\(directory)/data_batch_2.bin", Array(cifarRecords(labels: [1, 2], first: 0).dropLast(100)))
        assertDataError(["data_batch_2.bin", "truncated", "6046 bytes", "3073-byte records"]) {
            try loadCIFAR10(directory: directory, split: .train, normalization: nil)
        }
        try writeFile("\(directory)/test_batch.bin", [])
        assertDataError(["test_batch.bin", "truncated", "empty"]) {
            try loadCIFAR10(directory: directory, split: .test, normalization: nil)
        }
    }

    func testBadLabel() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeFile("\(directory)/test_batch.bin", cifarRecords(labels: [1, 10, 2], first: 0))
        assertDataError(["test_batch.bin", "label 10 out of range 0..<10 at record 1"]) {
            try loadCIFAR10(directory: directory, split: .test, normalization: nil)
        }
    }

    func testNormalizationMustMatchChannels() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeFile("\(directory)/test_batch.bin", cifarRecords(labels: [1], first: 0))
        assertDataError([directory, "2 mean values for 3-channel images"]) {
            try loadCIFAR10(directory: directory, split: .test, normalization: Normalization(mean: [0, 0], std: [1]))
        }
        XCTAssertNoThrow(try loadCIFAR10(directory: directory, split: .test, normalization: .cifar10))
    }
}
