import AsymData
import XCTest

final class SyntheticTests: XCTestCase {
    func testDeterministicForASeedAndDifferentAcrossSeeds() throws {
        let a = try makeSynthetic(count: 50, channels: 2, height: 6, width: 5, classes: 4, seed: 7, split: .train)
        let b = try makeSynthetic(count: 50, channels: 2, height: 6, width: 5, classes: 4, seed: 7, split: .train)
        let c = try makeSynthetic(count: 50, channels: 2, height: 6, width: 5, classes: 4, seed: 8, split: .train)
        let test = try makeSynthetic(count: 50, channels: 2, height: 6, width: 5, classes: 4, seed: 7, split: .test)
        XCTAssertEqual([a.count, a.channels, a.height, a.width, a.classes], [50, 2, 6, 5, 4])
        XCTAssertEqual(a.images, b.images)
        XCTAssertEqual(a.labels, b.labels)
        XCTAssertNotEqual(a.images, c.images)
        XCTAssertNotEqual(a.images, test.images)
        XCTAssertEqual(a.labels, (0..<50).map { Int32($0 % 4) })
    }

    /// Roughly unit variance, and learnable: the train class means classify the test split.
    func testStatisticsAndLearnability() throws {
        let (classes, size) = (10, 1 * 12 * 12)
        let train = try makeSynthetic(count: 500, channels: 1, height: 12, width: 12, classes: classes, seed: 1,
                                      split: .train)
        let test = try makeSynthetic(count: 200, channels: 1, height: 12, width: 12, classes: classes, seed: 1,
                                     split: .test)
        let mean = train.images.reduce(0, +) / Float(train.images.count)
        let variance = train.images.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(train.images.count)
        XCTAssertEqual(mean, 0, accuracy: 0.1)
        XCTAssertEqual(variance, 1, accuracy: 0.25)

        var centroids = [Float](repeating: 0, count: classes * size)
        for i in 0..<train.count {
            for j in 0..<size { centroids[Int(train.labels[i]) * size + j] += train.images[i * size + j] / 50 }
        }
        var correct = 0
        for i in 0..<test.count {
            let distances = (0..<classes).map { k in
                (0..<size).reduce(Float(0)) { sum, j in
                    let d = test.images[i * size + j] - centroids[k * size + j]
                    return sum + d * d
                }
            }
            if distances.firstIndex(of: distances.min()!) == Int(test.labels[i]) { correct += 1 }
        }
        XCTAssertGreaterThan(correct, 190, "nearest class mean got \(correct)/200")
    }

    func testInvalidArguments() {
        assertDataError(["synthetic", "count 0"]) {
            try makeSynthetic(count: 0, channels: 1, height: 4, width: 4, classes: 2, seed: 0, split: .train)
        }
        assertDataError(["synthetic", "classes 0"]) {
            try makeSynthetic(count: 10, channels: 1, height: 4, width: 4, classes: 0, seed: 0, split: .train)
        }
    }
}
