import AsymData
import Foundation
import XCTest

/// `loadImageFolder`: `train/<class>/*` and `test/<class>/*` (PNG, JPEG), classes in name order.
final class ImageFolderTests: XCTestCase {
    /// A 4 x 3 image whose every byte is distinct within the folder: (seed + i * 3) % 256.
    func image(_ seed: Int, channels: Int) -> [UInt8] { (0..<(12 * channels)).map { UInt8((seed + $0 * 3) % 256) } }

    func writeImage(_ root: String, _ relative: String, _ pixels: [UInt8], channels: Int, width: Int = 4, height: Int = 3) throws {
        let path = "\(root)/\(relative)"
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try writeFile(path, pngFile(width: width, height: height, channels: channels, pixels: pixels, filters: [1, 4, 2]))
    }

    /// NCHW bytes of an interleaved image (a grayscale one repeated in every channel).
    func planes(_ pixels: [UInt8], channels: Int, to outChannels: Int) -> [UInt8] {
        (0..<outChannels).flatMap { c in (0..<12).map { pixels[$0 * channels + (channels == 1 ? 0 : c)] } }
    }

    func testClassesInNameOrderAndValuesExact() throws {
        let root = try makeTemporaryDirectory(self)
        // Written out of order: classes and files are read sorted by name.
        try writeImage(root, "train/dog/2.png", image(10, channels: 1), channels: 1)
        try writeImage(root, "train/dog/10.png", image(20, channels: 1), channels: 1)
        try writeImage(root, "train/cat/x.png", image(30, channels: 1), channels: 1)
        try writeImage(root, "train/ant/a.png", image(40, channels: 1), channels: 1)
        try writeImage(root, "test/dog/t.png", image(50, channels: 1), channels: 1)
        try writeFile("\(root)/train/cat/.DS_Store", [1, 2, 3])
        try writeFile("\(root)/train/README.txt", Array("files beside the class folders are ignored".utf8))
        let (train, test) = try loadImageFolder(directory: root, input: [1, 3, 4], normalization: nil)
        XCTAssertEqual(train.labels, [0, 1, 2, 2], "ant, cat, dog; dog's 10.png before 2.png")
        XCTAssertEqual(train.classes, 3)
        guard case .files = train.pixels else { return XCTFail("images stay in their files") }
        XCTAssertEqual(train.images, [40, 30, 20, 10].flatMap { image($0, channels: 1) }.map { Float($0) / 255 })
        XCTAssertEqual(test.labels, [2], "a test class takes its training number")
        XCTAssertEqual(test.images, image(50, channels: 1).map { Float($0) / 255 })
    }

    /// JPEGs decode as PIL decodes them; palette, 16-bit, gray + alpha and RGBA PNGs become
    /// 8-bit gray or RGB (alpha dropped, as PIL's convert("RGB")), then fill three channels.
    func testJPEGAndConvertedPNGs() throws {
        let root = try makeTemporaryDirectory(self)
        func write(_ relative: String, _ bytes: [UInt8]) throws {
            try FileManager.default.createDirectory(atPath: "\(root)/\((relative as NSString).deletingLastPathComponent)",
                                                    withIntermediateDirectories: true)
            try writeFile("\(root)/\(relative)", bytes)
        }
        let indices = (0..<12).map { UInt8($0 % 4) }, palette: [UInt8] = [0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30]
        let gray16: [UInt8] = (0..<12).flatMap { [UInt8($0 * 20), 0xAB] }
        let grayAlpha: [UInt8] = (0..<12).flatMap { [UInt8($0 * 7), 0] }
        let rgba: [UInt8] = image(5, channels: 3).enumerated().flatMap { i, v in i % 3 == 2 ? [v, 9] : [v] }
        try write("train/a/1.jpg", Array(JPEGFixture.gray))
        try write("train/a/2.JPEG", Array(JPEGFixture.rgb))
        try write("train/b/1.png", pngFile(width: 4, height: 3, channels: 1, pixels: indices, colourType: 3, palette: palette))
        try write("train/b/2.png", pngFile(width: 4, height: 3, channels: 2, pixels: gray16, filters: [1, 2], colourType: 0, bitDepth: 16))
        try write("train/b/3.png", pngFile(width: 4, height: 3, channels: 2, pixels: grayAlpha, colourType: 4))
        try write("train/b/4.png", pngFile(width: 4, height: 3, channels: 4, pixels: rgba, colourType: 6))
        try write("test/a/1.jpg", Array(JPEGFixture.gray))
        let (train, _) = try loadImageFolder(directory: root, input: [3, 3, 4], normalization: nil)
        let expected = [planes(JPEGFixture.grayPixels, channels: 1, to: 3), planes(JPEGFixture.rgbPixels, channels: 3, to: 3),
                        planes(indices.flatMap { palette[Int($0) * 3..<Int($0) * 3 + 3] }, channels: 3, to: 3),
                        planes((0..<12).map { UInt8($0 * 20) }, channels: 1, to: 3),
                        planes((0..<12).map { UInt8($0 * 7) }, channels: 1, to: 3),
                        planes(image(5, channels: 3), channels: 3, to: 3)]
        XCTAssertEqual(train.labels, [0, 0, 1, 1, 1, 1])
        XCTAssertEqual(train.images, expected.flatMap { $0 }.map { Float($0) / 255 })
    }

    /// A file damaged inside its compressed data passes the header checks; reading its sample
    /// is one error naming the file (training ends with it as its one line).
    func testDamageInsideTheDataIsFoundWhenRead() throws {
        let root = try makeTemporaryDirectory(self)
        try writeImage(root, "train/a/1.png", image(1, channels: 1), channels: 1)
        try writeImage(root, "test/a/1.png", image(2, channels: 1), channels: 1)
        var png = pngFile(width: 4, height: 3, channels: 1, pixels: image(3, channels: 1))
        png[png.count - 20] ^= 0xFF  // inside IDAT's compressed data
        try writeFile("\(root)/train/a/2.png", png)
        let (train, _) = try loadImageFolder(directory: root, input: [1, 3, 4], normalization: nil)
        guard case .files(let files) = train.pixels else { return XCTFail("images stay in their files") }
        var out = [Float](repeating: 0, count: 12)
        try files.read(0, into: &out)
        assertDataError(["train/a/2.png", "IDAT"]) { try files.read(1, into: &out) }
    }

    /// RGB images to NCHW; a grayscale image among them fills all three channels.
    func testRGBAndGrayscaleIntoThreeChannels() throws {
        let root = try makeTemporaryDirectory(self)
        try writeImage(root, "train/a/1.png", image(1, channels: 3), channels: 3)
        try writeImage(root, "train/b/1.png", image(2, channels: 1), channels: 1)
        try writeImage(root, "test/a/1.png", image(3, channels: 3), channels: 3)
        let mean: [Float] = [0.5, 0.4, 0.3], std: [Float] = [0.2, 0.25, 0.5]
        let (train, test) = try loadImageFolder(directory: root, input: [3, 3, 4], normalization: Normalization(mean: mean, std: std))
        let expected = planes(image(1, channels: 3), channels: 3, to: 3) + planes(image(2, channels: 1), channels: 1, to: 3)
        XCTAssertEqual(train.images, expected.enumerated().map { i, p in (Float(p) / 255 - mean[i / 12 % 3]) / std[i / 12 % 3] })
        XCTAssertEqual(test.images.count, 36)
        XCTAssertEqual(train.labels, [0, 1])
    }

    func testBadFilesGiveOneClearLine() throws {
        func folder(_ extra: (String) throws -> Void) throws -> String {
            let root = try makeTemporaryDirectory(self)
            try writeImage(root, "train/a/1.png", image(1, channels: 1), channels: 1)
            try writeImage(root, "test/a/1.png", image(2, channels: 1), channels: 1)
            try extra(root)
            return root
        }
        func expect(_ root: String, input: [Int] = [1, 3, 4], _ expected: [String], line: UInt = #line) {
            assertDataError(expected, line: line) { try loadImageFolder(directory: root, input: input, normalization: nil) }
            do { _ = try loadImageFolder(directory: root, input: input, normalization: nil) } catch {
                XCTAssertFalse("\(error)".contains("\n"), line: line)
            }
        }
        expect(try folder { try writeFile("\($0)/train/a/2.png", Array("<html>not an image</html>".utf8)) },
               ["train/a/2.png", "not a PNG file"])
        expect(try folder { try writeFile("\($0)/train/a/photo.gif", Array("GIF89a".utf8)) },
               ["train/a/photo.gif", "not a .png, .jpg or .jpeg file"])
        expect(try folder { try self.writeImage($0, "train/a/2.png", [UInt8](repeating: 9, count: 15), channels: 1, width: 5) },
               ["train/a/2.png", "is 5 x 3 (width x height)", "needs 4 x 3"])
        expect(try folder { try writeFile("\($0)/train/a/wide.jpg", Array(JPEGFixture.wide)) },
               ["train/a/wide.jpg", "is 5 x 3 (width x height)", "needs 4 x 3"])
        expect(try folder { try writeFile("\($0)/train/a/cut.jpg", Array(JPEGFixture.gray.prefix(200))) },
               ["train/a/cut.jpg", "truncated", "no end-of-image marker"])
        expect(try folder { try writeFile("\($0)/train/a/text.jpg", Array("not a JPEG at all".utf8)) },
               ["train/a/text.jpg", "not a JPEG file"])
        expect(try folder { try self.writeImage($0, "train/a/2.png", self.image(3, channels: 3), channels: 3) },
               ["train/a/2.png", "RGB but model.input [1, 3, 4] has 1 channel"])
        expect(try folder { try self.writeImage($0, "test/zebra/1.png", self.image(3, channels: 1), channels: 1) },
               ["test/zebra", "class 'zebra' has no folder in", "whose classes are a"])
        expect(try folder { try FileManager.default.createDirectory(atPath: "\($0)/train/empty", withIntermediateDirectories: true) },
               ["train/empty", "holds no images"])
        expect(try folder { try FileManager.default.removeItem(atPath: "\($0)/test") }, ["test", "no such file", "test/<class>/*.png"])
        expect(try folder { _ in }, input: [2, 3, 4], ["model.input", "not 2 channels"])
        expect(try folder { root in
            var png = pngFile(width: 4, height: 3, channels: 1, pixels: self.image(4, channels: 1))
            png.removeLast(30)
            try writeFile("\(root)/train/a/cut.png", png)
        }, ["train/a/cut.png", "truncated", "IEND"])
    }
}
