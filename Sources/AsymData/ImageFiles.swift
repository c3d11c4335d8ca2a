import CImage

/// The PNG and JPEG files of an image folder split, decoded a sample at a time through libpng
/// and libjpeg-turbo (the C shim `CImage`).
///
/// Opening reads every file's header (size and channels), so what can be checked without
/// decoding is checked before training: that the file is an image of that format, that it is
/// not cut off (PNG: ends with IEND; JPEG: an end-of-image marker near the end), and that it
/// fits `input`. A file damaged inside its compressed data is found when its sample is read.
final class ImageFiles: SampleFiles {
    enum Format {
        case png, jpeg

        /// The format a file's extension names (case-insensitive); nil for other files.
        init?(_ path: String) {
            let name = path.lowercased()
            if name.hasSuffix(".png") {
                self = .png
            } else if name.hasSuffix(".jpg") || name.hasSuffix(".jpeg") {
                self = .jpeg
            } else {
                return nil
            }
        }
    }

    private let files: [(path: String, format: Format, channels: Int)]
    private let channels: Int, height: Int, width: Int
    private let table: [Float]

    init(_ paths: [String], input: [Int], table: [Float]) throws {
        (channels, height, width) = (input[0], input[1], input[2])
        self.table = table
        files = try paths.map { path in
            let format = Format(path)!
            let info = try ImageFiles.decode(path, format, into: nil)
            guard Int(info.width) == input[2], Int(info.height) == input[1] else {
                throw DataError.malformed(path: path, detail: "the image is \(info.width) x \(info.height) (width x height); model.input \(input) needs \(input[2]) x \(input[1])")
            }
            guard Int(info.channels) <= input[0] || info.channels == 1 else {
                throw DataError.malformed(path: path, detail: "the image is RGB but model.input \(input) has 1 channel; save the images as grayscale or set 3 channels")
            }
            return (path, format, Int(info.channels))
        }
    }

    /// Reads the header (`out` nil) or decodes the image into `out`; a failure is one
    /// `DataError` naming the file.
    private static func decode(_ path: String, _ format: Format, into out: UnsafeMutableRawBufferPointer?) throws -> cimage_info {
        var info = cimage_info()
        var message = [CChar](repeating: 0, count: 256)
        let status = message.withUnsafeMutableBufferPointer { m in
            let target = out?.baseAddress?.assumingMemoryBound(to: UInt8.self)
            switch format {
            case .png: return cimage_png(path, target, out?.count ?? 0, &info, m.baseAddress, m.count)
            case .jpeg: return cimage_jpeg(path, target, out?.count ?? 0, &info, m.baseAddress, m.count)
            }
        }
        let reason = String(cString: message)
        switch cimage_status(UInt32(status)) {
        case CIMAGE_OK: return info
        case CIMAGE_UNREADABLE: throw DataError.unreadable(path: path, reason: reason)
        case CIMAGE_TRUNCATED: throw DataError.truncated(path: path, detail: reason)
        default: throw DataError.malformed(path: path, detail: reason)
        }
    }

    func read(_ index: Int, into out: UnsafeMutablePointer<Float>) throws {
        let file = files[index], plane = height * width
        try withUnsafeTemporaryAllocation(byteCount: plane * file.channels, alignment: 1) { pixels in
            _ = try ImageFiles.decode(file.path, file.format, into: pixels)
            table.withUnsafeBufferPointer { t in
                convertSample(pixels.baseAddress!.assumingMemoryBound(to: UInt8.self), sourceChannels: file.channels, channelsLast: true,
                              channels: channels, plane: plane, table: t.baseAddress!, into: out)
            }
        }
    }
}
