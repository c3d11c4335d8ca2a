import CZlib

/// The members of a zip archive held in memory, as NumPy's `savez` (stored) and
/// `savez_compressed` (deflated) write them: found through the central directory (ZIP64
/// included, as NumPy writes members of 4 GiB and more), each checked against its CRC-32
/// when read. Encrypted members and other compression methods are refused.
struct ZipArchive {
    struct Member {
        let name: String
        let flags: Int, method: Int
        let crc: UInt32
        let compressedSize: Int, size: Int
        /// Where the member's local header starts.
        let headerOffset: Int
    }

    let path: String
    let bytes: [UInt8]
    /// In central-directory order.
    let members: [Member]

    init(path: String, bytes: [UInt8]) throws {
        self.path = path
        self.bytes = bytes
        let reader = LittleEndian(bytes: bytes, path: path)
        let end = try ZipArchive.endRecord(bytes, path: path)
        var entries = try reader.int(at: end + 10, 2)
        var directorySize = try reader.int(at: end + 12, 4), directoryOffset = try reader.int(at: end + 16, 4)
        if entries == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            // ZIP64: a locator right before the end record points at the ZIP64 end record.
            guard end >= 20, try reader.int(at: end - 20, 4) == 0x0706_4B50 else {
                throw DataError.malformed(path: path, detail: "the zip end record asks for ZIP64 but no ZIP64 locator precedes it")
            }
            let end64 = try reader.int(at: end - 12, 8)
            guard try reader.int(at: end64, 4) == 0x0606_4B50 else {
                throw DataError.malformed(path: path, detail: "no ZIP64 end record at offset \(end64)")
            }
            entries = try reader.int(at: end64 + 32, 8)
            directorySize = try reader.int(at: end64 + 40, 8)
            directoryOffset = try reader.int(at: end64 + 48, 8)
        }
        guard directoryOffset <= bytes.count, directorySize <= bytes.count - directoryOffset else {
            throw DataError.truncated(path: path, detail: "the zip central directory lies past the end of the file")
        }
        var members: [Member] = []
        var at = directoryOffset
        for _ in 0..<entries {
            guard try reader.int(at: at, 4) == 0x0201_4B50 else {
                throw DataError.malformed(path: path, detail: "zip central directory entry \(members.count) is damaged")
            }
            let nameLength = try reader.int(at: at + 28, 2), extraLength = try reader.int(at: at + 30, 2)
            let commentLength = try reader.int(at: at + 32, 2)
            let name = String(decoding: try reader.slice(at: at + 46, nameLength), as: UTF8.self)
            var size = try reader.int(at: at + 24, 4), compressed = try reader.int(at: at + 20, 4)
            var offset = try reader.int(at: at + 42, 4)
            // The ZIP64 extra field (id 1) holds, in this order, each value whose 32-bit field is all ones.
            var extra = at + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = try reader.int(at: extra, 2), length = try reader.int(at: extra + 2, 2)
                if id == 1 {
                    var field = extra + 4
                    func widen(_ value: inout Int) throws {
                        guard value == 0xFFFF_FFFF else { return }
                        value = try reader.int(at: field, 8)
                        field += 8
                    }
                    try widen(&size)
                    try widen(&compressed)
                    try widen(&offset)
                }
                extra += 4 + length
            }
            members.append(Member(name: name, flags: try reader.int(at: at + 8, 2), method: try reader.int(at: at + 10, 2),
                                  crc: UInt32(try reader.int(at: at + 16, 4)), compressedSize: compressed, size: size,
                                  headerOffset: offset))
            at = extraEnd + commentLength
        }
        self.members = members
    }

    /// The end-of-central-directory record: the last one in the final 64 KiB + 22 bytes (a
    /// comment may follow it).
    private static func endRecord(_ bytes: [UInt8], path: String) throws -> Int {
        let signature: [UInt8] = [0x50, 0x4B, 0x05, 0x06]
        if bytes.count >= 22 {
            for at in stride(from: bytes.count - 22, through: max(0, bytes.count - 22 - 0xFFFF), by: -1)
            where bytes[at..<(at + 4)].elementsEqual(signature) {
                return at
            }
        }
        if bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            throw DataError.truncated(path: path, detail: "the zip archive has no end record (\(bytes.count) bytes)")
        }
        throw DataError.malformed(path: path, detail: "not a zip archive (an .npz file is one, as np.savez writes it)")
    }

    /// The member's contents, inflated if deflated, checked against its CRC-32.
    func contents(of m: Member) throws -> [UInt8] {
        let what = "\(path): \(m.name)"
        guard m.flags & 1 == 0 else { throw DataError.malformed(path: what, detail: "the member is encrypted") }
        let reader = LittleEndian(bytes: bytes, path: what)
        guard try reader.int(at: m.headerOffset, 4) == 0x0403_4B50 else {
            throw DataError.malformed(path: what, detail: "no local zip header at offset \(m.headerOffset)")
        }
        let start = m.headerOffset + 30 + (try reader.int(at: m.headerOffset + 26, 2)) + (try reader.int(at: m.headerOffset + 28, 2))
        guard start <= bytes.count, m.compressedSize <= bytes.count - start else {
            throw DataError.truncated(path: what, detail: "the member's \(m.compressedSize) bytes run past the end of the file")
        }
        let data: [UInt8]
        switch m.method {
        case 0:
            guard m.compressedSize == m.size else {
                throw DataError.malformed(path: what, detail: "a stored member of \(m.compressedSize) bytes declares \(m.size)")
            }
            data = Array(bytes[start..<(start + m.size)])
        case 8:
            data = try bytes.withUnsafeBytes { b in
                try inflate(UnsafeRawBufferPointer(rebasing: b[start..<(start + m.compressedSize)]), zlib: false, size: m.size, path: what)
            }
        default:
            throw DataError.malformed(path: what, detail: "compression method \(m.method) is not supported (np.savez stores, np.savez_compressed deflates)")
        }
        let crc = data.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) }
        guard UInt32(crc) == m.crc else {
            throw DataError.malformed(path: what, detail: "the member fails its CRC-32 check; the file is damaged")
        }
        return data
    }
}

/// Bounds-checked little-endian reads from a file's bytes: a read past the end is a
/// `DataError.truncated` naming `path`.
struct LittleEndian {
    let bytes: [UInt8]
    let path: String

    func slice(at offset: Int, _ count: Int) throws -> ArraySlice<UInt8> {
        guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else {
            throw DataError.truncated(path: path, detail: "expected \(count) bytes at offset \(offset), the file has \(bytes.count)")
        }
        return bytes[offset..<(offset + count)]
    }

    /// An unsigned integer of `width` bytes (at most 8; one above Int.max is an error).
    func int(at offset: Int, _ width: Int) throws -> Int {
        let value = try slice(at: offset, width).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard let v = Int(exactly: value) else {
            throw DataError.malformed(path: path, detail: "the value \(value) at offset \(offset) is out of range")
        }
        return v
    }
}
