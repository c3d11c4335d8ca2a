import AsymKernels
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Makes a learnable synthetic data set, the same for the same arguments on every run.
///
/// Each class has a fixed prototype image: per channel, the sum of three random plane waves
/// (a random whole number of cycles across the image, random direction and phase), so classes
/// differ both pixel by pixel and in local texture, which a CNN picks up within a few hundred
/// steps even after global pooling. A sample is 0.8 * its class prototype + 0.6 * Gaussian
/// noise: roughly zero mean and unit variance, so no normalisation is needed.
///
/// The prototypes depend only on `seed` and the image shape; the samples also on `split`, so
/// the train and test splits are different samples of the same classes. Labels cycle
/// 0, 1, …, classes - 1 so every class is equally common even in a tiny set.
package func makeSynthetic(count: Int, channels: Int, height: Int, width: Int, classes: Int,
                          seed: UInt64, split: Split) throws -> Dataset {
    guard count > 0, count <= Int(Int32.max), channels > 0, height > 0, width > 0, classes > 0 else {
        throw DataError.invalidArgument(
            "synthetic data: count \(count), shape \(channels)x\(height)x\(width) and classes \(classes) "
                + "must all be positive (count at most 2^31 - 1)")
    }
    let sampleSize = channels * height * width
    // Separate streams per purpose: adding test samples never changes the prototypes or the train set.
    let streamTag: UInt64 = 0x5359_4E54 << 32  // "SYNT"
    var prototypeRNG = RNG(seed: seed, stream: streamTag)
    var sampleRNG = RNG(seed: seed, stream: streamTag | (split == .train ? 1 : 2))

    let waves = 3
    let amplitude = Float((2.0 / Double(waves)).squareRoot())  // a cosine has variance 1/2
    var prototypes = [Float](repeating: 0, count: classes * sampleSize)
    for p in 0..<classes * channels {
        for _ in 0..<waves {
            // Up to 3 cycles across the image each way; (0, 0) would be a flat offset, not a pattern.
            var (fx, fy) = (0, 0)
            while fx == 0 && fy == 0 {
                fx = prototypeRNG.below(7) - 3
                fy = prototypeRNG.below(4)
            }
            let phase = 2 * Double.pi * Double(prototypeRNG.uniform())
            for y in 0..<height {
                for x in 0..<width {
                    let cycles = Double(fx * x) / Double(width) + Double(fy * y) / Double(height)
                    let angle = 2 * Double.pi * cycles + phase
                    prototypes[(p * height + y) * width + x] += amplitude * Float(cos(angle))
                }
            }
        }
    }

    var images = [Float](repeating: 0, count: count * sampleSize)
    var labels = [Int32](repeating: 0, count: count)
    for i in 0..<count {
        let label = i % classes
        labels[i] = Int32(label)
        for j in 0..<sampleSize {
            images[i * sampleSize + j] = 0.8 * prototypes[label * sampleSize + j] + 0.6 * sampleRNG.normal()
        }
    }
    return Dataset(name: "synthetic/\(split.rawValue)", channels: channels, height: height, width: width,
                   classes: classes, images: images, labels: labels)
}
