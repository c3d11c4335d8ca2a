// Helpers that write .npy arrays and .npz archives byte for byte as NumPy does, so that the
// loader tests need neither Python nor NumPy.
import CZlib
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
    let method = deflated ? 8 : 0, time = littleEndian(0x5A00, 2), date = littleEndian(0x5B21, 2)
    for (name, bytes) in members {
        let data = deflated ? rawDeflate(bytes) : bytes
        let crc = Int(bytes.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
        let offset = file.count
        file += littleEndian(0x0403_4B50, 4) + littleEndian(45, 2) + littleEndian(0, 2) + littleEndian(method, 2) + time + date
        file += littleEndian(crc, 4) + littleEndian(0xFFFF_FFFF, 4) + littleEndian(0xFFFF_FFFF, 4)
        file += littleEndian(name.utf8.count, 2) + littleEndian(20, 2) + Array(name.utf8)
        file += littleEndian(1, 2) + littleEndian(16, 2) + littleEndian(bytes.count, 8) + littleEndian(data.count, 8)
        file += data
        let wide = zip64Directory ? 0xFFFF_FFFF : nil
        directory += littleEndian(0x0201_4B50, 4) + littleEndian(0x032D, 2) + littleEndian(45, 2) + littleEndian(0, 2)
        directory += littleEndian(method, 2) + time + date + littleEndian(crc, 4)
        directory += littleEndian(wide ?? data.count, 4) + littleEndian(wide ?? bytes.count, 4)
        directory += littleEndian(name.utf8.count, 2) + littleEndian(zip64Directory ? 28 : 0, 2) + littleEndian(0, 2)
        directory += littleEndian(0, 2) + littleEndian(0, 2) + littleEndian(0x0180_0000, 4) + littleEndian(wide ?? offset, 4)
        directory += Array(name.utf8)
        if zip64Directory {
            directory += littleEndian(1, 2) + littleEndian(24, 2) + littleEndian(bytes.count, 8) + littleEndian(data.count, 8)
                + littleEndian(offset, 8)
        }
    }
    let directoryOffset = file.count
    file += directory
    if zip64Directory {
        let end64 = file.count
        file += littleEndian(0x0606_4B50, 4) + littleEndian(44, 8) + littleEndian(45, 2) + littleEndian(45, 2)
        file += littleEndian(0, 4) + littleEndian(0, 4) + littleEndian(members.count, 8) + littleEndian(members.count, 8)
        file += littleEndian(directory.count, 8) + littleEndian(directoryOffset, 8)
        file += littleEndian(0x0706_4B50, 4) + littleEndian(0, 4) + littleEndian(end64, 8) + littleEndian(1, 4)
    }
    file += littleEndian(0x0605_4B50, 4) + littleEndian(0, 2) + littleEndian(0, 2)
    file += littleEndian(zip64Directory ? 0xFFFF : members.count, 2) + littleEndian(zip64Directory ? 0xFFFF : members.count, 2)
    file += littleEndian(zip64Directory ? 0xFFFF_FFFF : directory.count, 4)
    file += littleEndian(zip64Directory ? 0xFFFF_FFFF : directoryOffset, 4) + littleEndian(0, 2)
    return file
}
