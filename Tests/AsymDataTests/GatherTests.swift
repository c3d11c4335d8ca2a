import AsymData
import XCTest

final class GatherTests: XCTestCase {
    /// Five 2x1x2 samples; sample n holds n*10 + 0..<4, label n + 1.
    let data = Dataset(name: "toy", channels: 2, height: 1, width: 2, classes: 6,
                       images: (0..<5).flatMap { n in (0..<4).map { Float(n * 10 + $0) } },
                       labels: (0..<5).map { Int32($0 + 1) })

    func testGatherCopiesTheChosenSamples() {
        XCTAssertEqual(data.count, 5)
        XCTAssertEqual(data.sampleSize, 4)
        var images = [Float](repeating: -1, count: 3 * 4 + 1)
        var labels = [Int32](repeating: -1, count: 3 + 1)
        data.gather(indices: [Int32(4), 0, 2], images: &images, labels: &labels)
        XCTAssertEqual(images, [40, 41, 42, 43, 0, 1, 2, 3, 20, 21, 22, 23, -1])
        XCTAssertEqual(labels, [5, 1, 3, -1])
    }

    func testGatherTakesRangesAndEpochSlices() throws {
        var images = [Float](repeating: 0, count: 2 * 4)
        var labels = [Int32](repeating: 0, count: 2)
        data.gather(indices: Int32(3)..<5, images: &images, labels: &labels)
        XCTAssertEqual(images, [30, 31, 32, 33, 40, 41, 42, 43])
        XCTAssertEqual(labels, [4, 5])

        let order = try EpochOrder(count: data.count, batchSize: 2, seed: 3, shuffle: true)
        let permutation = order.permutation(epoch: 0)
        let batch = order.batch(permutation, index: 1)
        data.gather(indices: batch, images: &images, labels: &labels)
        XCTAssertEqual(labels, batch.map { $0 + 1 })
        XCTAssertEqual(images[4], Float(batch.last! * 10))
    }
}
