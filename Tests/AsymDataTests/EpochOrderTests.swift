import AsymData
import XCTest

final class EpochOrderTests: XCTestCase {
    func testShuffledPermutations() throws {
        let order = try EpochOrder(count: 100, batchSize: 32, seed: 42, shuffle: true)
        XCTAssertEqual(order.batchesPerEpoch, 3)
        let epoch0 = order.permutation(epoch: 0)
        let epoch1 = order.permutation(epoch: 1)
        XCTAssertEqual(epoch0.sorted(), Array(0..<100))
        XCTAssertEqual(epoch1.sorted(), Array(0..<100))
        XCTAssertNotEqual(epoch0, epoch1)
        XCTAssertNotEqual(epoch0, Array(0..<100))
        // Recomputable from (seed, epoch) alone, in any order, by a fresh instance (a resumed run).
        let resumed = try EpochOrder(count: 100, batchSize: 32, seed: 42, shuffle: true)
        XCTAssertEqual(resumed.permutation(epoch: 1), epoch1)
        XCTAssertEqual(resumed.permutation(epoch: 0), epoch0)
        let otherSeed = try EpochOrder(count: 100, batchSize: 32, seed: 43, shuffle: true)
        XCTAssertNotEqual(otherSeed.permutation(epoch: 0), epoch0)
    }

    func testBatchesAreFullAndDropTheRemainder() throws {
        let order = try EpochOrder(count: 10, batchSize: 3, seed: 1, shuffle: true)
        let permutation = order.permutation(epoch: 5)
        let batches = (0..<order.batchesPerEpoch).map { order.batch(permutation, index: $0) }
        XCTAssertEqual(batches.map(\.count), [3, 3, 3])
        XCTAssertEqual(batches.flatMap { $0 }, Array(permutation.prefix(9)))
    }

    func testIdentityWithoutShuffle() throws {
        let order = try EpochOrder(count: 7, batchSize: 2, seed: 9, shuffle: false)
        XCTAssertEqual(order.permutation(epoch: 0), Array(0..<7))
        XCTAssertEqual(order.permutation(epoch: 3), Array(0..<7))
        XCTAssertEqual(Array(order.batch(order.permutation(epoch: 3), index: 2)), [4, 5])
    }

    func testInvalidBatchSize() {
        assertDataError(["batch size must be positive, got 0"]) {
            try EpochOrder(count: 10, batchSize: 0, seed: 0, shuffle: true)
        }
        assertDataError(["batch size 11", "10 samples"]) {
            try EpochOrder(count: 10, batchSize: 11, seed: 0, shuffle: true)
        }
        assertDataError(["evaluation batch size"]) { try evaluationBatches(count: 10, batchSize: 0) }
    }

    func testEvaluationBatchesCoverEverySample() throws {
        XCTAssertEqual(try evaluationBatches(count: 10, batchSize: 4), [0..<4, 4..<8, 8..<10])
        XCTAssertEqual(try evaluationBatches(count: 8, batchSize: 4), [0..<4, 4..<8])
        XCTAssertEqual(try evaluationBatches(count: 3, batchSize: 8), [0..<3])
        XCTAssertEqual(try evaluationBatches(count: 0, batchSize: 8), [])
    }
}
