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
        let (tr, te) = try loadNPZ(path: path, input: [3, 2, 2], channelsLast: true, normalization: nil)
        XCTAssertEqual(tr.images, channelsFirst(train, n: 3, h: 2, w: 2, c: 3).map { Float($0) / 255 })
        XCTAssertEqual(te.images, channelsFirst(test, n: 2, h: 2, w: 2, c: 3).map { Float($0) / 255 })
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
        let (tr, te) = try loadNPZ(path: path, input: [3, 2, 2], channelsLast: false, normalization: Normalization(mean: mean, std: std))
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
            let (tr, te) = try loadNPZ(path: path, input: [1, 3, 2], channelsLast: false, normalization: nil)
            XCTAssertEqual(tr.images, train.map { Float($0) })
            XCTAssertEqual(te.images, train.prefix(6).map { Float($0) })
            XCTAssertEqual(tr.labels, [0, 1, 2, 1])
        }
    }

    /// A shape that fits both layouts (C = H = W) reads as data.layout says.
    func testCubeShapesReadChannelsFirst() throws {
        let x = (0..<8).map { UInt8($0) }
        let path = try write([("x_train.npy", npy(x, [1, 2, 2, 2])), ("y_train.npy", npy([Int64(0)], [1])),
                              ("x_test.npy", npy(x, [1, 2, 2, 2])), ("y_test.npy", npy([Int64(0)], [1]))], deflated: false)
        XCTAssertEqual(try loadNPZ(path: path, input: [2, 2, 2], channelsLast: false, normalization: nil).train.images, x.map { Float($0) / 255 })
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
            assertDataError([path] + expected, line: line) { try loadNPZ(path: path, input: input, channelsLast: false, normalization: nil) }
            do { _ = try loadNPZ(path: path, input: input, channelsLast: false, normalization: nil) } catch {
                XCTAssertFalse("\(error)".contains("\n"), "\(error)", line: line)
            }
        }
        try expectError(good, edit: { $0.removeLast($0.count / 2) }, ["truncated", "no end record"])
        // x_train.npy's deflated data starts at 61 (30-byte local header, name, ZIP64 extra).
        try expectError(good, deflated: true, edit: { for i in 63..<71 { $0[i] ^= 0x55 } }, ["x_train.npy", "damaged"])
        try expectError(good, edit: { $0 = Array("just text, not a zip".utf8) }, ["not a zip archive"])
        try expectError(good, input: [3, 2, 2], ["x_train.npy", "shape (3, 2, 2) does not fit model.input [3, 2, 2] in data.layout nchw", "(N, 3, 2, 2) (NCHW)"])
        try expectError(Array(good.prefix(3)), ["no array 'y_test'", "x_train, y_train, x_test", "np.savez"])
        // Labels are read whole and checked against their CRC-32 (images of a stored member are
        // read in place, unchecked): y_train.npy's data starts at 61 + 140 (x_train.npy) + 61 + 128.
        try expectError(good, edit: { $0[61 + 140 + 61 + 128 + 1] ^= 0xFF }, ["y_train.npy", "CRC-32"])
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
                        deflated: true, ["x_train.npy", "element 0 is not a finite number"])
        try expectError([("x_train.npy", npy("|u1", [3, 2, 2, 1], [UInt8](repeating: 0, count: 12)))] + good[1...], input: [1, 2, 2],
                        ["x_train.npy", "does not fit model.input [1, 2, 2] in data.layout nchw", "it is NHWC: set data.layout: nhwc"])
        assertDataError(["/nonexistent/data.npz", "no such file", "np.savez"]) {
            try loadNPZ(path: "/nonexistent/data.npz", input: [1, 2, 2], channelsLast: false, normalization: nil)
        }
    }

    /// The form: a folder of train.npz and test.npz with `x` and `y`; stored and
    /// deflated archives give the same values.
    func testFolderFormUint8ChannelsLastAndFloat32ChannelsFirst() throws {
        let xTrain = (0..<60).map { UInt8(($0 * 37 + 3) % 256) }, xTest = (0..<24).map { UInt8(255 - $0 * 5) }
        let fTrain = (0..<60).map { Float($0) * 0.37 - 3 }, fTest = (0..<24).map { Float($0) / 7 }
        let yTrain = npy([Int64(2), 0, 1, 1, 0], [5]), yTest = npy([UInt8(1), 3], [2, 1])
        for deflated in [false, true] {
            let folder = try makeTemporaryDirectory(self)
            try writeFile(folder + "/train.npz", npzArchive([("x.npy", npy(xTrain, [5, 2, 2, 3])), ("y.npy", yTrain)], deflated: deflated))
            try writeFile(folder + "/test.npz", npzArchive([("x.npy", npy(xTest, [2, 2, 2, 3])), ("y.npy", yTest)], deflated: deflated))
            let (tr, te) = try loadNPZ(path: folder, input: [3, 2, 2], channelsLast: true, normalization: .cifar10)
            let table = (0..<3).map { c in (0..<256).map { (Float($0) / 255 - Normalization.cifar10.mean[c]) / Normalization.cifar10.std[c] } }
            func expected(_ x: [UInt8], _ n: Int) -> [Float] {
                channelsFirst(x, n: n, h: 2, w: 2, c: 3).enumerated().map { i, v in table[i / 4 % 3][Int(v)] }
            }
            XCTAssertEqual(tr.images, expected(xTrain, 5), "deflated: \(deflated)")
            XCTAssertEqual(te.images, expected(xTest, 2))
            XCTAssertEqual(tr.labels, [2, 0, 1, 1, 0])
            XCTAssertEqual([tr.classes, te.classes], [4, 4])
            XCTAssertEqual(tr.name, lastComponent(folder) + "/train")

            try writeFile(folder + "/train.npz", npzArchive([("x.npy", npy(fTrain, [5, 3, 2, 2])), ("y.npy", yTrain)], deflated: deflated))
            try writeFile(folder + "/test.npz", npzArchive([("x.npy", npy(fTest, [2, 3, 2, 2])), ("y.npy", yTest)], deflated: deflated))
            let floats = try loadNPZ(path: folder, input: [3, 2, 2], channelsLast: false, normalization: Normalization(mean: [0.5], std: [2]))
            XCTAssertEqual(floats.train.images, fTrain.map { ($0 - 0.5) / 2 })
            XCTAssertEqual(floats.test.images, fTest.map { ($0 - 0.5) / 2 })
            XCTAssertEqual(floats.train.zeroPixel, [-0.25, -0.25, -0.25])
        }
        let folder = try makeTemporaryDirectory(self)
        try writeFile(folder + "/train.npz", npzArchive([("x.npy", npy(xTrain, [5, 2, 2, 3])), ("y.npy", yTrain)], deflated: false))
        assertDataError([folder + "/test.npz", "no such file", "train.npz and test.npz"]) {
            try loadNPZ(path: folder, input: [3, 2, 2], channelsLast: true, normalization: nil)
        }
        try writeFile(folder + "/test.npz", npzArchive([("x.npy", npy(xTest, [2, 2, 2, 3]))], deflated: false))
        assertDataError([folder + "/test.npz", "no array 'y' (it holds x)", "np.savez(file, x=images, y=labels)"]) {
            try loadNPZ(path: folder, input: [3, 2, 2], channelsLast: true, normalization: nil)
        }
    }

    /// A stored 300 MB member is read a batch at a time, never whole: the process's peak
    /// resident memory grows by far less than the file while batches are gathered, every
    /// sample included, and each batch holds the values written.
    func testLargeStoredArchiveStreams() throws {
        let folder = try makeTemporaryDirectory(self)
        let (n, side) = (100_000, 3072 / 3)  // 100k samples of 3 x 32 x 32 uint8: 307 MB
        func pixel(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: (offset &* 2_654_435_761) >> 7) }
        try writeLargeStoredNPZ(folder + "/train.npz", x: npy("|u1", [n, 3, 32, 32], []), xBytes: 3 * side * n, pixel: pixel,
                                y: npy((0..<n).map { Int64($0 % 10) }, [n]))
        try writeFile(folder + "/test.npz", npzArchive([("x.npy", npy([UInt8](repeating: 0, count: 3072), [1, 3, 32, 32])),
                                                        ("y.npy", npy([Int64(0)], [1]))], deflated: false))
        let before = try peakResidentBytes(reset: true)
        let (train, _) = try loadNPZ(path: folder, input: [3, 32, 32], channelsLast: false, normalization: nil)
        XCTAssertEqual(train.count, n)
        var images = [Float](repeating: 0, count: 1000 * 3072), labels = [Int32](repeating: 0, count: 1000)
        for start in stride(from: 0, to: n, by: 1000) {
            train.gather(indices: Int32(start)..<Int32(start + 1000), images: &images, labels: &labels)
            let probe = (start / 1000 * 7919) % (1000 * 3072)
            XCTAssertEqual(images[probe], Float(pixel(start * 3072 + probe)) / 255)
            XCTAssertEqual(labels[999], Int32((start + 999) % 10))
        }
        let growth = try peakResidentBytes(reset: false) - before
        print("reading a 307 MB stored member batch by batch grew the peak resident memory by \(growth >> 10) KiB")
        XCTAssertLessThan(growth, 40 << 20, "peak resident memory grew by \(growth >> 20) MiB reading a 307 MB file")
    }
}

/// The last component of a path.
private func lastComponent(_ path: String) -> String { String(path.split(separator: "/").last!) }

/// VmHWM, the process's peak resident memory, in bytes; `reset` first sets the peak back to the
/// current size (writing 5 to /proc/self/clear_refs), so that earlier tests do not hide growth.
private func peakResidentBytes(reset: Bool) throws -> Int {
    if reset { try "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8) }
    let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kB = Int(line.split(separator: " ")[1]) else { throw CocoaError(.fileReadCorruptFile) }
    return kB * 1024
}
