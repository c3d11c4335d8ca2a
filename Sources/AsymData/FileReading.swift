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

/// A regular file held open for reads at offsets (pread): the .npz members that are read a
/// batch at a time instead of whole. pread keeps no file position, so any thread may read.
final class ReadableFile: Sendable {
    let path: String
    let size: Int
    private let descriptor: Int32

    /// Opens `path`; `advice` goes into the error when it is missing.
    init(_ path: String, advice: String) throws {
        guard access(path, F_OK) == 0 else { throw DataError.missingFile(path: path, advice: advice) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DataError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            let reason = info.st_mode & S_IFMT == S_IFDIR ? "a folder, not a file" : "not a regular file"
            close(fd)
            throw DataError.unreadable(path: path, reason: reason)
        }
        self.path = path
        size = Int(info.st_size)
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Fills `buffer` from `offset`; a read past the end is `truncated`, naming `what`.
    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer, what: String) throws {
        guard offset >= 0, offset <= size, buffer.count <= size - offset else {
            throw DataError.truncated(path: what, detail: "expected \(buffer.count) bytes at offset \(offset), the file has \(size)")
        }
        var done = 0
        while done < buffer.count {
            let got = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                throw DataError.unreadable(path: what, reason: got < 0 ? String(cString: strerror(errno))
                                           : "the file ended at \(offset + done) bytes; it changed since it was opened")
            }
            done += got
        }
    }

    /// `count` bytes from `offset`.
    func read(at offset: Int, _ count: Int, what: String) throws -> [UInt8] {
        guard count >= 0 else { throw DataError.malformed(path: what, detail: "a negative length (\(count) bytes) at offset \(offset)") }
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0, what: what) }
        return bytes
    }
}

/// Whether `path` is a folder (false when it is missing: the loader then says so).
func isFolder(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
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
