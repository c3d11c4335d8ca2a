import AsymKernels

/// Random crop with zero padding, then random horizontal flip, of training samples:
/// torchvision's `RandomCrop(size, padding)` followed by `RandomHorizontalFlip(0.5)`.
///
/// A sample's draws depend only on (seed, epoch, sample index): not on the batch, the rank
/// that loads it or what ran before. So a resumed run augments exactly as an uninterrupted one,
/// and every trusted rank computes the same thing for the samples it owns.
package struct Augmentation: Sendable, Equatable {
    /// Pixels of 0 added on each side before the crop back to the input size (0: no crop).
    package let padding: Int
    package let horizontalFlip: Bool
    package let seed: UInt64

    package init(padding: Int, horizontalFlip: Bool, seed: UInt64) {
        self.padding = padding
        self.horizontalFlip = horizontalFlip
        self.seed = seed
    }

    /// Where one sample is cut from: the crop's corner in the padded image (each in
    /// 0...2 * padding), and whether the crop is then mirrored.
    package struct Placement: Equatable, Sendable {
        package var top: Int, left: Int, flip: Bool
    }

    /// The placement of sample `index` in epoch `epoch`.
    package func placement(epoch: Int, index: Int) -> Placement {
        // A stream per epoch gives the epoch a key (tagged apart from the trainer's other
        // streams); sample i draws from the key's stream i.
        let streamTag: UInt64 = 0x4155_474D << 32  // "AUGM"
        var epochRNG = RNG(seed: seed, stream: streamTag | UInt64(truncatingIfNeeded: epoch))
        var rng = RNG(seed: epochRNG.next(), stream: UInt64(truncatingIfNeeded: index))
        let span = 2 * padding + 1
        let top = rng.below(span), left = rng.below(span)
        return Placement(top: top, left: left, flip: horizontalFlip && rng.below(2) == 1)
    }
}

extension Dataset {
    /// `gather`, with sample i of the batch placed as `augmentation.placement(epoch:index: i)`
    /// says: output pixel (y, x) of a channel is source pixel (y + top - padding, x' + left -
    /// padding), x' = W - 1 - x when flipped and x otherwise, and `zeroPixel` where that falls
    /// outside the image. Allocates nothing, like `gather` (files aside: one sample's buffer).
    package func gather(indices: some Collection<Int32>, augmentation: Augmentation, epoch: Int,
                        images batchImages: UnsafeMutablePointer<Float>,
                        labels batchLabels: UnsafeMutablePointer<Int32>) {
        // Files are read whole, a sample at a time, into this buffer, then placed.
        var read: [Float] = []
        if case .files = pixels { read = [Float](repeating: 0, count: sampleSize) }
        var k = 0
        for index in indices {
            let i = Int(index)
            if i < 0 || i >= count { fatalError("\(name): sample index \(i) out of range 0..<\(count)") }
            let place = augmentation.placement(epoch: epoch, index: i)
            let out = batchImages + k * sampleSize
            switch pixels {
            case .floats(let f):
                f.withUnsafeBufferPointer { f in
                    let sample = f.baseAddress! + i * sampleSize
                    placePixels(place, padding: augmentation.padding, into: out) { c, offset in sample[offset] }
                }
            case .bytes(let b, let table):
                b.withUnsafeBufferPointer { b in
                    table.withUnsafeBufferPointer { table in
                        let sample = b.baseAddress! + i * sampleSize
                        placePixels(place, padding: augmentation.padding, into: out) { c, offset in
                            table[c * 256 + Int(sample[offset])]
                        }
                    }
                }
            case .files(let files):
                read.withUnsafeMutableBufferPointer { sample in
                    do { try files.read(i, into: sample.baseAddress!) } catch { sampleReadFailed(error) }
                    placePixels(place, padding: augmentation.padding, into: out) { c, offset in sample[offset] }
                }
            }
            batchLabels[k] = labels[i]
            k += 1
        }
    }

    /// Writes one placed sample to `out`; `value(c, offset)` is the normalised source value at
    /// `offset` within the sample (channel c's plane).
    private func placePixels(_ place: Augmentation.Placement, padding: Int, into out: UnsafeMutablePointer<Float>,
                             _ value: (Int, Int) -> Float) {
        let plane = height * width
        for c in 0..<channels {
            let blank = zeroPixel[c]
            for y in 0..<height {
                let row = out + c * plane + y * width
                let sy = y + place.top - padding
                guard sy >= 0 && sy < height else {
                    row.update(repeating: blank, count: width)
                    continue
                }
                for x in 0..<width {
                    let sx = (place.flip ? width - 1 - x : x) + place.left - padding
                    row[x] = sx >= 0 && sx < width ? value(c, c * plane + sy * width + sx) : blank
                }
            }
        }
    }
}
