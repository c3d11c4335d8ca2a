import CZlib
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Reads a whole file into memory, gunzipping it on the way if it is gzip.
///
/// zlib's gzread passes a file that is not gzip through unchanged, so one reader serves both
/// the .gz IDX files and the raw CIFAR-10 batches. Decompressing everything first and converting
/// afterwards keeps the hot loop a plain pass over bytes. `advice` goes into the error when the
/// file is missing.
func readWholeFile(_ path: String, advice: String) throws -> [UInt8] {
    // Checked up front so a missing file gets the "how to get it" message, not a bare errno.
    guard access(path, F_OK) == 0 else { throw DataError.missingFile(path: path, advice: advice) }
    guard let file = gzopen(path, "rb") else {
        throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
    }
    defer { gzclose(file) }
    // The decompressed size is not in the file, so read into a buffer that doubles when full.
    // Large reads let zlib inflate straight into our buffer instead of through its own.
    var bytes = [UInt8](repeating: 0, count: 1 << 20)
    var filled = 0
    while true {
        if filled == bytes.count { bytes += repeatElement(0, count: bytes.count) }
        let room = UInt32(min(bytes.count - filled, 1 << 30))
        let got = bytes.withUnsafeMutableBytes { gzread(file, $0.baseAddress! + filled, room) }
        if got < 0 {
            var code: Int32 = 0
            // zlib prefixes its message with the path, which DataError already shows.
            var reason = String(cString: gzerror(file, &code))
            if reason.hasPrefix(path + ": ") { reason.removeFirst(path.count + 2) }
            if code == Z_DATA_ERROR { reason += "; the gzip data is damaged" }
            throw DataError.unreadable(path: path, reason: reason)
        }
        if got == 0 { break }
        filled += Int(got)
    }
    // gzread treats a gzip stream that stops early as end of file (the file might still be
    // growing) and only records Z_BUF_ERROR, so ask: that is a cut-off download.
    var code: Int32 = 0
    gzerror(file, &code)
    if code == Z_BUF_ERROR {
        throw DataError.truncated(path: path, detail: "the gzip stream ends early, after \(filled) decompressed bytes")
    }
    bytes.removeSubrange(filled...)
    return bytes
}

/// Reads a whole file as it is, for formats that compress inside (zip, PNG): one buffer of
/// the file's size, where `readWholeFile` would grow one for a gzip stream of unknown length.
func readFile(_ path: String, advice: String) throws -> [UInt8] {
    guard access(path, F_OK) == 0 else { throw DataError.missingFile(path: path, advice: advice) }
    guard let file = fopen(path, "rb") else {
        throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
    }
    defer { fclose(file) }
    var info = stat()
    guard fstat(fileno(file), &info) == 0 else {
        throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
    }
    guard info.st_mode & S_IFMT == S_IFREG else { throw DataError.unreadable(path: path, reason: "not a regular file") }
    var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
    let got = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
    guard got == bytes.count else {
        throw DataError.unreadable(path: path, reason: "read \(got) of its \(bytes.count) bytes")
    }
    return bytes
}

/// `directory/file`, without doubling a trailing slash.
func joinPath(_ directory: String, _ file: String) -> String {
    if directory.isEmpty { return file }
    return directory.hasSuffix("/") ? directory + file : directory + "/" + file
}

/// The last component of a directory path, for data set names ("…/fashion-mnist/" -> "fashion-mnist").
func lastPathComponent(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}
