/// Why a data set could not be loaded or set up.
///
/// Every description names the file (or the data set) and says what is wrong and, where it
/// helps, what to do, so the message alone is enough to fix the problem.
package enum DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file does not exist; `advice` says where to get it.
    case missingFile(path: String, advice: String)
    /// The file exists but could not be opened or decompressed.
    case unreadable(path: String, reason: String)
    /// An IDX file starts with the wrong magic number (`kind` is e.g. "IDX images").
    case wrongMagic(path: String, found: UInt32, expected: UInt32, kind: String)
    /// The file ends before the data its header or format promises.
    case truncated(path: String, detail: String)
    /// The header or the file's size is inconsistent in some other way.
    case malformed(path: String, detail: String)
    /// The images file and the labels file hold different numbers of samples.
    case countMismatch(imagesPath: String, images: Int, labelsPath: String, labels: Int)
    /// A label is not a valid class index; `record` counts from 0 within that file.
    case labelOutOfRange(path: String, label: Int, classes: Int, record: Int)
    /// The normalisation has the wrong number of values or a std that is not positive.
    case invalidNormalization(dataset: String, reason: String)
    /// A size or count given by the caller (batch size, synthetic shape, ...) is unusable.
    case invalidArgument(String)

    package var description: String {
        switch self {
        case let .missingFile(path, advice):
            return "\(path): no such file; \(advice)"
        case let .unreadable(path, reason):
            return "\(path): cannot read: \(reason)"
        case let .wrongMagic(path, found, expected, kind):
            return "\(path): wrong magic number \(hex(found)) (expected \(hex(expected)) for \(kind)); "
                + "is this an IDX file?"
        case let .truncated(path, detail):
            return "\(path): truncated: \(detail); the file is incomplete, download or install it again"
        case let .malformed(path, detail):
            return "\(path): \(detail)"
        case let .countMismatch(imagesPath, images, labelsPath, labels):
            return "\(imagesPath) has \(images) images but \(labelsPath) has \(labels) labels; "
                + "both files must come from the same split of the same data set"
        case let .labelOutOfRange(path, label, classes, record):
            return "\(path): label \(label) out of range 0..<\(classes) at record \(record); "
                + "the file is corrupt or in another format"
        case let .invalidNormalization(dataset, reason):
            return "\(dataset): invalid normalization: \(reason)"
        case let .invalidArgument(message):
            return message
        }
    }
}

/// 0x00000803 style: magic numbers are easiest to recognise in fixed-width hex.
private func hex(_ x: UInt32) -> String {
    let digits = String(x, radix: 16, uppercase: true)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}
