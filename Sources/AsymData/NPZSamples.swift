/// The images of one .npz member, read a sample at a time: from the file at the member's
/// offset (stored members, never read whole) or from the inflated member in memory.
///
/// Samples are the outermost dimension in both layouts, so each is one contiguous run of
/// bytes; it is reordered to NCHW and normalised as it is read, giving exactly the floats a
/// whole-set conversion gives.
final class NPZSamples: SampleFiles {
    enum Source: Sendable {
        /// The data starts at `offset` in `file`.
        case file(ReadableFile, offset: Int)
        /// The whole .npy member; the data starts at `offset`.
        case memory([UInt8], offset: Int)
    }

    private let source: Source
    /// Names the member in errors: "train.npz: x.npy".
    private let what: String
    private let element: NPYHeader.Element
    private let channels: Int, plane: Int, channelsLast: Bool
    /// uint8: `pixelTable`'s table; floats: the mean and std of each channel.
    private let table: [Float], mean: [Float], std: [Float]

    /// A pixel of 0, normalised: what augmentation pads with.
    var zeroPixel: [Float] {
        element == .unsigned(bytes: 1) ? (0..<channels).map { table[$0 * 256] } : (0..<channels).map { (0 - mean[$0]) / std[$0] }
    }
    private var sampleBytes: Int { channels * plane * element.size }

    /// Checks the images' element type and shape against `input` ([C, H, W]) and the layout.
    /// Images in memory are checked to be finite here; those in a file as they are read.
    init(_ images: NPZImages, input: [Int], channelsLast: Bool, normalization: Normalization?) throws {
        let x = images.header
        let (c, h, w) = (input[0], input[1], input[2])
        let sample = Array(x.shape.dropFirst())
        let nchw = [c, h, w], nhwc = [h, w, c]
        guard x.shape.count == 4 && sample == (channelsLast ? nhwc : nchw) || x.shape.count == 3 && c == 1 && sample == [h, w] else {
            let fits = channelsLast ? "(N, \(h), \(w), \(c)) (NHWC)" : "(N, \(c), \(h), \(w)) (NCHW)"
            let other = x.shape.count == 4 && sample == (channelsLast ? nchw : nhwc)
                ? "; it is \(channelsLast ? "NCHW" : "NHWC"): set data.layout: \(channelsLast ? "nchw" : "nhwc")" : ""
            throw DataError.malformed(path: x.path, detail: "shape \(x.shapeText) does not fit model.input \(input) in data.layout "
                                      + "\(channelsLast ? "nhwc" : "nchw"): expected \(fits)\(c == 1 ? " or (N, \(h), \(w))" : "")\(other)")
        }
        switch x.element {
        case .unsigned(bytes: 1):
            table = try pixelTable(normalization, channels: c, dataset: x.path)
            (mean, std) = ([], [])
        case .float(let size) where size == 4 || size == 8:
            (mean, std) = try normalizationPerChannel(normalization, channels: c, dataset: x.path)
            table = []
        default:
            throw DataError.malformed(path: x.path, detail: "images are \(x.element.name); they must be uint8, float32 or float64 (x.astype(np.uint8))")
        }
        source = images.data
        what = x.path
        element = x.element
        (channels, plane, self.channelsLast) = (c, h * w, channelsLast && x.shape.count == 4)
        if case .memory = source, case .float = element {
            var scratch = [Float](repeating: 0, count: c * h * w)
            for i in 0..<x.shape[0] { try read(i, into: &scratch) }
        }
    }

    func read(_ index: Int, into out: UnsafeMutablePointer<Float>) throws {
        switch source {
        case .memory(let bytes, let offset):
            try bytes.withUnsafeBytes { try convert(index, UnsafeRawBufferPointer(rebasing: $0[(offset + index * sampleBytes)...]), into: out) }
        case .file(let file, let offset):
            try withUnsafeTemporaryAllocation(byteCount: sampleBytes, alignment: 8) { buffer in
                try file.read(at: offset + index * sampleBytes, into: buffer, what: what)
                try convert(index, UnsafeRawBufferPointer(buffer), into: out)
            }
        }
    }

    /// Sample `index`'s bytes `raw` to normalised NCHW floats.
    private func convert(_ index: Int, _ raw: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<Float>) throws {
        switch element {
        case .unsigned:
            table.withUnsafeBufferPointer { t in
                convertSample(raw.baseAddress!.assumingMemoryBound(to: UInt8.self), sourceChannels: channels, channelsLast: channelsLast,
                              channels: channels, plane: plane, table: t.baseAddress!, into: out)
            }
        default:
            let double = element.size == 8
            for ch in 0..<channels {
                for p in 0..<plane {
                    let from = channelsLast ? p * channels + ch : ch * plane + p
                    let v = double ? Float(raw.loadUnaligned(fromByteOffset: 8 * from, as: Double.self))
                        : raw.loadUnaligned(fromByteOffset: 4 * from, as: Float.self)
                    guard v.isFinite else {
                        throw DataError.malformed(path: what, detail: "element \(index * channels * plane + from) is not a finite number; images must be finite")
                    }
                    out[ch * plane + p] = (v - mean[ch]) / std[ch]
                }
            }
        }
    }
}
