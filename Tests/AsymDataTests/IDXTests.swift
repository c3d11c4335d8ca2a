import AsymData
import Foundation
import XCTest

final class IDXTests: XCTestCase {
    func testLoadsGzipAndPlainFilesExactly() throws {
        for gzip in [true, false] {
            let directory = try makeTemporaryDirectory(self)
            try writeIDX(directory, gzip: gzip)
            let data = try loadIDX(directory: directory, split: .train, normalization: nil)
            XCTAssertEqual(data.count, 3)
            XCTAssertEqual([data.channels, data.height, data.width, data.classes, data.sampleSize], [1, 2, 3, 10, 6])
            XCTAssertEqual(data.labels, [0, 9, 4])
            XCTAssertEqual(data.images, idxPixels.map { Float($0) / 255 })
            XCTAssertEqual(data.images.first, 0)
            XCTAssertEqual(data.images[6], 1)
        }
    }

    func testNormalizationIsAppliedExactly() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory)
        let data = try loadIDX(directory: directory, split: .train,
                               normalization: Normalization(mean: [0.5], std: [0.25]))
        XCTAssertEqual(data.images, idxPixels.map { (Float($0) / 255 - 0.5) / 0.25 })
        XCTAssertEqual(data.images[6], 2)
    }

    func testTestSplitReadsT10kFiles() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory, prefix: "t10k", labels: idxHeader(rank: 1, [3]) + [1, 2, 3])
        let data = try loadIDX(directory: directory + "/", split: .test, normalization: nil)
        XCTAssertEqual(data.labels, [1, 2, 3])
        XCTAssertTrue(data.name.hasSuffix("/test"))
        // Only the test files exist, so the train split must report its missing file.
        assertDataError(["train-images-idx3-ubyte.gz", "no such file"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testWrongMagic() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory, images: [UInt8](repeating: 0, count: 16 + 18))
        assertDataError(["train-images-idx3-ubyte.gz", "wrong magic number 0x00000000", "0x00000803"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
        // A labels file given where the images belong.
        try writeIDX(directory, images: idxHeader(rank: 1, [3]) + idxLabels)
        assertDataError(["train-images-idx3-ubyte.gz", "0x00000801", "expected 0x00000803"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
        try writeIDX(directory, labels: idxHeader(rank: 3, [3, 2, 3]) + idxPixels)
        assertDataError(["train-labels-idx1-ubyte.gz", "expected 0x00000801"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testTruncatedImages() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory, images: idxHeader(rank: 3, [3, 2, 3]) + idxPixels.prefix(10))
        assertDataError(["train-images-idx3-ubyte.gz", "truncated", "expected 18 pixel bytes, found 10"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
        try writeIDX(directory, images: [])
        assertDataError(["train-images-idx3-ubyte.gz", "truncated", "16-byte IDX header, found 0"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testTruncatedLabels() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory, labels: idxHeader(rank: 1, [3]) + [0, 1])
        assertDataError(["train-labels-idx1-ubyte.gz", "truncated", "expected 3 label bytes, found 2"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testTruncatedGzipStream() throws {
        let directory = try makeTemporaryDirectory(self)
        let path = "\(directory)/train-images-idx3-ubyte.gz"
        // Enough varied pixels that the compressed stream is long enough to cut in half.
        let pixels = (0..<3 * 64 * 64).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
        try writeIDX(directory, images: idxHeader(rank: 3, [3, 64, 64]) + pixels)
        let compressed = try Data(contentsOf: URL(fileURLWithPath: path))
        try compressed.prefix(compressed.count / 2).write(to: URL(fileURLWithPath: path))
        assertDataError(["train-images-idx3-ubyte.gz", "truncated", "gzip stream ends early"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testUnreadableFiles() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory)
        let path = "\(directory)/train-images-idx3-ubyte.gz"
        // Damage the deflate data in the middle of the stream.
        var compressed = try Data(contentsOf: URL(fileURLWithPath: path))
        for i in 10..<compressed.count - 8 { compressed[i] = 0xFF }
        try compressed.write(to: URL(fileURLWithPath: path))
        assertDataError(["train-images-idx3-ubyte.gz: cannot read", "damaged"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        assertDataError(["train-images-idx3-ubyte.gz", "cannot read"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testTrailingBytesAndEmptyHeader() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory, images: idxHeader(rank: 3, [3, 2, 3]) + idxPixels + [1, 2])
        assertDataError(["train-images-idx3-ubyte.gz", "2 bytes follow"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
        try writeIDX(directory, images: idxHeader(rank: 3, [0, 2, 3]))
        assertDataError(["train-images-idx3-ubyte.gz", "empty data set (0 x 2 x 3)"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testCountMismatch() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory, labels: idxHeader(rank: 1, [2]) + [0, 1])
        assertDataError(["train-images-idx3-ubyte.gz has 3 images", "train-labels-idx1-ubyte.gz has 2 labels"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testLabelOutOfRange() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory, labels: idxHeader(rank: 1, [3]) + [0, 12, 3])
        assertDataError(["train-labels-idx1-ubyte.gz", "label 12 out of range 0..<10 at record 1"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
    }

    func testMissingPath() throws {
        let directory = try makeTemporaryDirectory(self) + "/nowhere"
        assertDataError(["nowhere/train-images-idx3-ubyte.gz", "no such file", "dataset-fashion-mnist", "data.path"]) {
            try loadIDX(directory: directory, split: .train, normalization: nil)
        }
        let partial = try makeTemporaryDirectory(self)
        try writeIDX(partial)
        try FileManager.default.removeItem(atPath: "\(partial)/train-labels-idx1-ubyte.gz")
        assertDataError(["train-labels-idx1-ubyte.gz", "no such file"]) {
            try loadIDX(directory: partial, split: .train, normalization: nil)
        }
    }

    func testInvalidNormalization() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeIDX(directory)
        for bad in [Normalization(mean: [0.5], std: [0]), Normalization(mean: [0.5], std: [-1]),
                    Normalization(mean: [0.5], std: [.nan]), Normalization(mean: [.infinity], std: [1]),
                    Normalization(mean: [0.5, 0.5], std: [1]), Normalization(mean: [0.5], std: [])] {
            assertDataError([directory, "invalid normalization"]) {
                try loadIDX(directory: directory, split: .train, normalization: bad)
            }
        }
    }

    /// The real data, when Debian's dataset-fashion-mnist is installed.
    func testRealFashionMNISTTestSplit() throws {
        let directory = "/usr/share/datasets/fashion-mnist"
        try XCTSkipUnless(FileManager.default.fileExists(atPath: "\(directory)/t10k-images-idx3-ubyte.gz"),
                          "Fashion-MNIST is not installed")
        let data = try loadIDX(directory: directory, split: .test, normalization: .fashionMNIST)
        XCTAssertEqual(data.count, 10000)
        XCTAssertEqual([data.channels, data.height, data.width, data.classes], [1, 28, 28, 10])
        XCTAssertEqual(data.images.count, 10000 * 784)
        XCTAssertTrue(data.labels.allSatisfy { (0..<10).contains($0) })
        // The test set is balanced: 1000 images per class.
        XCTAssertEqual(Dictionary(grouping: data.labels, by: { $0 }).mapValues(\.count),
                       Dictionary(uniqueKeysWithValues: (0..<10).map { (Int32($0), 1000) }))
        // Normalised with the train statistics, the test pixels are close to zero mean, unit std.
        let mean = data.images.reduce(0.0) { $0 + Double($1) } / Double(data.images.count)
        XCTAssertEqual(mean, 0, accuracy: 0.02)
    }
}
