import Foundation

// TensorBoard event files are TFRecord files whose records are serialized
// `tensorflow.Event` protobufs. Only the handful of fields needed for scalar
// summaries are encoded here, by hand, so no protobuf library is required:
//
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
//
// A TFRecord is: uint64 length (LE), uint32 masked CRC-32C of those 8 bytes,
// the data, uint32 masked CRC-32C of the data.

/// Writes scalar summaries to a TensorBoard event file.
///
/// Logging must never interrupt training, so write failures after the file is
/// opened are ignored. The file is flushed and closed when the writer is released.
package final class TensorBoardWriter {
    /// The event file being written.
    package let path: String
    private let file: UnsafeMutablePointer<FILE>

    /// Creates `directory` if needed and opens a new event file in it named
    /// `events.out.tfevents.<unix seconds>.<hostname>`, adding a `.<n>` suffix
    /// rather than overwriting a file from another writer started the same second.
    package init(directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw AsymVizError.io(path: directory, reason: "cannot create directory: \(error.localizedDescription)")
        }
        let wallTime = Date().timeIntervalSince1970
        let base = "\(directory)/events.out.tfevents.\(Int(wallTime)).\(hostName())"
        var candidate = base
        var suffix = 0
        // "x" (exclusive create) makes fopen fail with EEXIST instead of truncating.
        while true {
            if let opened = fopen(candidate, "wbx") {
                file = opened
                break
            }
            guard errno == EEXIST else {
                throw AsymVizError.io(path: candidate, reason: "cannot create event file: \(systemErrorMessage())")
            }
            suffix += 1
            candidate = "\(base).\(suffix)"
        }
        path = candidate

        var event = ProtoEncoder()
        event.double(field: 1, wallTime)
        event.string(field: 3, "brain.Event:2")
        writeRecord(event.bytes)
        flush()
    }

    deinit {
        fclose(file)
    }

    /// Appends one scalar point for `tag`. Data reaches disk on `flush()` or
    /// when the writer is released.
    package func addScalar(tag: String, value: Float, step: Int64,
                          wallTime: Double = Date().timeIntervalSince1970) {
        var summaryValue = ProtoEncoder()
        summaryValue.string(field: 1, tag)
        summaryValue.float(field: 2, value)
        var summary = ProtoEncoder()
        summary.message(field: 1, summaryValue)
        var event = ProtoEncoder()
        event.double(field: 1, wallTime)
        event.int64(field: 2, step)
        event.message(field: 5, summary)
        writeRecord(event.bytes)
    }

    /// Pushes buffered records to the file so TensorBoard can see them.
    package func flush() {
        fflush(file)
    }

    private func writeRecord(_ data: [UInt8]) {
        let length = littleEndianBytes(UInt64(data.count))
        let record = length + littleEndianBytes(maskedCRC32C(length)) + data + littleEndianBytes(maskedCRC32C(data))
        _ = record.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
    }
}

/// Reads the `simple_value` scalars of a TensorBoard event file, in file order.
///
/// Both CRCs of every record are verified. A truncated final record is treated
/// as the end of the file, since it is what a writer still running leaves behind.
/// Summary values without a `simple_value` (images, tensors, ...) are skipped.
package func readTensorBoardScalars(path: String) throws -> [(tag: String, step: Int64, value: Float)] {
    guard let contents = FileManager.default.contents(atPath: path) else {
        throw AsymVizError.io(path: path, reason: "cannot read event file")
    }
    let bytes = [UInt8](contents)
    var scalars: [(tag: String, step: Int64, value: Float)] = []
    var offset = 0
    while bytes.count - offset >= 12 {
        let lengthBytes = bytes[offset..<(offset + 8)]
        guard maskedCRC32C(lengthBytes) == littleEndianValue(bytes[(offset + 8)..<(offset + 12)], as: UInt32.self) else {
            throw AsymVizError.corrupt(path: path, offset: offset, reason: "length CRC mismatch")
        }
        let length = littleEndianValue(lengthBytes, as: UInt64.self)
        let dataStart = offset + 12
        let roomForData = bytes.count - dataStart - 4
        // Compare as UInt64: a huge length must not trap when converted to Int.
        guard roomForData >= 0, length <= UInt64(roomForData) else { break }
        let dataEnd = dataStart + Int(length)
        let data = bytes[dataStart..<dataEnd]
        guard maskedCRC32C(data) == littleEndianValue(bytes[dataEnd..<(dataEnd + 4)], as: UInt32.self) else {
            throw AsymVizError.corrupt(path: path, offset: offset, reason: "data CRC mismatch")
        }
        do {
            scalars += try scalarsInEvent(data)
        } catch {
            throw AsymVizError.corrupt(path: path, offset: offset, reason: "malformed Event protobuf")
        }
        offset = dataEnd + 4
    }
    return scalars
}

private func scalarsInEvent(_ event: ArraySlice<UInt8>) throws -> [(tag: String, step: Int64, value: Float)] {
    var step: Int64 = 0
    var summaries: [ArraySlice<UInt8>] = []
    var reader = ProtoReader(event)
    while let (field, value) = try reader.next() {
        switch (field, value) {
        case let (2, .varint(v)): step = Int64(bitPattern: v)
        case let (5, .bytes(b)): summaries.append(b)
        default: break
        }
    }
    var scalars: [(tag: String, step: Int64, value: Float)] = []
    for summary in summaries {
        var summaryReader = ProtoReader(summary)
        while let (field, value) = try summaryReader.next() {
            guard field == 1, case let .bytes(valueBytes) = value else { continue }
            var tag = ""
            var simpleValue: Float?
            var valueReader = ProtoReader(valueBytes)
            while let (valueField, v) = try valueReader.next() {
                switch (valueField, v) {
                case let (1, .bytes(b)): tag = String(decoding: b, as: UTF8.self)
                case let (2, .fixed32(bits)): simpleValue = Float(bitPattern: bits)
                default: break
                }
            }
            if let simpleValue {
                scalars.append((tag, step, simpleValue))
            }
        }
    }
    return scalars
}

// MARK: - Protobuf wire format

/// Builds a protobuf message field by field.
private struct ProtoEncoder {
    var bytes: [UInt8] = []

    mutating func double(field: Int, _ value: Double) {
        key(field, wireType: 1)
        bytes += littleEndianBytes(value.bitPattern)
    }

    mutating func int64(field: Int, _ value: Int64) {
        key(field, wireType: 0)
        varint(UInt64(bitPattern: value))
    }

    mutating func float(field: Int, _ value: Float) {
        key(field, wireType: 5)
        bytes += littleEndianBytes(value.bitPattern)
    }

    mutating func string(field: Int, _ value: String) {
        lengthDelimited(field, Array(value.utf8))
    }

    mutating func message(field: Int, _ value: ProtoEncoder) {
        lengthDelimited(field, value.bytes)
    }

    private mutating func lengthDelimited(_ field: Int, _ payload: [UInt8]) {
        key(field, wireType: 2)
        varint(UInt64(payload.count))
        bytes += payload
    }

    private mutating func key(_ field: Int, wireType: UInt64) {
        varint(UInt64(field) << 3 | wireType)
    }

    private mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
}

private enum ProtoValue {
    case varint(UInt64)
    case fixed64(UInt64)
    case bytes(ArraySlice<UInt8>)
    case fixed32(UInt32)
}

private struct ProtoError: Error {}

/// Iterates over the fields of a protobuf message.
private struct ProtoReader {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
    }

    /// The next field, or nil at the end of the message.
    mutating func next() throws -> (field: Int, value: ProtoValue)? {
        guard !bytes.isEmpty else { return nil }
        let key = try varint()
        let field = Int(truncatingIfNeeded: key >> 3)
        switch key & 7 {
        case 0:
            return (field, .varint(try varint()))
        case 1:
            return (field, .fixed64(littleEndianValue(try take(8), as: UInt64.self)))
        case 2:
            let length = try varint()
            guard length <= UInt64(bytes.count) else { throw ProtoError() }
            return (field, .bytes(try take(Int(length))))
        case 5:
            return (field, .fixed32(littleEndianValue(try take(4), as: UInt32.self)))
        default:
            // Groups (wire types 3 and 4) are deprecated and never appear in Event.
            throw ProtoError()
        }
    }

    private mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while let byte = bytes.popFirst() {
            guard shift < 64 else { throw ProtoError() }
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
        }
        throw ProtoError()
    }

    private mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
        guard bytes.count >= count else { throw ProtoError() }
        defer { bytes = bytes.dropFirst(count) }
        return bytes.prefix(count)
    }
}

// MARK: - Byte helpers

private func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

/// Assembles `bytes` (exactly `T`'s size, least significant first) into a `T`.
private func littleEndianValue<T: FixedWidthInteger>(_ bytes: ArraySlice<UInt8>, as: T.Type) -> T {
    var value: T = 0
    for (i, byte) in bytes.enumerated() {
        value |= T(byte) << (8 * i)
    }
    return value
}

private func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
    return String(cString: buffer)
}
