/// Loads one split of MNIST or Fashion-MNIST from the IDX files in `directory`:
/// `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz` for `.train`,
/// `t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz` for `.test`.
///
/// The files may be gzip or plain (zlib reads both). Images come out as count x 1 x rows x cols
/// bytes, normalised per batch by `normalization` (nil: pixel / 255); there are 10 classes. Throws `DataError`
/// for a missing file, a wrong magic number, a header that disagrees with the file's size,
/// image and label counts that differ, or a label outside 0..<10.
package func loadIDX(directory: String, split: Split, normalization: Normalization?) throws -> Dataset {
    let classes = 10
    let prefix = split == .train ? "train" : "t10k"
    let imagesPath = joinPath(directory, "\(prefix)-images-idx3-ubyte.gz")
    let labelsPath = joinPath(directory, "\(prefix)-labels-idx1-ubyte.gz")
    let advice = "install Debian's dataset-fashion-mnist or set data.path to a folder with the four *-ubyte.gz files"
    let table = try pixelTable(normalization, channels: 1, dataset: directory)

    let imageBytes = try readWholeFile(imagesPath, advice: advice)
    let imageDims = try idxDimensions(imageBytes, path: imagesPath, magic: 0x0000_0803, kind: "IDX images")
    let labelBytes = try readWholeFile(labelsPath, advice: advice)
    let labelDims = try idxDimensions(labelBytes, path: labelsPath, magic: 0x0000_0801, kind: "IDX labels")
    let (count, rows, cols) = (imageDims[0], imageDims[1], imageDims[2])
    guard labelDims[0] == count else {
        throw DataError.countMismatch(imagesPath: imagesPath, images: count,
                                      labelsPath: labelsPath, labels: labelDims[0])
    }
    // Sample indices travel as Int32 (EpochOrder, gather).
    guard count <= Int(Int32.max) else {
        throw DataError.malformed(path: imagesPath,
                                  detail: "\(count) images is more than this trainer indexes (2^31 - 1)")
    }

    var labels = [Int32](repeating: 0, count: count)
    for i in 0..<count {
        let label = Int(labelBytes[8 + i])
        guard label < classes else {
            throw DataError.labelOutOfRange(path: labelsPath, label: label, classes: classes, record: i)
        }
        labels[i] = Int32(label)
    }

    let pixels = Array(imageBytes[16..<(16 + count * rows * cols)])
    return Dataset(name: "\(lastPathComponent(directory))/\(split.rawValue)", channels: 1, height: rows,
                   width: cols, classes: classes, pixels: .bytes(pixels, table: table), labels: labels)
}

/// Checks an IDX file's header against its size and returns the dimension sizes.
///
/// IDX layout: a big-endian magic number 0x0000TTRR (TT = 0x08 for unsigned bytes, RR = the
/// number of dimensions), then one big-endian UInt32 per dimension, then the data, row-major.
/// The data must be exactly as long as the dimensions say: shorter is a cut-off download,
/// longer means the header or the file is wrong.
private func idxDimensions(_ bytes: [UInt8], path: String, magic: UInt32, kind: String) throws -> [Int] {
    let rank = Int(magic & 0xFF)
    let headerSize = 4 + 4 * rank
    if bytes.count >= 4 {
        let found = bigEndianUInt32(bytes, at: 0)
        guard found == magic else { throw DataError.wrongMagic(path: path, found: found, expected: magic, kind: kind) }
    }
    guard bytes.count >= headerSize else {
        throw DataError.truncated(path: path,
                                  detail: "expected a \(headerSize)-byte IDX header, found \(bytes.count) bytes")
    }
    let dims = (0..<rank).map { Int(bigEndianUInt32(bytes, at: 4 + 4 * $0)) }
    let shape = dims.map(String.init).joined(separator: " x ")
    guard !dims.contains(0) else {
        throw DataError.malformed(path: path, detail: "the header declares an empty data set (\(shape))")
    }
    // Three UInt32 sizes can overflow Int; such a header is garbage, not a big file.
    var expected = 1
    for d in dims {
        let (product, overflow) = expected.multipliedReportingOverflow(by: d)
        guard !overflow else {
            throw DataError.malformed(path: path, detail: "the header declares impossible dimensions \(shape)")
        }
        expected = product
    }
    let found = bytes.count - headerSize
    let unit = rank == 1 ? "label" : "pixel"
    guard found >= expected else {
        throw DataError.truncated(path: path, detail: "expected \(expected) \(unit) bytes, found \(found)")
    }
    guard found == expected else {
        throw DataError.malformed(
            path: path,
            detail: "\(found - expected) bytes follow the \(expected) \(unit) bytes the header declares (\(shape)); "
                + "the header does not match the data")
    }
    return dims
}

private func bigEndianUInt32(_ bytes: [UInt8], at i: Int) -> UInt32 {
    UInt32(bytes[i]) << 24 | UInt32(bytes[i + 1]) << 16 | UInt32(bytes[i + 2]) << 8 | UInt32(bytes[i + 3])
}
