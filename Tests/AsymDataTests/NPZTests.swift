import AsymData
import XCTest

/// `loadNPZ` on archives written as `np.savez` and `np.savez_compressed` write them
/// (`npzArchive`): values and labels exact, every layout and element type, and one clear line
/// for each kind of damage.
final class NPZTests: XCTestCase {
    /// NHWC -> NCHW of `n` samples.
    func channelsFirst<T>(_ v: [T], n: Int, h: Int, w: Int, c: Int) -> [T] {
        (0..<n).flatMap { s in (0..<c).flatMap { ch in (0..<(h * w)).map { p in v[(s * h * w + p) * c + ch] } } }
    }

    func write(_ members: [(String, [UInt8])], deflated: Bool, zip64Directory: Bool = false) throws -> String {
        let path = try makeTemporaryDirectory(self) + "/data.npz"
        try writeFile(path, npzArchive(members.map { (name: $0.0, bytes: $0.1) }, deflated: deflated, zip64Directory: zip64Directory))
        return path
    }

    /// uint8 NHWC images, as Keras's CIFAR-10 comes: bytes exact in NCHW, labels of (N,) and (N, 1).
    func testSavezUint8ChannelsLast() throws {
        let train = (0..<36).map { UInt8(($0 * 37 + 3) % 256) }, test = (0..<24).map { UInt8(255 - $0 * 5) }
        let path = try write([("x_train.npy", npy(train, [3, 2, 2, 3])), ("y_train.npy", npy([Int64(2), 0, 1], [3])),
                              ("x_test.npy", npy(test, [2, 2, 2, 3])), ("y_test.npy", npy([UInt8(1), 3], [2, 1]))],
                             deflated: false)
        let (tr, te) = try loadNPZ(path: path, input: [3, 2, 2], normalization: nil)
        guard case .bytes(let trainBytes, _) = tr.pixels, case .bytes(let testBytes, _) = te.pixels else {
            return XCTFail("uint8 images are kept as bytes")
        }
        XCTAssertEqual(trainBytes, channelsFirst(train, n: 3, h: 2, w: 2, c: 3))
        XCTAssertEqual(testBytes, channelsFirst(test, n: 2, h: 2, w: 2, c: 3))
        XCTAssertEqual(tr.images, channelsFirst(train, n: 3, h: 2, w: 2, c: 3).map { Float($0) / 255 })
        XCTAssertEqual(tr.labels, [2, 0, 1])
        XCTAssertEqual(te.labels, [1, 3])
        XCTAssertEqual([tr.classes, te.classes], [4, 4], "classes run to the largest label of either split")
        XCTAssertEqual([tr.channels, tr.height, tr.width, tr.count, te.count], [3, 2, 2, 3, 2])
        XCTAssertEqual(tr.name, "data.npz/train")
    }

    /// float32 NCHW images from `savez_compressed`, normalised per channel; padding's zero pixel follows.
    func testSavezCompressedFloat32ChannelsFirst() throws {
        let train = (0..<24).map { Float($0) * 0.37 - 3 }, test = (0..<12).map { Float($0) / 7 }
        let path = try write([("x_train.npy", npy(train, [2, 3, 2, 2])), ("y_train.npy", npy([Int64(1), 0], [2])),
                              ("x_test.npy", npy(test, [1, 3, 2, 2])), ("y_test.npy", npy([Int64(1)], [1]))],
                             deflated: true)
        let mean: [Float] = [0.5, 0.25, 0], std: [Float] = [2, 0.5, 1]
        let (tr, te) = try loadNPZ(path: path, input: [3, 2, 2], normalization: Normalization(mean: mean, std: std))
        XCTAssertEqual(tr.images, train.enumerated().map { i, v in (v - mean[i / 4 % 3]) / std[i / 4 % 3] })
        XCTAssertEqual(te.images, test.enumerated().map { i, v in (v - mean[i / 4 % 3]) / std[i / 4 % 3] })
        XCTAssertEqual(tr.zeroPixel, [-0.25, -0.5, 0])
        XCTAssertEqual(tr.labels, [1, 0])
        XCTAssertEqual(tr.classes, 2)
    }

    /// float64 (N, H, W) images for one channel, in an archive with a ZIP64 central directory.
    func testFloat64GrayscaleAndZip64Directory() throws {
        let train = (0..<24).map { Double($0) / 3 }
        for deflated in [false, true] {
            let path = try write([("x_train.npy", npy(train, [4, 3, 2])), ("y_train.npy", npy([Int64(0), 1, 2, 1], [4])),
                                  ("x_test.npy", npy(Array(train.prefix(6)), [1, 3, 2])), ("y_test.npy", npy([Int64(2)], [1]))],
                                 deflated: deflated, zip64Directory: true)
            let (tr, te) = try loadNPZ(path: path, input: [1, 3, 2], normalization: nil)
            XCTAssertEqual(tr.images, train.map { Float($0) })
            XCTAssertEqual(te.images, train.prefix(6).map { Float($0) })
            XCTAssertEqual(tr.labels, [0, 1, 2, 1])
        }
    }

    /// A shape that fits both layouts (C = H = W) reads as NCHW.
    func testCubeShapesReadChannelsFirst() throws {
        let x = (0..<8).map { UInt8($0) }
        let path = try write([("x_train.npy", npy(x, [1, 2, 2, 2])), ("y_train.npy", npy([Int64(0)], [1])),
                              ("x_test.npy", npy(x, [1, 2, 2, 2])), ("y_test.npy", npy([Int64(0)], [1]))], deflated: false)
        XCTAssertEqual(try loadNPZ(path: path, input: [2, 2, 2], normalization: nil).train.images, x.map { Float($0) / 255 })
    }

    /// Each kind of damage: one line naming the file (and the array), saying what is wrong.
    func testDamagedArchivesGiveOneClearLine() throws {
        let good: [(String, [UInt8])] = [("x_train.npy", npy([UInt8](repeating: 7, count: 12), [3, 2, 2])),
                                         ("y_train.npy", npy([Int64(0), 1, 0], [3])),
                                         ("x_test.npy", npy([UInt8](repeating: 9, count: 4), [1, 2, 2])),
                                         ("y_test.npy", npy([Int64(1)], [1]))]
        func expectError(_ members: [(String, [UInt8])], deflated: Bool = false, input: [Int] = [1, 2, 2],
                         edit: (inout [UInt8]) -> Void = { _ in }, _ expected: [String], line: UInt = #line) throws {
            var bytes = npzArchive(members.map { (name: $0.0, bytes: $0.1) }, deflated: deflated)
            edit(&bytes)
            let path = try makeTemporaryDirectory(self) + "/bad.npz"
            try writeFile(path, bytes)
            assertDataError([path] + expected, line: line) { try loadNPZ(path: path, input: input, normalization: nil) }
            do { _ = try loadNPZ(path: path, input: input, normalization: nil) } catch {
                XCTAssertFalse("\(error)".contains("\n"), "\(error)", line: line)
            }
        }
        try expectError(good, edit: { $0.removeLast($0.count / 2) }, ["truncated", "no end record"])
        // x_train.npy's deflated data starts at 61 (30-byte local header, name, ZIP64 extra).
        try expectError(good, deflated: true, edit: { for i in 63..<71 { $0[i] ^= 0x55 } }, ["x_train.npy", "damaged"])
        try expectError(good, edit: { $0 = Array("just text, not a zip".utf8) }, ["not a zip archive"])
        try expectError(good, input: [3, 2, 2], ["x_train.npy", "shape (3, 2, 2) does not fit model.input [3, 2, 2]", "(N, 3, 2, 2) (NCHW)"])
        try expectError(Array(good.prefix(3)), ["no array 'y_test'", "x_train, y_train, x_test", "np.savez"])
        // x_train.npy's 12 pixels start at 61 + 128 (its .npy header).
        try expectError(good, edit: { $0[61 + 128 + 2] ^= 0xFF }, ["x_train.npy", "CRC-32"])
        try expectError([good[0], ("y_train.npy", npy([Int64(0), 1], [2]))] + good[2...],
                        ["y_train.npy", "shape (2,) does not fit 3 images"])
        try expectError([good[0], ("y_train.npy", npy([Int64(0), -1, 0], [3]))] + good[2...],
                        ["y_train.npy", "label -1 at index 1"])
        try expectError([good[0], ("y_train.npy", npy([Float(0), 1, 0], [3]))] + good[2...],
                        ["y_train.npy", "labels are float32"])
        try expectError([("x_train.npy", npy("|u1", [3, 2, 2], [UInt8](repeating: 0, count: 12), fortranOrder: true))] + good[1...],
                        ["x_train.npy", "Fortran order"])
        try expectError([("x_train.npy", npy(">f4", [3, 2, 2], [UInt8](repeating: 0, count: 48)))] + good[1...],
                        ["x_train.npy", "big-endian"])
        try expectError([("x_train.npy", npy("<i8", [3, 2, 2], [UInt8](repeating: 0, count: 96)))] + good[1...],
                        ["x_train.npy", "images are int64"])
        try expectError([("x_train.npy", npy("|u1", [3, 2, 2], [UInt8](repeating: 0, count: 11)))] + good[1...],
                        ["x_train.npy", "truncated", "needs 12 bytes of data, found 11"])
        try expectError([("x_train.npy", npy([Float.nan, 0, 0, 0], [1, 2, 2]))] + [("y_train.npy", npy([Int64(0)], [1]))] + good[2...],
                        ["x_train.npy", "element 0 is not a finite number"])
        assertDataError(["/nonexistent/data.npz", "no such file", "np.savez"]) {
            try loadNPZ(path: "/nonexistent/data.npz", input: [1, 2, 2], normalization: nil)
        }
    }
}
