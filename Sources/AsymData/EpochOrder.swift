import AsymKernels

/// The order in which training visits the samples: which sample indices make up batch `index`
/// of epoch `epoch`.
///
/// The shuffle of an epoch depends only on (seed, epoch), never on earlier epochs, so a run
/// resumed from a checkpoint recomputes the exact order from its (epoch, batch index) alone.
/// Every batch is full: the last `count % batchSize` samples of each (shuffled) epoch are
/// skipped, so all steps see the same global batch size.
package struct EpochOrder: Sendable, Equatable {
    /// Number of samples in the data set.
    package let count: Int
    /// Samples per (global) batch.
    package let batchSize: Int
    package let seed: UInt64
    /// false: every epoch visits 0, 1, 2, … in order (useful for debugging and tests).
    package let shuffle: Bool

    /// Throws `DataError.invalidArgument` if `batchSize` is not positive or larger than `count`
    /// (no full batch would fit, so an epoch would have no steps).
    package init(count: Int, batchSize: Int, seed: UInt64, shuffle: Bool) throws {
        guard batchSize > 0 else {
            throw DataError.invalidArgument("batch size must be positive, got \(batchSize)")
        }
        guard batchSize <= count else {
            throw DataError.invalidArgument(
                "batch size \(batchSize) is larger than the data set (\(count) samples), so no full batch fits; "
                    + "lower the batch size")
        }
        self.count = count
        self.batchSize = batchSize
        self.seed = seed
        self.shuffle = shuffle
    }

    /// Full batches per epoch: count / batchSize.
    package var batchesPerEpoch: Int { count / batchSize }

    /// The visiting order of epoch `epoch`: a permutation of 0..<count, the identity when
    /// `shuffle` is false. Compute it once per epoch and slice batches out with `batch`.
    package func permutation(epoch: Int) -> [Int32] {
        guard shuffle else { return (0..<Int32(count)).map { $0 } }
        // A stream of its own per epoch, tagged so it cannot coincide with streams that other
        // parts of the trainer derive from the same seed.
        let streamTag: UInt64 = 0x5348_5546 << 32  // "SHUF"
        var rng = RNG(seed: seed, stream: streamTag | UInt64(truncatingIfNeeded: epoch))
        return rng.permutation(count)
    }

    /// The sample indices of batch `index` (0..<batchesPerEpoch) of an epoch's permutation.
    package func batch(_ permutation: [Int32], index: Int) -> ArraySlice<Int32> {
        if index < 0 || index >= batchesPerEpoch {
            fatalError("batch index \(index) out of range 0..<\(batchesPerEpoch)")
        }
        return permutation[index * batchSize ..< (index + 1) * batchSize]
    }
}

/// Batches for evaluation, which must see every sample once: consecutive ranges of `batchSize`
/// indices covering 0..<count, the last one smaller when `batchSize` does not divide `count`.
/// Pass each range straight to `Dataset.gather`.
package func evaluationBatches(count: Int, batchSize: Int) throws -> [Range<Int32>] {
    guard batchSize > 0 else {
        throw DataError.invalidArgument("evaluation batch size must be positive, got \(batchSize)")
    }
    return stride(from: 0, to: count, by: batchSize).map { start in
        Int32(start) ..< Int32(min(start + batchSize, count))
    }
}
