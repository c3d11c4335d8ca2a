import CZlib

/// An 8-bit image decoded from a PNG: `channels` (1, grayscale, or 3, RGB) bytes per pixel,
/// interleaved, row after row.
package struct PNGImage {
    package let width: Int, height: Int, channels: Int
    package let pixels: [UInt8]
}

/// Decodes a non-interlaced 8-bit grayscale or RGB PNG (colour types 0 and 2), checking every
/// chunk's CRC-32. Anything else (palette, alpha, 16-bit, interlaced, damaged or cut off) is a
/// `DataError` naming `path` and what is wrong.
package func decodePNG(_ bytes: [UInt8], path: String) throws -> PNGImage {
    func malformed(_ detail: String) -> DataError { DataError.malformed(path: path, detail: detail) }
    guard bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
        throw malformed("not a PNG file (it does not start with the PNG signature)")
    }
    var header: (width: Int, height: Int, channels: Int)?
    var compressed: [UInt8] = []
    var at = 8, ended = false
    while !ended {
        guard bytes.count - at >= 12 else { throw DataError.truncated(path: path, detail: "the PNG ends without an IEND chunk") }
        let length = bigEndian(bytes, at), typeBytes = bytes[(at + 4)..<(at + 8)]
        let type = String(decoding: typeBytes, as: UTF8.self)
        guard length <= bytes.count - at - 12 else {
            throw DataError.truncated(path: path, detail: "the \(type) chunk runs past the end of the file")
        }
        let data = (at + 8)..<(at + 8 + length)
        let crc = bytes.withUnsafeBufferPointer { crc32(0, $0.baseAddress! + at + 4, uInt(4 + length)) }
        guard UInt32(crc) == UInt32(bigEndian(bytes, data.upperBound)) else {
            throw malformed("the \(type) chunk fails its CRC-32 check; the file is damaged")
        }
        switch type {
        case "IHDR":
            guard header == nil, length == 13 else { throw malformed("the IHDR chunk is repeated or not 13 bytes long") }
            header = try pngHeader(Array(bytes[data]), malformed)
        case "IDAT":
            compressed += bytes[data]
        case "IEND":
            ended = true
        default:
            // A critical chunk (capitalised) that we do not know changes how the image reads;
            // PLTE is only a suggested palette for RGB.
            if typeBytes.first.map({ $0 >= 0x41 && $0 <= 0x5A }) == true && type != "PLTE" {
                throw malformed("unknown critical chunk \(type)")
            }
        }
        guard header != nil else { throw malformed("the PNG does not start with an IHDR chunk") }
        at = data.upperBound + 4
    }
    let (width, height, channels) = header!
    let stride = width * channels
    let raw = try compressed.withUnsafeBytes { try inflate($0, zlib: true, size: height * (stride + 1), path: path) }
    // Undo each row's filter (PNG spec §9): a = the byte one pixel left, b = the byte above,
    // c = the byte above and left, 0 beyond the image.
    var pixels = [UInt8](repeating: 0, count: height * stride)
    for y in 0..<height {
        let filter = raw[y * (stride + 1)], line = y * (stride + 1) + 1, row = y * stride
        for i in 0..<stride {
            let x = raw[line + i]
            let a = i >= channels ? pixels[row + i - channels] : 0
            let b = y > 0 ? pixels[row - stride + i] : 0
            let c = i >= channels && y > 0 ? pixels[row - stride + i - channels] : 0
            switch filter {
            case 0: pixels[row + i] = x
            case 1: pixels[row + i] = x &+ a
            case 2: pixels[row + i] = x &+ b
            case 3: pixels[row + i] = x &+ UInt8((Int(a) + Int(b)) / 2)
            case 4: pixels[row + i] = x &+ paeth(a, b, c)
            default: throw malformed("row \(y) has the unknown filter type \(filter)")
            }
        }
    }
    return PNGImage(width: width, height: height, channels: channels, pixels: pixels)
}

/// Width, height and channels from IHDR's 13 bytes, refusing what `decodePNG` does not read.
private func pngHeader(_ h: [UInt8], _ malformed: (String) -> DataError) throws -> (Int, Int, Int) {
    let width = bigEndian(h, 0), height = bigEndian(h, 4)
    let (depth, colour, interlace) = (h[8], h[9], h[12])
    let colours: [UInt8: String] = [0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale with alpha", 6: "RGBA"]
    guard colour == 0 || colour == 2 else {
        throw malformed("PNG colour type \(colour) (\(colours[colour] ?? "invalid")) is not supported; save the images as 8-bit grayscale or RGB")
    }
    guard depth == 8 else { throw malformed("PNG bit depth \(depth) is not supported; save the images with 8 bits per channel") }
    guard h[10] == 0, h[11] == 0 else { throw malformed("unknown PNG compression or filter method") }
    guard interlace == 0 else { throw malformed("interlaced (Adam7) PNGs are not supported; save the images without interlacing") }
    let channels = colour == 0 ? 1 : 3
    // Sizes any image model takes are far below this; a header beyond it is damaged.
    guard width > 0, height > 0, width <= 1 << 15, height <= 1 << 15 else {
        throw malformed("the PNG declares \(width) x \(height) pixels; 1 to 32768 each are read")
    }
    return (width, height, channels)
}

/// The Paeth predictor (PNG spec §9.4): whichever of a, b, c is closest to a + b - c.
private func paeth(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8 {
    let p = Int(a) + Int(b) - Int(c)
    let (pa, pb, pc) = (abs(p - Int(a)), abs(p - Int(b)), abs(p - Int(c)))
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

private func bigEndian(_ bytes: [UInt8], _ at: Int) -> Int {
    Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
}
