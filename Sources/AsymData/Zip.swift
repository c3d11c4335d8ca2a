import CZlib

/// The members of a zip archive, as NumPy's `savez` (stored) and `savez_compressed`
/// (deflated) write them: found through the central directory (ZIP64 included, as NumPy writes
/// members of 4 GiB and more). Only the end of the file and the directory are read here; a
/// member is read when asked for, whole (`contents`, checked against its CRC-32) or in place
/// (`storedData`, for reads a batch at a time). Encrypted members and other compression
/// methods are refused.
struct ZipArchive {
    struct Member {
        let name: String
        let flags: Int, method: Int
        let crc: UInt32
        let compressedSize: Int, size: Int
        /// Where the member's local header starts.
        let headerOffset: Int
    }

    let file: ReadableFile
    /// In central-directory order.
    let members: [Member]

    var path: String { file.path }

    init(_ file: ReadableFile) throws {
        self.file = file
        let path = file.path
        // The end record lies in the last 64 KiB + 22 bytes (a comment may follow it).
        let tailStart = max(0, file.size - 22 - 0xFFFF)
        let tail = LittleEndian(bytes: try file.read(at: tailStart, file.size - tailStart, what: path), path: path)
        let end = try ZipArchive.endRecord(tail.bytes, startsLikeZip: try file.read(at: 0, min(4, file.size), what: path) == [0x50, 0x4B, 0x03, 0x04],
                                           path: path)
        var entries = try tail.int(at: end + 10, 2)
        var directorySize = try tail.int(at: end + 12, 4), directoryOffset = try tail.int(at: end + 16, 4)
        if entries == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            // ZIP64: a locator right before the end record points at the ZIP64 end record.
            guard end >= 20, try tail.int(at: end - 20, 4) == 0x0706_4B50 else {
                throw DataError.malformed(path: path, detail: "the zip end record asks for ZIP64 but no ZIP64 locator precedes it")
            }
            let end64 = try tail.int(at: end - 12, 8)
            let record = LittleEndian(bytes: try file.read(at: end64, min(56, max(0, file.size - end64)), what: path), path: path)
            guard try record.int(at: 0, 4) == 0x0606_4B50 else {
                throw DataError.malformed(path: path, detail: "no ZIP64 end record at offset \(end64)")
            }
            entries = try record.int(at: 32, 8)
            directorySize = try record.int(at: 40, 8)
            directoryOffset = try record.int(at: 48, 8)
        }
        guard directoryOffset <= file.size, directorySize <= file.size - directoryOffset else {
            throw DataError.truncated(path: path, detail: "the zip central directory lies past the end of the file")
        }
        let reader = LittleEndian(bytes: try file.read(at: directoryOffset, directorySize, what: path), path: path)
        var members: [Member] = []
        var at = 0
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

    /// The end-of-central-directory record's offset in `tail`, the file's last bytes: the last
    /// signature found.
    private static func endRecord(_ tail: [UInt8], startsLikeZip: Bool, path: String) throws -> Int {
        let signature: [UInt8] = [0x50, 0x4B, 0x05, 0x06]
        if tail.count >= 22 {
            for at in stride(from: tail.count - 22, through: 0, by: -1) where tail[at..<(at + 4)].elementsEqual(signature) {
                return at
            }
        }
        if startsLikeZip {
            throw DataError.truncated(path: path, detail: "the zip archive has no end record")
        }
        throw DataError.malformed(path: path, detail: "not a zip archive (an .npz file is one, as np.savez writes it)")
    }

    /// "data.npz: x_train.npy": how errors name a member.
    func name(_ m: Member) -> String { "\(path): \(m.name)" }

    /// Where the member's data starts in the file, after checking that it is neither encrypted
    /// nor cut off.
    private func dataOffset(_ m: Member) throws -> Int {
        let what = name(m)
        guard m.flags & 1 == 0 else { throw DataError.malformed(path: what, detail: "the member is encrypted") }
        let header = LittleEndian(bytes: try file.read(at: m.headerOffset, min(30, max(0, file.size - m.headerOffset)), what: what), path: what)
        guard try header.int(at: 0, 4) == 0x0403_4B50 else {
            throw DataError.malformed(path: what, detail: "no local zip header at offset \(m.headerOffset)")
        }
        let start = m.headerOffset + 30 + (try header.int(at: 26, 2)) + (try header.int(at: 28, 2))
        guard start <= file.size, m.compressedSize <= file.size - start else {
            throw DataError.truncated(path: what, detail: "the member's \(m.compressedSize) bytes run past the end of the file")
        }
        return start
    }

    /// Where a stored (uncompressed) member's `size` bytes lie in the file, for reads in place;
    /// nil for a deflated member, which can only be read whole. The CRC-32 is not checked: that
    /// would read the whole member.
    func storedData(of m: Member) throws -> Int? {
        let start = try dataOffset(m)
        switch m.method {
        case 0:
            guard m.compressedSize == m.size else {
                throw DataError.malformed(path: name(m), detail: "a stored member of \(m.compressedSize) bytes declares \(m.size)")
            }
            return start
        case 8:
            return nil
        default:
            throw DataError.malformed(path: name(m), detail: "compression method \(m.method) is not supported (np.savez stores, np.savez_compressed deflates)")
        }
    }

    /// The member's contents, inflated if deflated, checked against its CRC-32.
    func contents(of m: Member) throws -> [UInt8] {
        let what = name(m)
        let data: [UInt8]
        if let start = try storedData(of: m) {
            data = try file.read(at: start, m.size, what: what)
        } else {
            let raw = try file.read(at: try dataOffset(m), m.compressedSize, what: what)
            data = try raw.withUnsafeBytes { try inflate($0, size: m.size, path: what) }
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
