import CZlib
import Foundation

/// Encodes `image` as a PNG: 8-bit RGB, no interlacing, filter type 0 (None)
/// on every row, and one zlib-compressed IDAT chunk.
package func encodePNG(_ image: RGBImage) -> [UInt8] {
    var header: [UInt8] = []
    header += bigEndianBytes(UInt32(image.width))
    header += bigEndianBytes(UInt32(image.height))
    // Bit depth 8, colour type 2 (RGB), deflate compression, adaptive filtering, no interlace.
    header += [8, 2, 0, 0, 0]

    // Each scanline is preceded by its filter-type byte; 0 leaves the row as is.
    let rowBytes = image.width * 3
    var raw: [UInt8] = []
    raw.reserveCapacity(image.height * (rowBytes + 1))
    for y in 0..<image.height {
        raw.append(0)
        raw += image.pixels[(y * rowBytes)..<((y + 1) * rowBytes)]
    }

    var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    png += pngChunk("IHDR", header)
    png += pngChunk("IDAT", zlibCompress(raw))
    png += pngChunk("IEND", [])
    return png
}

/// Writes `image` as a PNG file at `path`, replacing any existing file.
package func writePNG(_ image: RGBImage, to path: String) throws {
    do {
        try Data(encodePNG(image)).write(to: URL(fileURLWithPath: path))
    } catch {
        throw AsymVizError.io(path: path, reason: "cannot write PNG: \(error.localizedDescription)")
    }
}

/// A PNG chunk: length, type, data, then the CRC-32 of type and data.
private func pngChunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    let typeAndData = Array(type.utf8) + data
    let crc = typeAndData.withUnsafeBufferPointer { buffer in
        crc32(0, buffer.baseAddress, uInt(buffer.count))
    }
    return bigEndianBytes(UInt32(data.count)) + typeAndData + bigEndianBytes(UInt32(crc))
}

private func zlibCompress(_ input: [UInt8]) -> [UInt8] {
    var output = [UInt8](repeating: 0, count: Int(compressBound(uLong(input.count))))
    var outputLength = uLongf(output.count)
    let status = compress2(&output, &outputLength, input, uLong(input.count), Z_DEFAULT_COMPRESSION)
    // compressBound guarantees room, so failure can only mean zlib ran out of memory.
    precondition(status == Z_OK, "zlib compress2 failed with status \(status)")
    return Array(output[0..<Int(outputLength)])
}

private func bigEndianBytes(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
}
