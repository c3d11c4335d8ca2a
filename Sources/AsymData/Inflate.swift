import CZlib

/// Inflates raw deflate data (a zip member) that must come out as exactly `size` bytes. `path`
/// names the data in errors ("data.npz: x_train.npy"). Damaged data, a stream that ends early
/// and one that decompresses past `size` are each a `DataError`.
func inflate(_ input: UnsafeRawBufferPointer, size: Int, path: String) throws -> [UInt8] {
    var stream = z_stream()
    // -15: raw deflate, no zlib header, as zip members hold it.
    guard inflateInit2_(&stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw DataError.unreadable(path: path, reason: "zlib could not start inflating (out of memory?)")
    }
    defer { inflateEnd(&stream) }
    // One spare byte: data longer than `size` shows as output that reaches it.
    var out = [UInt8](repeating: 0, count: size + 1)
    let source = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
    let status = out.withUnsafeMutableBufferPointer { o -> Int32 in
        while true {
            // zlib counts in 32 bits per call; total_in and total_out say where to go on.
            let read = Int(stream.total_in), written = Int(stream.total_out)
            stream.next_in = source.map { $0 + read }
            stream.avail_in = UInt32(min(input.count - read, 1 << 30))
            stream.next_out = o.baseAddress! + written
            stream.avail_out = UInt32(min(o.count - written, 1 << 30))
            let s = CZlib.inflate(&stream, Z_NO_FLUSH)
            if s != Z_OK { return s }
        }
    }
    let produced = Int(stream.total_out)
    let tooLong = DataError.malformed(path: path, detail: "the compressed data holds more than the \(size) bytes expected")
    switch status {
    case Z_STREAM_END where produced == size:
        out.removeLast()
        return out
    case Z_STREAM_END where produced < size:
        throw DataError.malformed(path: path, detail: "the compressed data holds \(produced) bytes, not the \(size) expected")
    case Z_STREAM_END:
        throw tooLong
    case Z_BUF_ERROR where produced > size:
        throw tooLong
    case Z_BUF_ERROR:
        throw DataError.truncated(path: path, detail: "the compressed data ends after \(produced) of \(size) bytes")
    case Z_DATA_ERROR:
        let reason = stream.msg.map { String(cString: $0) } ?? "invalid deflate data"
        throw DataError.malformed(path: path, detail: "the compressed data is damaged (zlib: \(reason))")
    default:
        throw DataError.unreadable(path: path, reason: "zlib error \(status) while inflating")
    }
}
