import AsymViz
import CZlib
import Foundation
import XCTest

final class ImageTests: XCTestCase {
    func testDrawTextChangesPixels() {
        var image = RGBImage(width: 80, height: 20)
        let blank = image
        image.drawText("Ab1.e+%", x: 2, y: 2, color: .black)
        XCTAssertNotEqual(image, blank)
        // Only the text's bounding box may change.
        let size = RGBImage.textSize("Ab1.e+%")
        for y in 0..<image.height {
            for x in 0..<image.width where x < 2 || x >= 2 + size.width || y < 2 || y >= 2 + size.height {
                XCTAssertEqual(image.pixel(x: x, y: y), .white, "pixel (\(x), \(y)) outside the text changed")
            }
        }
    }

    func testDrawingClipsAtEdges() {
        var image = RGBImage(width: 10, height: 10, background: .black)
        image.drawLine(x0: -20, y0: -20, x1: 30, y1: 30, color: .white, thickness: 3)
        image.fillRect(x: 8, y: -5, width: 10, height: 10, color: .white)
        image.drawText("clipped", x: 6, y: 6, color: .white, scale: 3)
        XCTAssertEqual(image.pixel(x: 5, y: 5), .white)
        XCTAssertEqual(image.pixel(x: 9, y: 0), .white)
    }

    func testBlitCopiesAtOffset() {
        var image = RGBImage(width: 6, height: 6)
        let red = RGBColor(255, 0, 0)
        image.blit(RGBImage(width: 2, height: 2, background: red), x: 5, y: 1)
        XCTAssertEqual(image.pixel(x: 5, y: 1), red)
        XCTAssertEqual(image.pixel(x: 5, y: 2), red)
        XCTAssertEqual(image.pixel(x: 4, y: 1), .white)
        XCTAssertEqual(image.pixel(x: 5, y: 3), .white)
    }

    func testGrayscaleMapsRangeAndScales() {
        let image = RGBImage.grayscale(values: [-1, 0, 1, .nan], width: 2, height: 2, scale: 3)
        XCTAssertEqual(image.width, 6)
        XCTAssertEqual(image.height, 6)
        XCTAssertEqual(image.pixel(x: 0, y: 0), RGBColor(0, 0, 0))
        XCTAssertEqual(image.pixel(x: 5, y: 2), RGBColor(128, 128, 128))
        XCTAssertEqual(image.pixel(x: 2, y: 3), RGBColor(255, 255, 255))
        XCTAssertEqual(image.pixel(x: 4, y: 4), RGBColor(0, 0, 0), "NaN renders black")

        let constant = RGBImage.grayscale(values: [7, 7], width: 2, height: 1, scale: 1)
        XCTAssertEqual(constant.pixel(x: 1, y: 0), RGBColor(128, 128, 128))
    }

    func testPNGRoundTrip() throws {
        var image = RGBImage(width: 37, height: 23, background: RGBColor(10, 20, 30))
        for y in 0..<image.height {
            for x in 0..<image.width where (x + y) % 3 == 0 {
                image.setPixel(x: x, y: y, color: RGBColor(UInt8(x * 6), UInt8(y * 11), UInt8((x * y) % 256)))
            }
        }
        image.drawText("PNG", x: 3, y: 3, color: .white, scale: 2)

        let path = NSTemporaryDirectory() + "asymviz-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try writePNG(image, to: path)
        let png = try XCTUnwrap(FileManager.default.contents(atPath: path))

        let decoded = try decodePNG([UInt8](png))
        XCTAssertEqual(decoded.width, image.width)
        XCTAssertEqual(decoded.height, image.height)
        XCTAssertEqual(decoded.pixels, image.pixels)
    }

    func testWritePNGErrorNamesPath() {
        let path = "/nonexistent-dir-\(UUID().uuidString)/chart.png"
        XCTAssertThrowsError(try writePNG(RGBImage(width: 1, height: 1), to: path)) { error in
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
    }
}

/// A minimal PNG decoder for exactly what `encodePNG` produces: 8-bit RGB,
/// filter type 0 on every row. Verifies the signature and every chunk CRC.
private func decodePNG(_ png: [UInt8]) throws -> (width: Int, height: Int, pixels: [UInt8]) {
    struct DecodeError: Error, CustomStringConvertible { let description: String }
    func bigEndian(_ offset: Int) -> Int {
        png[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
    }

    guard png.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
        throw DecodeError(description: "bad signature")
    }
    var offset = 8
    var width = 0, height = 0
    var idat: [UInt8] = []
    var sawEnd = false
    while offset < png.count {
        let length = bigEndian(offset)
        let typeAndData = Array(png[(offset + 4)..<(offset + 8 + length)])
        let crc = typeAndData.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) }
        guard crc == bigEndian(offset + 8 + length) else { throw DecodeError(description: "chunk CRC mismatch") }
        let data = Array(typeAndData.dropFirst(4))
        switch String(decoding: typeAndData.prefix(4), as: UTF8.self) {
        case "IHDR":
            width = bigEndian(offset + 8)
            height = bigEndian(offset + 12)
            guard Array(data[8...]) == [8, 2, 0, 0, 0] else { throw DecodeError(description: "unexpected IHDR format") }
        case "IDAT":
            idat += data
        case "IEND":
            sawEnd = true
        default:
            break
        }
        offset += 12 + length
    }
    guard sawEnd else { throw DecodeError(description: "missing IEND") }

    let rowBytes = width * 3
    var raw = [UInt8](repeating: 0, count: height * (rowBytes + 1))
    var rawLength = uLongf(raw.count)
    guard uncompress(&raw, &rawLength, idat, uLong(idat.count)) == Z_OK, Int(rawLength) == raw.count else {
        throw DecodeError(description: "IDAT does not inflate to the expected size")
    }
    var pixels: [UInt8] = []
    for y in 0..<height {
        let rowStart = y * (rowBytes + 1)
        guard raw[rowStart] == 0 else { throw DecodeError(description: "row \(y) uses filter \(raw[rowStart])") }
        pixels += raw[(rowStart + 1)...(rowStart + rowBytes)]
    }
    return (width, height, pixels)
}
