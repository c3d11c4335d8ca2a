#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Loads `directory/train/<class>/*` and `directory/test/<class>/*`, torchvision's
/// ImageFolder layout: the training split's class folders, sorted by name (byte order), are
/// classes 0, 1, ...; the test split's folders must be among them, and take their numbers.
///
/// Images are PNG or JPEG files (`ImageFiles`), all of `input`'s height and width ([C, H, W],
/// C 1 or 3); with C = 3 a grayscale image is repeated in every channel (as torchvision's
/// loader converts to RGB). Every file's header is read here, so an image that is not one,
/// is cut off or does not match `input` is a `DataError` naming the file before training
/// starts; the pixels are decoded a batch at a time and normalised as CIFAR-10's are. Files
/// and folders whose names start with "." are skipped; any other file in a class folder that
/// is not a .png, .jpg or .jpeg is an error. Files are read in name order within a class.
package func loadImageFolder(directory: String, input: [Int], normalization: Normalization?) throws -> (train: Dataset, test: Dataset) {
    let (channels, height, width) = (input[0], input[1], input[2])
    guard channels == 1 || channels == 3 else {
        throw DataError.invalidArgument("model.input: image_folder reads grayscale (1 channel) or RGB (3 channels) images, not \(channels) channels")
    }
    let table = try pixelTable(normalization, channels: channels, dataset: directory)
    let advice = "image_folder needs data.path/train/<class>/*.png (or .jpg) and data.path/test/<class>/*.png"
    let trainRoot = joinPath(directory, "train"), testRoot = joinPath(directory, "test")
    let classes = try classFolders(trainRoot, advice: advice)
    let testClasses = try classFolders(testRoot, advice: advice)
    if let stray = testClasses.first(where: { !classes.contains($0) }) {
        throw DataError.malformed(path: joinPath(testRoot, stray),
                                  detail: "class '\(stray)' has no folder in \(trainRoot), whose classes are \(classes.joined(separator: ", "))")
    }

    func split(_ root: String, _ folders: [String], _ name: String) throws -> Dataset {
        var files: [String] = [], labels: [Int32] = []
        for folder in folders {
            let images = try imageFiles(joinPath(root, folder))
            files += images
            labels += repeatElement(Int32(classes.firstIndex(of: folder)!), count: images.count)
        }
        guard files.count <= Int(Int32.max) else {
            throw DataError.malformed(path: root, detail: "\(files.count) images is more than this trainer indexes (2^31 - 1)")
        }
        let images = try ImageFiles(files, input: input, table: table)
        return Dataset(name: "\(lastPathComponent(directory))/\(name)", channels: channels, height: height, width: width,
                       classes: classes.count, pixels: .files(images), labels: labels, zeroPixel: (0..<channels).map { table[$0 * 256] })
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

/// The image files of a class folder, in name order; at least one.
private func imageFiles(_ folder: String) throws -> [String] {
    let files = try folderEntries(folder, advice: "").map { entry -> String in
        let path = joinPath(folder, entry.name)
        guard !entry.isFolder else {
            throw DataError.malformed(path: path, detail: "a folder inside a class folder; image_folder reads <split>/<class>/<image>, one level deep")
        }
        guard ImageFiles.Format(path) != nil else {
            throw DataError.malformed(path: path, detail: "not a .png, .jpg or .jpeg file; image_folder reads PNG and JPEG images only (move other files out of the class folders)")
        }
        return path
    }
    guard !files.isEmpty else { throw DataError.malformed(path: folder, detail: "the class folder holds no images") }
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
