/// Which half of a data set to load: the training images or the held-out test images.
package enum Split: String, Sendable, CaseIterable {
    case train
    case test
}

/// A labelled image data set, ready for training: held in memory, or read from its files a
/// batch at a time (`Pixels.files`).
///
/// Samples are in NCHW order (sample, channel, row, column). Sets whose source is 8-bit
/// pixels (Fashion-MNIST, CIFAR-10) keep the bytes, a quarter of the floats' memory
/// (Fashion-MNIST: 47 MB instead of 188, CIFAR-10: 154 instead of 614), and `gather`
/// normalises each batch through a 256-entry table per channel: the same floats as
/// converting the whole set up front. Other sets (synthetic, captured tensors) are floats.
/// Sets that may not fit in memory (.npz stored members, image folders) stay in their files:
/// only the labels are loaded, and `gather` reads and normalises each sample it is asked for.
package struct Dataset: Sendable {
    /// The samples' values: normalised floats, pixel bytes with `pixelTable`'s table
    /// (256 floats per channel) that normalises them, or files read sample by sample.
    package enum Pixels: Sendable {
        case floats([Float])
        case bytes([UInt8], table: [Float])
        case files(any SampleFiles)
    }

    /// A short name for logs, e.g. "fashion-mnist/train".
    package let name: String
    /// Number of samples.
    package let count: Int
    package let channels: Int
    package let height: Int
    package let width: Int
    /// Number of classes; every label is in 0..<classes.
    package let classes: Int
    /// count * channels * height * width values, NCHW.
    package let pixels: Pixels
    /// count class indices.
    package let labels: [Int32]
    /// Per channel, the value of a pixel of 0 (black) once normalised: what the padding of
    /// `Augmentation` fills with.
    package let zeroPixel: [Float]

    /// Floats per sample: channels * height * width.
    package var sampleSize: Int { channels * height * width }

    /// Wraps images and labels that are already normalised and in NCHW order; `count` is
    /// `labels.count`. The loaders below validate their files; this checks only the shapes.
    package init(name: String, channels: Int, height: Int, width: Int, classes: Int,
                images: [Float], labels: [Int32]) {
        self.init(name: name, channels: channels, height: height, width: width, classes: classes,
                  pixels: .floats(images), labels: labels)
    }

    /// Wraps values and labels in NCHW order; `count` is `labels.count`. `zeroPixel` is for
    /// floats and files (nil: 0 in every channel); pixel bytes take it from their table.
    package init(name: String, channels: Int, height: Int, width: Int, classes: Int,
                pixels: Pixels, labels: [Int32], zeroPixel: [Float]? = nil) {
        let values: Int
        switch pixels {
        case .floats(let f):
            values = f.count
            self.zeroPixel = zeroPixel ?? [Float](repeating: 0, count: channels)
        case .bytes(let b, let table):
            values = b.count
            if table.count != channels * 256 { fatalError("Dataset \(name): \(table.count) table entries for \(channels) channels") }
            self.zeroPixel = (0..<channels).map { table[$0 * 256] }
        case .files:
            values = labels.count * channels * height * width
            self.zeroPixel = zeroPixel ?? [Float](repeating: 0, count: channels)
        }
        if self.zeroPixel.count != channels { fatalError("Dataset \(name): \(self.zeroPixel.count) zero-pixel values for \(channels) channels") }
        // fatalError, not precondition: this module builds with -Ounchecked, which drops preconditions.
        guard channels > 0, height > 0, width > 0, classes > 0,
              values == labels.count * channels * height * width else {
            fatalError("Dataset \(name): \(values) values do not hold \(labels.count) samples of "
                       + "\(channels)x\(height)x\(width)")
        }
        self.name = name
        self.count = labels.count
        self.channels = channels
        self.height = height
        self.width = width
        self.classes = classes
        self.pixels = pixels
        self.labels = labels
    }

    /// Every sample's normalised values, NCHW: a copy for pixel bytes and files (tests, small
    /// sets; training reads samples through `gather`).
    package var images: [Float] {
        if case .floats(let f) = pixels { return f }
        var out = [Float](repeating: 0, count: count * sampleSize)
        var labels = [Int32](repeating: 0, count: count)
        gather(indices: Int32(0)..<Int32(count), images: &out, labels: &labels)
        return out
    }

    /// The first `n` samples.
    package func prefix(_ n: Int) -> Dataset {
        let values = n * sampleSize
        let kept: Pixels
        switch pixels {
        case .floats(let f): kept = .floats(Array(f.prefix(values)))
        case .bytes(let b, let table): kept = .bytes(Array(b.prefix(values)), table: table)
        case .files: kept = pixels
        }
        return Dataset(name: "\(name)[0..<\(n)]", channels: channels, height: height, width: width, classes: classes,
                       pixels: kept, labels: Array(labels.prefix(n)), zeroPixel: zeroPixel)
    }

    /// Copies the samples at `indices` into caller-owned buffers: sample k of the batch goes to
    /// `images + k * sampleSize` and `labels[k]`. The buffers must hold `indices.count` samples.
    ///
    /// Called every training step, so it allocates nothing (files aside, which read each sample
    /// as it comes). Ranges (`0..<64`), arrays and the slices `EpochOrder.batch` returns all
    /// work as `indices`. A sample of `files` that cannot be read ends the process with one
    /// line naming the file (`sampleReadFailed`).
    package func gather(indices: some Collection<Int32>,
                       images batchImages: UnsafeMutablePointer<Float>,
                       labels batchLabels: UnsafeMutablePointer<Int32>) {
        let n = sampleSize, plane = height * width
        var k = 0
        for index in indices {
            let i = Int(index)
            // Checked even under -Ounchecked: a bad index would otherwise read stray memory
            // silently, and one comparison is nothing next to copying a whole sample.
            if i < 0 || i >= count { fatalError("\(name): sample index \(i) out of range 0..<\(count)") }
            let out = batchImages + k * n
            switch pixels {
            case .floats(let f):
                f.withUnsafeBufferPointer { out.update(from: $0.baseAddress! + i * n, count: n) }
            case .bytes(let b, let table):
                b.withUnsafeBufferPointer { b in
                    table.withUnsafeBufferPointer { table in
                        for c in 0..<channels {
                            convertPixels(b.baseAddress! + i * n + c * plane, count: plane, table: table.baseAddress! + c * 256,
                                          into: out + c * plane)
                        }
                    }
                }
            case .files(let files):
                do { try files.read(i, into: out) } catch { sampleReadFailed(error) }
            }
            batchLabels[k] = labels[i]
            k += 1
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
    let (mean, std) = try normalizationPerChannel(normalization, channels: channels, dataset: dataset)
    var table = [Float](repeating: 0, count: channels * 256)
    for c in 0..<channels {
        for p in 0..<256 {
            table[c * 256 + p] = (Float(p) / 255 - mean[c]) / std[c]
        }
    }
    return table
}

/// `normalization`'s mean and std for each of `channels` channels (0 and 1 without one),
/// validated as `pixelTable` says.
func normalizationPerChannel(_ normalization: Normalization?, channels: Int, dataset: String) throws -> (mean: [Float], std: [Float]) {
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
    return (mean, std)
}

/// Converts `count` bytes through a 256-entry table (one channel of `pixelTable`).
func convertPixels(_ bytes: UnsafePointer<UInt8>, count: Int, table: UnsafePointer<Float>,
                   into out: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        out[i] = table[Int(bytes[i])]
    }
}
