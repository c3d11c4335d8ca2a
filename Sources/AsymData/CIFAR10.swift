#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Loads one split of CIFAR-10 from the binary version's files in `directory`:
/// `data_batch_1.bin` … `data_batch_5.bin` for `.train` (whichever exist, in that order; at
/// least one), `test_batch.bin` for `.test`.
///
/// Each file is a run of 3073-byte records: one label byte (0-9), then 3072 pixel bytes,
/// the red, green and blue 32x32 planes in turn, which is already NCHW. Images come out as
/// count x 3 x 32 x 32 bytes, normalised per batch by `normalization` (nil: pixel / 255). Throws `DataError`
/// for a missing file, a size that is not a whole number of records, or a label above 9.
package func loadCIFAR10(directory: String, split: Split, normalization: Normalization?) throws -> Dataset {
    let (channels, side, classes) = (3, 32, 10)
    let plane = side * side
    let recordSize = 1 + channels * plane
    let advice = "download the CIFAR-10 binary version (cifar-10-binary.tar.gz), unpack it and set data.path "
        + "to its cifar-10-batches-bin folder"
    let table = try pixelTable(normalization, channels: channels, dataset: directory)

    let paths: [String]
    switch split {
    case .test:
        paths = [joinPath(directory, "test_batch.bin")]
    case .train:
        // A partial download (say, only the first batch) is still useful for a quick run.
        paths = (1...5).map { joinPath(directory, "data_batch_\($0).bin") }.filter { access($0, F_OK) == 0 }
        guard !paths.isEmpty else {
            throw DataError.missingFile(path: joinPath(directory, "data_batch_1.bin"),
                                        advice: "none of data_batch_1.bin … data_batch_5.bin is there; " + advice)
        }
    }

    // Read and check every file before copying any, so the output is allocated once.
    var files: [[UInt8]] = []
    for path in paths {
        let bytes = try readWholeFile(path, advice: advice)
        guard !bytes.isEmpty else { throw DataError.truncated(path: path, detail: "the file is empty") }
        guard bytes.count % recordSize == 0 else {
            throw DataError.truncated(
                path: path,
                detail: "\(bytes.count) bytes is not a whole number of \(recordSize)-byte records "
                    + "(1 label + \(channels * plane) pixels each)")
        }
        for record in 0..<bytes.count / recordSize {
            let label = Int(bytes[record * recordSize])
            guard label < classes else {
                throw DataError.labelOutOfRange(path: path, label: label, classes: classes, record: record)
            }
        }
        files.append(bytes)
    }
    let count = files.reduce(0) { $0 + $1.count / recordSize }

    var labels = [Int32](repeating: 0, count: count)
    var pixels: [UInt8] = []
    pixels.reserveCapacity(count * channels * plane)
    var n = 0
    for bytes in files {
        for record in 0..<bytes.count / recordSize {
            let base = record * recordSize
            labels[n] = Int32(bytes[base])
            pixels.append(contentsOf: bytes[(base + 1)..<(base + recordSize)])
            n += 1
        }
    }
    return Dataset(name: "\(lastPathComponent(directory))/\(split.rawValue)", channels: channels, height: side,
                   width: side, classes: classes, pixels: .bytes(pixels, table: table), labels: labels)
}
