// Helpers that write .npy arrays and .npz archives byte for byte as NumPy does, so that the
// loader tests need neither Python nor NumPy.
import CZlib
import Foundation
import XCTest

func littleEndian(_ value: Int, _ width: Int) -> [UInt8] {
    (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
}

/// A .npy file as `np.save` writes it: format 1.0, the header dict padded with spaces and a
/// newline so that the data starts at a multiple of 64 bytes.
func npy(_ descr: String, _ shape: [Int], _ data: [UInt8], fortranOrder: Bool = false) -> [UInt8] {
    let shapeText = "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
    var header = "{'descr': '\(descr)', 'fortran_order': \(fortranOrder ? "True" : "False"), 'shape': \(shapeText), }"
    header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
    return [0x93] + Array("NUMPY".utf8) + [1, 0] + littleEndian(header.utf8.count, 2) + Array(header.utf8) + data
}

func npy(_ values: [UInt8], _ shape: [Int]) -> [UInt8] { npy("|u1", shape, values) }
func npy(_ values: [Float], _ shape: [Int]) -> [UInt8] { npy("<f4", shape, values.flatMap { littleEndian(Int($0.bitPattern), 4) }) }
func npy(_ values: [Double], _ shape: [Int]) -> [UInt8] { npy("<f8", shape, values.flatMap { littleEndian(Int(bitPattern: UInt($0.bitPattern)), 8) }) }
func npy(_ values: [Int64], _ shape: [Int]) -> [UInt8] { npy("<i8", shape, values.flatMap { littleEndian(Int($0), 8) }) }

/// Raw deflate (no zlib header), as zip members hold it.
func rawDeflate(_ input: [UInt8]) -> [UInt8] {
    var stream = z_stream()
    precondition(deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY,
                               zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK)
    defer { deflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))))
    var input = input
    let status = input.withUnsafeMutableBufferPointer { i in
        output.withUnsafeMutableBufferPointer { o in
            stream.next_in = i.baseAddress; stream.avail_in = uInt(i.count)
            stream.next_out = o.baseAddress; stream.avail_out = uInt(o.count)
            return deflate(&stream, Z_FINISH)
        }
    }
    precondition(status == Z_STREAM_END)
    return Array(output.prefix(Int(stream.total_out)))
}

/// A zip archive as `np.savez` (stored) or `np.savez_compressed` (deflated) writes one through
/// Python's zipfile: NumPy forces ZIP64, so every local header holds all-ones sizes and a ZIP64
/// extra field with the real ones; the central directory holds plain 32-bit values. With
/// `zip64Directory` the central directory and end records are ZIP64 too, as zipfile writes
/// them for members past 4 GiB.
func npzArchive(_ members: [(name: String, bytes: [UInt8])], deflated: Bool, zip64Directory: Bool = false) -> [UInt8] {
    var file: [UInt8] = [], directory: [UInt8] = []
    let method = deflated ? 8 : 0
    for (name, bytes) in members {
        let data = deflated ? rawDeflate(bytes) : bytes
        let crc = Int(bytes.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
        directory += zipDirectoryEntry(name, method: method, crc: crc, size: bytes.count, compressed: data.count, offset: file.count,
                                       zip64: zip64Directory)
        file += zipLocalHeader(name, method: method, crc: crc, size: bytes.count, compressed: data.count) + data
    }
    return file + directory + zipEndRecords(entries: members.count, directory: directory.count, at: file.count, zip64: zip64Directory)
}

private let zipTime = littleEndian(0x5A00, 2), zipDate = littleEndian(0x5B21, 2)

/// A member's local header as Python's zipfile writes it for NumPy (which forces ZIP64): all-ones
/// sizes and a ZIP64 extra field with the real ones.
func zipLocalHeader(_ name: String, method: Int, crc: Int, size: Int, compressed: Int) -> [UInt8] {
    var h = littleEndian(0x0403_4B50, 4) + littleEndian(45, 2) + littleEndian(0, 2) + littleEndian(method, 2) + zipTime + zipDate
    h += littleEndian(crc, 4) + littleEndian(0xFFFF_FFFF, 4) + littleEndian(0xFFFF_FFFF, 4)
    h += littleEndian(name.utf8.count, 2) + littleEndian(20, 2) + Array(name.utf8)
    return h + littleEndian(1, 2) + littleEndian(16, 2) + littleEndian(size, 8) + littleEndian(compressed, 8)
}

/// A member's central directory entry: 32-bit values, or (`zip64`) all ones and a ZIP64 extra field.
func zipDirectoryEntry(_ name: String, method: Int, crc: Int, size: Int, compressed: Int, offset: Int, zip64: Bool) -> [UInt8] {
    let wide = zip64 ? 0xFFFF_FFFF : nil
    var d = littleEndian(0x0201_4B50, 4) + littleEndian(0x032D, 2) + littleEndian(45, 2) + littleEndian(0, 2)
    d += littleEndian(method, 2) + zipTime + zipDate + littleEndian(crc, 4)
    d += littleEndian(wide ?? compressed, 4) + littleEndian(wide ?? size, 4)
    d += littleEndian(name.utf8.count, 2) + littleEndian(zip64 ? 28 : 0, 2) + littleEndian(0, 2)
    d += littleEndian(0, 2) + littleEndian(0, 2) + littleEndian(0x0180_0000, 4) + littleEndian(wide ?? offset, 4)
    d += Array(name.utf8)
    if zip64 {
        d += littleEndian(1, 2) + littleEndian(24, 2) + littleEndian(size, 8) + littleEndian(compressed, 8) + littleEndian(offset, 8)
    }
    return d
}

/// The end records after a central directory of `directory` bytes at offset `at` (with `zip64`,
/// the ZIP64 end record and locator first).
func zipEndRecords(entries: Int, directory: Int, at directoryOffset: Int, zip64: Bool) -> [UInt8] {
    var e: [UInt8] = []
    if zip64 {
        let end64 = directoryOffset + directory
        e += littleEndian(0x0606_4B50, 4) + littleEndian(44, 8) + littleEndian(45, 2) + littleEndian(45, 2)
        e += littleEndian(0, 4) + littleEndian(0, 4) + littleEndian(entries, 8) + littleEndian(entries, 8)
        e += littleEndian(directory, 8) + littleEndian(directoryOffset, 8)
        e += littleEndian(0x0706_4B50, 4) + littleEndian(0, 4) + littleEndian(end64, 8) + littleEndian(1, 4)
    }
    e += littleEndian(0x0605_4B50, 4) + littleEndian(0, 2) + littleEndian(0, 2)
    e += littleEndian(zip64 ? 0xFFFF : entries, 2) + littleEndian(zip64 ? 0xFFFF : entries, 2)
    e += littleEndian(zip64 ? 0xFFFF_FFFF : directory, 4)
    return e + littleEndian(zip64 ? 0xFFFF_FFFF : directoryOffset, 4) + littleEndian(0, 2)
}

/// Writes a stored .npz of `x.npy` and `y.npy` too large to build in memory: `x` is the .npy
/// header (written with no data), followed by `xBytes` bytes `pixel(0)`, `pixel(1)`, ...,
/// generated and written 1 MiB at a time (twice: once for the CRC-32, once to write them).
func writeLargeStoredNPZ(_ path: String, x: [UInt8], xBytes: Int, pixel: (Int) -> UInt8, y: [UInt8]) throws {
    func chunks(_ body: ([UInt8]) throws -> Void) rethrows {
        try body(x)
        for start in stride(from: 0, to: xBytes, by: 1 << 20) {
            try body((start..<min(start + (1 << 20), xBytes)).map(pixel))
        }
    }
    var crc: uLong = 0
    chunks { c in crc = c.withUnsafeBufferPointer { crc32(crc, $0.baseAddress, uInt($0.count)) } }
    guard let file = FileHandle(forWritingAtPath: path) ?? {
        FileManager.default.createFile(atPath: path, contents: nil)
        return FileHandle(forWritingAtPath: path)
    }() else { throw CocoaError(.fileWriteUnknown) }
    defer { try? file.close() }
    let xSize = x.count + xBytes
    let yCRC = Int(y.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
    try file.write(contentsOf: zipLocalHeader("x.npy", method: 0, crc: Int(crc), size: xSize, compressed: xSize))
    try chunks { try file.write(contentsOf: $0) }
    let yOffset = Int(try file.offset())
    try file.write(contentsOf: zipLocalHeader("y.npy", method: 0, crc: yCRC, size: y.count, compressed: y.count) + y)
    let directory = zipDirectoryEntry("x.npy", method: 0, crc: Int(crc), size: xSize, compressed: xSize, offset: 0, zip64: false)
        + zipDirectoryEntry("y.npy", method: 0, crc: yCRC, size: y.count, compressed: y.count, offset: yOffset, zip64: false)
    let directoryOffset = Int(try file.offset())
    try file.write(contentsOf: directory + zipEndRecords(entries: 2, directory: directory.count, at: directoryOffset, zip64: false))
}
