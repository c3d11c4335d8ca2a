/// Loads the train and test splits of NumPy .npz data, in either of two forms:
///
/// * `path` a folder holding `train.npz` and `test.npz`, each with the arrays `x` (images) and
///   `y` (labels): `np.savez(f"{path}/train.npz", x=..., y=...)`;
/// * `path` one file with `x_train`, `y_train`, `x_test` and `y_test`.
///
/// Archives may be stored (`np.savez`) or deflated (`np.savez_compressed`). The images of a
/// stored member stay in the file and are read a batch at a time (`NPZSamples`), so data
/// larger than memory trains; a deflated member can only be inflated whole, into memory.
/// Labels are always loaded whole.
///
/// Images are uint8, normalised batch by batch as CIFAR-10's are (pixel / 255, then
/// `normalization`), or float32 or float64, taken as they are (then `normalization`, if
/// given). Their layout is `channelsLast` (NHWC) or not (NCHW), of `input`'s size ([C, H, W],
/// the model's); (N, H, W) is one channel in either. Labels are integers, shaped (N,) or (N, 1);
/// the classes are 0 ... the largest label of either split. Every problem is a `DataError` that
/// names the file and the array.
package func loadNPZ(path: String, input: [Int], channelsLast: Bool, normalization: Normalization?) throws -> (train: Dataset, test: Dataset) {
    let folder = isFolder(path)
    let splits: [(archive: ZipArchive, x: String, y: String, name: String)]
    if folder {
        let advice = "data.path holds train.npz and test.npz, each written by np.savez(file, x=images, y=labels)"
        splits = try ["train", "test"].map { split in
            (try ZipArchive(try ReadableFile(joinPath(path, split + ".npz"), advice: advice)), "x", "y", split)
        }
    } else {
        let archive = try ZipArchive(try ReadableFile(path, advice: "set data.path to a folder of train.npz and test.npz, "
                                                      + "or to one .npz file written by \(singleFileSave)"))
        splits = [(archive, "x_train", "y_train", "train"), (archive, "x_test", "y_test", "test")]
    }
    let arrays = try splits.map { split in
        let x = try npzImages(split.archive, member(split.archive, split.x, folder: folder))
        let yMember = try member(split.archive, split.y, folder: folder)
        let y = try NPYArray(try split.archive.contents(of: yMember), path: split.archive.name(yMember))
        return (x, try npzLabels(y, images: x))
    }
    let classes = Int(arrays.flatMap(\.1).max()!) + 1
    let setName = lastPathComponent(path)
    return try (0..<2).map { s -> Dataset in
        let (x, labels) = arrays[s]
        let images = try NPZSamples(x, input: input, channelsLast: channelsLast, normalization: normalization)
        return Dataset(name: "\(setName)/\(splits[s].name)", channels: input[0], height: input[1], width: input[2],
                       classes: classes, pixels: .files(images), labels: labels, zeroPixel: images.zeroPixel)
    }.pair
}

private let singleFileSave = "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"

/// The archive's member holding array `name`.
private func member(_ archive: ZipArchive, _ name: String, folder: Bool) throws -> ZipArchive.Member {
    guard let member = archive.members.first(where: { $0.name == name + ".npy" }) else {
        let held = archive.members.map { $0.name.hasSuffix(".npy") ? String($0.name.dropLast(4)) : $0.name }
        let save = folder ? "write both: np.savez(file, x=images, y=labels)" : "write all four: \(singleFileSave)"
        throw DataError.malformed(path: archive.path, detail: "no array '\(name)' (it holds \(held.isEmpty ? "none" : held.joined(separator: ", "))); \(save)")
    }
    return member
}

/// An images member: its header, and its data in place (stored) or inflated (deflated).
struct NPZImages {
    let header: NPYHeader
    let data: NPZSamples.Source
}

private func npzImages(_ archive: ZipArchive, _ m: ZipArchive.Member) throws -> NPZImages {
    let what = archive.name(m)
    guard let start = try archive.storedData(of: m) else {
        let array = try NPYArray(try archive.contents(of: m), path: what)
        return NPZImages(header: array.header, data: .memory(array.bytes, offset: array.header.dataOffset))
    }
    let header = try NPYHeader(size: m.size, path: what) { offset, count in
        guard count <= m.size - offset else {
            throw DataError.truncated(path: what, detail: "expected \(count) bytes at offset \(offset), the array has \(m.size)")
        }
        return try archive.file.read(at: start + offset, count, what: what)
    }
    return NPZImages(header: header, data: .file(archive.file, offset: start + header.dataOffset))
}

/// The labels of `y` for the images `x`: integers >= 0 in (N,) or (N, 1).
private func npzLabels(_ y: NPYArray, images x: NPZImages) throws -> [Int32] {
    guard let n = x.header.shape.first, n > 0 else {
        throw DataError.malformed(path: x.header.path, detail: "shape \(x.header.shapeText) holds no images")
    }
    guard n <= Int(Int32.max) else {
        throw DataError.malformed(path: x.header.path, detail: "\(n) images is more than this trainer indexes (2^31 - 1)")
    }
    let h = y.header
    guard h.shape == [n] || h.shape == [n, 1] else {
        throw DataError.malformed(path: h.path, detail: "shape \(h.shapeText) does not fit \(n) images: expected (\(n),) or (\(n), 1)")
    }
    if case .float = h.element {
        throw DataError.malformed(path: h.path, detail: "labels are \(h.element.name); they must be integers (y.astype(np.int64))")
    }
    return try (0..<n).map { i in
        guard let label = y.integer(i), label >= 0, label <= Int(Int32.max) else {
            throw DataError.malformed(path: h.path, detail: "label \(y.integer(i).map(String.init) ?? "beyond 2^63") at index \(i) is not a class index 0, 1, ... (below 2^31)")
        }
        return Int32(label)
    }
}

private extension Array {
    var pair: (Element, Element) { (self[0], self[1]) }
}
