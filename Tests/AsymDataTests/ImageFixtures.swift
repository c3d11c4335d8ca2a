// Test images: PNGs written byte by byte here (any colour type, filter and bit depth) and small
// JPEGs written by PIL, so that the image folder tests need neither Python nor PIL.
import CZlib
import Foundation

/// A PNG written here with any row filter, colour type and bit depth (the project's writer,
/// AsymViz, uses filter 0 and 8-bit RGB only). `channels` is bytes per pixel (2 for 16-bit
/// gray); `palette` (RGB triples) goes into a PLTE chunk.
func pngFile(width: Int, height: Int, channels: Int, pixels: [UInt8], filters: [UInt8] = [0],
             colourType: UInt8? = nil, bitDepth: UInt8 = 8, palette: [UInt8]? = nil, idatChunks: Int = 1) -> [UInt8] {
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
    png += chunk("IHDR", bigEndian(width) + bigEndian(height) + [bitDepth, colourType ?? (channels == 1 ? 0 : 2), 0, 0, 0])
    if let palette { png += chunk("PLTE", palette) }
    png += chunk("tEXt", Array("Comment\0ancillary chunks are skipped".utf8))
    let part = (compressed.count + idatChunks - 1) / idatChunks
    for start in Swift.stride(from: 0, to: compressed.count, by: part) {
        png += chunk("IDAT", Array(compressed[start..<min(start + part, compressed.count)]))
    }
    return png + chunk("IEND", [])
}

/// JPEGs written by PIL (quality 90) and the pixels PIL decodes them to: libjpeg-turbo's
/// default decode, which the loader must match.
enum JPEGFixture {
    /// 4 x 3 grayscale.
    static let gray = Data(base64Encoded: "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/wAALCAADAAQBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/APpj4bfsw/Cv/hErT/iiNL/74b0HvX//2Q==")!
    static let grayPixels: [UInt8] = [9, 32, 49, 71, 89, 112, 129, 151, 168, 191, 208, 230]
    /// 4 x 3 RGB (YCbCr, 4:2:0), pixels interleaved.
    static let rgb = Data(base64Encoded: "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAADAAQDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwCvfeKdX1Bonk1CeIqpQC1byFwHbGVj2gn3Iz09KKKK+Sx9CjTxEowgklbRJdkfpGTZHlVbLsPUqYSnKTjG7cItvTvY/9k=")!
    static let rgbPixels: [UInt8] = [85, 196, 68, 90, 201, 73, 133, 190, 109, 130, 187, 106, 116, 227, 99, 125, 236, 108,
                                     164, 221, 140, 78, 135, 54, 87, 128, 110, 77, 118, 100, 168, 104, 138, 154, 90, 124]
    /// 5 x 3 grayscale, all 100: one pixel too wide for the others.
    static let wide = Data(base64Encoded: "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/wAALCAADAAUBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/APNK/9k=")!
}
