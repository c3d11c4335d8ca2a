/// Which half of a data set to load: the training images or the held-out test images.
package enum Split: String, Sendable, CaseIterable {
    case train
    case test
}

/// A labelled image data set held entirely in memory, ready for training.
///
/// Images are float32 in NCHW order (sample, channel, row, column) and already normalised,
/// so a training step only copies a batch out with `gather` and never converts pixels.
/// Every set this trainer uses (Fashion-MNIST: 188 MB as floats, CIFAR-10: 614 MB) fits in memory.
package struct Dataset: Sendable {
    /// A short name for logs, e.g. "fashion-mnist/train".
    package let name: String
    /// Number of samples.
    package let count: Int
    package let channels: Int
    package let height: Int
    package let width: Int
    /// Number of classes; every label is in 0..<classes.
    package let classes: Int
    /// count * channels * height * width normalised pixels, NCHW.
    package let images: [Float]
    /// count class indices.
    package let labels: [Int32]

    /// Floats per sample: channels * height * width.
    package var sampleSize: Int { channels * height * width }

    /// Wraps images and labels that are already normalised and in NCHW order; `count` is
    /// `labels.count`. The loaders below validate their files; this checks only the shapes.
    package init(name: String, channels: Int, height: Int, width: Int, classes: Int,
                images: [Float], labels: [Int32]) {
        // fatalError, not precondition: this module builds with -Ounchecked, which drops preconditions.
        guard channels > 0, height > 0, width > 0, classes > 0,
              images.count == labels.count * channels * height * width else {
            fatalError("Dataset \(name): \(images.count) floats do not hold \(labels.count) samples of "
                       + "\(channels)x\(height)x\(width)")
        }
        self.name = name
        self.count = labels.count
        self.channels = channels
        self.height = height
        self.width = width
        self.classes = classes
        self.images = images
        self.labels = labels
    }

    /// Copies the samples at `indices` into caller-owned buffers: sample k of the batch goes to
    /// `images + k * sampleSize` and `labels[k]`. The buffers must hold `indices.count` samples.
    ///
    /// Called every training step, so it allocates nothing. Ranges (`0..<64`), arrays and the
    /// slices `EpochOrder.batch` returns all work as `indices`.
    package func gather(indices: some Collection<Int32>,
                       images batchImages: UnsafeMutablePointer<Float>,
                       labels batchLabels: UnsafeMutablePointer<Int32>) {
        let n = sampleSize
        images.withUnsafeBufferPointer { source in
            labels.withUnsafeBufferPointer { sourceLabels in
                var k = 0
                for index in indices {
                    let i = Int(index)
                    // Checked even under -Ounchecked: a bad index would otherwise read stray memory
                    // silently, and one comparison is nothing next to copying a whole sample.
                    if i < 0 || i >= count { fatalError("\(name): sample index \(i) out of range 0..<\(count)") }
                    (batchImages + k * n).update(from: source.baseAddress! + i * n, count: n)
                    batchLabels[k] = sourceLabels[i]
                    k += 1
                }
            }
        }
    }
}

/// How raw 8-bit pixels become floats: (pixel / 255 - mean) / std, computed in Float.
///
/// `mean` and `std` hold either one value, used for every channel, or one value per channel.
/// Loaders check them against the data's channel count and throw `DataError.invalidNormalization`
/// when a count is wrong or a std is not positive. Passing `nil` to a loader means pixel / 255.
package struct Normalization: Sendable, Equatable {
    package var mean: [Float]
    package var std: [Float]

    package init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }

    /// Mean and std of the Fashion-MNIST training pixels (after / 255).
    package static let fashionMNIST = Normalization(mean: [0.2860], std: [0.3530])
    /// Per-channel (R, G, B) mean and std of the CIFAR-10 training pixels (after / 255).
    package static let cifar10 = Normalization(mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616])
}

/// The float for every possible byte, per channel: table[c * 256 + p] = (p / 255 - mean[c]) / std[c].
///
/// Converting through a 256-entry table gives exactly the documented formula for every pixel
/// and is faster than the arithmetic. Validates `normalization` for `channels` channels;
/// `dataset` names the data in the error.
func pixelTable(_ normalization: Normalization?, channels: Int, dataset: String) throws -> [Float] {
    var mean = [Float](repeating: 0, count: channels)
    var std = [Float](repeating: 1, count: channels)
    if let normalization {
        for (field, values) in [("mean", normalization.mean), ("std", normalization.std)] {
            guard values.count == 1 || values.count == channels else {
                throw DataError.invalidNormalization(
                    dataset: dataset,
                    reason: "\(values.count) \(field) values for \(channels)-channel images; give "
                        + (channels == 1 ? "exactly 1" : "1 (all channels) or \(channels) (one per channel)"))
            }
        }
        for c in 0..<channels {
            mean[c] = normalization.mean.count == 1 ? normalization.mean[0] : normalization.mean[c]
            std[c] = normalization.std.count == 1 ? normalization.std[0] : normalization.std[c]
            guard mean[c].isFinite else {
                throw DataError.invalidNormalization(dataset: dataset, reason: "mean \(mean[c]) is not a finite number")
            }
            guard std[c].isFinite && std[c] > 0 else {
                throw DataError.invalidNormalization(dataset: dataset,
                                                     reason: "std \(std[c]) must be a positive number")
            }
        }
    }
    var table = [Float](repeating: 0, count: channels * 256)
    for c in 0..<channels {
        for p in 0..<256 {
            table[c * 256 + p] = (Float(p) / 255 - mean[c]) / std[c]
        }
    }
    return table
}

/// Converts `count` bytes through a 256-entry table (one channel of `pixelTable`).
func convertPixels(_ bytes: UnsafePointer<UInt8>, count: Int, table: UnsafePointer<Float>,
                   into out: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        out[i] = table[Int(bytes[i])]
    }
}
