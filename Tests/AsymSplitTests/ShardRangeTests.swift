import AsymKernels
import AsymSplit
import XCTest

final class ShardRangeTests: XCTestCase {
    /// Shards are contiguous, in order, cover the batch, start at multiples of the alignment
    /// (so convolutions chunk them as they chunk the whole batch), and are as balanced as
    /// whole blocks allow.
    func testShardsAreAlignedContiguousAndBalanced() {
        for alignment in [1, 2, 8, convChunkAlignment] {
            for total in 0...70 {
                for shards in 1...5 {
                    let ranges = (0..<shards).map { shardRange(total, shards: shards, index: $0, alignment: alignment) }
                    XCTAssertEqual(ranges.first!.lowerBound, 0)
                    XCTAssertEqual(ranges.last!.upperBound, total)
                    for (r, next) in zip(ranges, ranges.dropFirst()) { XCTAssertEqual(r.upperBound, next.lowerBound) }
                    for r in ranges {
                        XCTAssertEqual(r.lowerBound % alignment, 0, "total \(total) shards \(shards) alignment \(alignment): \(ranges)")
                        XCTAssertTrue(r.upperBound % alignment == 0 || r.upperBound == total)
                    }
                    let blocks = ranges.map { ($0.count + alignment - 1) / alignment }
                    XCTAssertLessThanOrEqual(blocks.max()! - blocks.min()!, 1, "total \(total) shards \(shards): \(ranges)")
                    XCTAssertEqual(blocks.reduce(0, +), (total + alignment - 1) / alignment)
                }
            }
        }
        XCTAssertEqual(convChunkAlignment, 8)
        XCTAssertEqual((0..<2).map { shardRange(64, shards: 2, index: $0) }, [0..<32, 32..<64])
        XCTAssertEqual((0..<3).map { shardRange(64, shards: 3, index: $0) }, [0..<16, 16..<40, 40..<64])
        XCTAssertEqual((0..<3).map { shardRange(70, shards: 3, index: $0) }, [0..<24, 24..<48, 48..<70])
        XCTAssertEqual((0..<3).map { shardRange(5, shards: 3, index: $0) }, [0..<0, 0..<0, 0..<5])
        // Without alignment it is the plain balanced cut.
        XCTAssertEqual((0..<3).map { shardRange(64, shards: 3, index: $0, alignment: 1) }, [0..<21, 21..<42, 42..<64])
    }
}
