#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Loads `directory/train/<class>/*.png` and `directory/test/<class>/*.png`, torchvision's
/// ImageFolder layout: the training split's class folders, sorted by name (byte order), are
/// classes 0, 1, ...; the test split's folders must be among them, and take their numbers.
///
/// Images are 8-bit grayscale or RGB PNGs (`decodePNG`), all of `input`'s height and width
/// ([C, H, W], C 1 or 3); with C = 3 a grayscale image is repeated in every channel (as
/// torchvision's loader converts to RGB). They are kept as bytes, normalised batch by batch as
/// CIFAR-10's are. Files and folders whose names start with "." are skipped; any other file
/// in a class folder that is not a .png, and every image that does not read, fit or match
/// `input`, is a `DataError` naming the file. Files are read in name order within a class.
package func loadImageFolder(directory: String, input: [Int], normalization: Normalization?) throws -> (train: Dataset, test: Dataset) {
    let (channels, height, width) = (input[0], input[1], input[2])
    guard channels == 1 || channels == 3 else {
        throw DataError.invalidArgument("model.input: image_folder reads grayscale (1 channel) or RGB (3 channels) images, not \(channels) channels")
    }
    let table = try pixelTable(normalization, channels: channels, dataset: directory)
    let advice = "image_folder needs data.path/train/<class>/*.png and data.path/test/<class>/*.png"
    let trainRoot = joinPath(directory, "train"), testRoot = joinPath(directory, "test")
    let classes = try classFolders(trainRoot, advice: advice)
    let testClasses = try classFolders(testRoot, advice: advice)
    if let stray = testClasses.first(where: { !classes.contains($0) }) {
        throw DataError.malformed(path: joinPath(testRoot, stray),
                                  detail: "class '\(stray)' has no folder in \(trainRoot), whose classes are \(classes.joined(separator: ", "))")
    }

    func split(_ root: String, _ folders: [String], _ name: String) throws -> Dataset {
        var files: [(path: String, label: Int32)] = []
        for folder in folders {
            let label = Int32(classes.firstIndex(of: folder)!)
            let images = try pngFiles(joinPath(root, folder))
            files += images.map { ($0, label) }
        }
        guard files.count <= Int(Int32.max) else {
            throw DataError.malformed(path: root, detail: "\(files.count) images is more than this trainer indexes (2^31 - 1)")
        }
        let plane = height * width, sampleSize = channels * plane
        var pixels = [UInt8](repeating: 0, count: files.count * sampleSize)
        for (k, file) in files.enumerated() {
            let image = try decodePNG(try readFile(file.path, advice: advice), path: file.path)
            guard image.width == width, image.height == height else {
                throw DataError.malformed(path: file.path, detail: "the image is \(image.width) x \(image.height) (width x height); model.input \(input) needs \(width) x \(height)")
            }
            guard image.channels == channels || image.channels == 1 else {
                throw DataError.malformed(path: file.path, detail: "the image is RGB but model.input \(input) has 1 channel; save the images as grayscale or set 3 channels")
            }
            // Interleaved rows to NCHW planes; a grayscale image fills every channel.
            for c in 0..<channels {
                let from = image.channels == 1 ? 0 : c, to = k * sampleSize + c * plane
                for p in 0..<plane { pixels[to + p] = image.pixels[p * image.channels + from] }
            }
        }
        return Dataset(name: "\(lastPathComponent(directory))/\(name)", channels: channels, height: height, width: width,
                       classes: classes.count, pixels: .bytes(pixels, table: table), labels: files.map(\.label))
    }
    return (try split(trainRoot, classes, "train"), try split(testRoot, testClasses, "test"))
}

/// The class folders in `root`, sorted by name in byte order (files there are ignored, as
/// torchvision does); at least one.
private func classFolders(_ root: String, advice: String) throws -> [String] {
    let folders = try folderEntries(root, advice: advice).filter(\.isFolder).map(\.name)
    guard !folders.isEmpty else {
        throw DataError.malformed(path: root, detail: "no class folders; \(advice)")
    }
    return folders
}

/// The .png files of a class folder, in name order; at least one.
private func pngFiles(_ folder: String) throws -> [String] {
    let files = try folderEntries(folder, advice: "").map { entry -> String in
        let path = joinPath(folder, entry.name)
        guard !entry.isFolder else {
            throw DataError.malformed(path: path, detail: "a folder inside a class folder; image_folder reads <split>/<class>/*.png, one level deep")
        }
        guard entry.name.lowercased().hasSuffix(".png") else {
            throw DataError.malformed(path: path, detail: "not a .png file; image_folder reads PNG images only (move other files out of the class folders)")
        }
        return path
    }
    guard !files.isEmpty else { throw DataError.malformed(path: folder, detail: "the class folder holds no .png images") }
    return files
}

/// The entries of `path` except those whose names start with ".", sorted by name (byte order).
private func folderEntries(_ path: String, advice: String) throws -> [(name: String, isFolder: Bool)] {
    guard access(path, F_OK) == 0 else { throw DataError.missingFile(path: path, advice: advice) }
    guard let dir = opendir(path) else { throw DataError.unreadable(path: path, reason: String(cString: strerror(errno))) }
    defer { closedir(dir) }
    var entries: [(name: String, isFolder: Bool)] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        guard !name.hasPrefix(".") else { continue }
        var info = stat()
        let full = joinPath(path, name)
        guard stat(full, &info) == 0 else { throw DataError.unreadable(path: full, reason: String(cString: strerror(errno))) }
        entries.append((name, info.st_mode & S_IFMT == S_IFDIR))
    }
    return entries.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
}
