import AsymData
import CZlib
import XCTest

/// A PNG written here with every row filter PNG has (the project's writer, AsymViz, uses
/// filter 0 and RGB only), and with the header fields the reader must refuse.
func pngFile(width: Int, height: Int, channels: Int, pixels: [UInt8], filters: [UInt8] = [0],
             colourType: UInt8? = nil, bitDepth: UInt8 = 8, interlace: UInt8 = 0, idatChunks: Int = 1) -> [UInt8] {
    func bigEndian(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return bigEndian(data.count) + body + bigEndian(Int(body.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) }))
    }
    let stride = width * channels
    func at(_ y: Int, _ i: Int) -> Int { y < 0 || i < 0 ? 0 : Int(pixels[y * stride + i]) }
    var raw: [UInt8] = []
    for y in 0..<height {
        let filter = filters[y % filters.count]
        raw.append(filter)
        for i in 0..<stride {
            let (a, b, c) = (at(y, i - channels), at(y - 1, i), at(y - 1, i - channels))
            let p = a + b - c
            let paeth = abs(p - a) <= abs(p - b) && abs(p - a) <= abs(p - c) ? a : abs(p - b) <= abs(p - c) ? b : c
            let predictor = [0, a, b, (a + b) / 2, paeth][Int(min(filter, 4))]
            raw.append(UInt8(truncatingIfNeeded: at(y, i) - predictor))
        }
    }
    var compressed = [UInt8](repeating: 0, count: Int(compressBound(uLong(raw.count))))
    var length = uLongf(compressed.count)
    precondition(compress2(&compressed, &length, raw, uLong(raw.count), 9) == Z_OK)
    compressed.removeSubrange(Int(length)...)
    var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    png += chunk("IHDR", bigEndian(width) + bigEndian(height) + [bitDepth, colourType ?? (channels == 1 ? 0 : 2), 0, 0, interlace])
    png += chunk("tEXt", Array("Comment\0ancillary chunks are skipped".utf8))
    let part = (compressed.count + idatChunks - 1) / idatChunks
    for start in Swift.stride(from: 0, to: compressed.count, by: part) {
        png += chunk("IDAT", Array(compressed[start..<min(start + part, compressed.count)]))
    }
    return png + chunk("IEND", [])
}

final class PNGReaderTests: XCTestCase {
    func testEveryRowFilterDecodes() throws {
        var rng = SystemRandomNumberGenerator()
        for channels in [1, 3] {
            let (width, height) = (7, 10)
            let pixels = (0..<(width * height * channels)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let png = pngFile(width: width, height: height, channels: channels, pixels: pixels, filters: [0, 1, 2, 3, 4],
                              idatChunks: 3)
            let image = try decodePNG(png, path: "x.png")
            XCTAssertEqual([image.width, image.height, image.channels], [width, height, channels])
            XCTAssertEqual(image.pixels, pixels, "\(channels) channels")
        }
    }

    /// What the reader refuses, each with one line naming the file.
    func testRefusedAndDamagedFiles() {
        let pixels = [UInt8](repeating: 100, count: 4 * 3 * 3)
        let good = pngFile(width: 4, height: 3, channels: 3, pixels: pixels)
        let cases: [([UInt8], [String])] = [
            (Array("GIF89a, not a PNG".utf8), ["not a PNG file"]),
            (Array(good.prefix(good.count - 20)), ["truncated"]),
            (good.enumerated().map { $0 == 60 ? $1 ^ 1 : $1 }, ["fails its CRC-32 check"]),
            (pngFile(width: 4, height: 3, channels: 3, pixels: pixels, colourType: 6), ["colour type 6 (RGBA)", "8-bit grayscale or RGB"]),
            (pngFile(width: 4, height: 3, channels: 3, pixels: pixels, colourType: 3), ["colour type 3 (palette)"]),
            (pngFile(width: 4, height: 3, channels: 3, pixels: pixels, bitDepth: 16), ["bit depth 16"]),
            (pngFile(width: 4, height: 3, channels: 3, pixels: pixels, interlace: 1), ["interlaced"]),
            (pngFile(width: 4, height: 3, channels: 3, pixels: pixels, filters: [0, 5]), ["row 1 has the unknown filter type 5"]),
            (pngFile(width: 4, height: 3, channels: 1, pixels: pixels, colourType: 2), ["holds 15 bytes, not the 39 expected"]),
        ]
        for (bytes, expected) in cases {
            assertDataError(["bad.png"] + expected) { try decodePNG(bytes, path: "bad.png") }
        }
    }
}
