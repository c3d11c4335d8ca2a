import AsymData
import AsymKernels
import AsymModel
import AsymTrain
import AsymViz
import CZlib
import Foundation
import XCTest

/// `data.augment`, `data.dataset: image_folder` and `npz` as a config selects them.
final class DataSourceFormatsTests: XCTestCase {
    func batch(_ gather: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int32>) -> Void, samples: Int, size: Int) -> [Float] {
        var images = [Float](repeating: .nan, count: samples * size)
        var labels = [Int32](repeating: -1, count: samples)
        gather(&images, &labels)
        return images
    }

    /// Training batches are augmented (as the epoch says); evaluation batches never are.
    func testAugmentationReachesTrainingBatchesOnly() throws {
        setThreads(1)
        let plain = try DataSource(try smokeConfig())
        let augmented = try DataSource(try smokeConfig(["data.augment={random_crop: 2, horizontal_flip: true}"]))
        XCTAssertNil(plain.augmentation)
        XCTAssertEqual(augmented.augmentation, Augmentation(padding: 2, horizontalFlip: true, seed: 3))
        let indices = (0..<Int32(16)).map { $0 }, size = plain.train.sampleSize
        let unchanged = batch({ plain.gatherTraining(indices: indices, epoch: 0, images: $0, labels: $1) }, samples: 16, size: size)
        XCTAssertEqual(unchanged, batch({ plain.train.gather(indices: indices, images: $0, labels: $1) }, samples: 16, size: size))
        let epoch0 = batch({ augmented.gatherTraining(indices: indices, epoch: 0, images: $0, labels: $1) }, samples: 16, size: size)
        let epoch1 = batch({ augmented.gatherTraining(indices: indices, epoch: 1, images: $0, labels: $1) }, samples: 16, size: size)
        XCTAssertNotEqual(epoch0, unchanged)
        XCTAssertNotEqual(epoch0, epoch1)
        XCTAssertEqual(epoch0, batch({ augmented.train.gather(indices: indices, augmentation: augmented.augmentation!, epoch: 0,
                                                              images: $0, labels: $1) }, samples: 16, size: size))

        // Evaluation reads the test split as it is: same batches, same loss and accuracy.
        let all = (0..<Int32(plain.test.count)).map { $0 }
        XCTAssertEqual(batch({ augmented.test.gather(indices: all, images: $0, labels: $1) }, samples: all.count, size: size),
                       batch({ plain.test.gather(indices: all, images: $0, labels: $1) }, samples: all.count, size: size))
        let a = try Trainer(config: try smokeConfig(["data.augment={random_crop: 2, horizontal_flip: true}"]))
        let b = try Trainer(config: try smokeConfig())
        let (ea, eb) = (try a.evaluate(a.data.test), try b.evaluate(b.data.test))
        XCTAssertEqual([ea.loss, ea.accuracy], [eb.loss, eb.accuracy])
    }

    /// A folder of PNGs written by the project's writer (AsymViz), read through the config, and trained on.
    func testImageFolderThroughTheConfig() throws {
        setThreads(1)
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var expected: [String: [(name: String, pixels: [UInt8])]] = [:]
        for split in ["train", "test"] {
            for (label, name) in ["circle", "square"].enumerated() {
                try FileManager.default.createDirectory(atPath: "\(root)/\(split)/\(name)", withIntermediateDirectories: true)
                for k in 0..<(split == "train" ? 20 : 4) {
                    var image = RGBImage(width: 8, height: 6, background: RGBColor(UInt8(10 * k), 0, UInt8(200 - k)))
                    image.fillRect(x: label * 4, y: 1, width: 3, height: 3, color: RGBColor(255, UInt8(k), 128))
                    let file = String(format: "%02d.png", k)
                    try writePNG(image, to: "\(root)/\(split)/\(name)/\(file)")
                    expected[split, default: []].append((file, image.pixels))
                }
            }
        }
        let c = try smokeConfig(["data.dataset=image_folder", "data.path=\(root)", "data.batch_size=8",
                                 "data.normalize=[[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]", "model.input=[3, 6, 8]"])
        let data = try DataSource(c)
        XCTAssertEqual([data.train.count, data.test.count, data.train.classes], [40, 8, 2])
        XCTAssertEqual(data.train.labels, Array(repeating: Int32(0), count: 20) + Array(repeating: 1, count: 20))
        for (split, set) in [("train", data.train), ("test", data.test)] {
            // Interleaved RGB rows to NCHW planes, normalised as configured.
            let nchw = expected[split]!.flatMap { image in
                (0..<3).flatMap { c in (0..<48).map { p in (Float(image.pixels[p * 3 + c]) / 255 - 0.5) / 0.25 } }
            }
            XCTAssertEqual(set.images, nchw, split)
        }
        let t = try Trainer(config: c, data: data)
        for _ in 0..<10 { try t.step() }
        XCTAssertGreaterThan(try t.evaluate(t.data.test).accuracy, 0.5)
    }

    func testFilesThatNeedAPathSayWhichPath() {
        let npz = errorMessage { _ = try DataSource(try smokeConfig(["data.dataset=npz"])) }
        XCTAssertEqual(npz, "data.path: npz needs the folder of train.npz and test.npz (np.savez(file, x=images, y=labels)), or one .npz file")
        let folder = errorMessage { _ = try DataSource(try smokeConfig(["data.dataset=image_folder"])) }
        XCTAssertEqual(folder, "data.path: image_folder needs the folder that holds train/<class>/ and test/<class>/ (PNG or JPEG images)")
        let missing = errorMessage { _ = try DataSource(try smokeConfig(["data.dataset=npz", "data.path=/nonexistent/cifar.npz"])) }
        XCTAssertTrue(missing.hasPrefix("/nonexistent/cifar.npz: no such file; set data.path to a folder of train.npz and test.npz"), missing)
    }

    /// `data.layout: nhwc` npz data (a folder of train.npz and test.npz, uint8, stored so read
    /// batch by batch) through the config: the batches a trainer gathers hold the values written,
    /// augmented or not, and it trains.
    func testNPZFolderThroughTheConfig() throws {
        setThreads(1)
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // 2 classes of 8 x 6 RGB images, NHWC: class 1 is brighter in its left half.
        func images(_ n: Int) -> (x: [UInt8], y: [Int64]) {
            var x: [UInt8] = [], y: [Int64] = []
            for s in 0..<n {
                y.append(Int64(s % 2))
                for p in 0..<48 { for c in 0..<3 { x.append(UInt8((s * 13 + p * 3 + c * 50 + (s % 2 == 1 && p % 8 < 4 ? 120 : 0)) % 256)) } }
            }
            return (x, y)
        }
        for (split, n) in [("train", 40), ("test", 8)] {
            let (x, y) = images(n)
            try Data(npzFile(x: x, shape: [n, 6, 8, 3], y: y)).write(to: URL(fileURLWithPath: "\(root)/\(split).npz"))
        }
        let settings = ["data.dataset=npz", "data.path=\(root)", "data.layout=nhwc", "data.batch_size=8", "model.input=[3, 6, 8]"]
        let data = try DataSource(try smokeConfig(settings))
        XCTAssertEqual([data.train.count, data.test.count, data.train.classes], [40, 8, 2])
        let (x, _) = images(40), nchw = (0..<40).flatMap { s in (0..<3).flatMap { c in (0..<48).map { p in Float(x[(s * 48 + p) * 3 + c]) / 255 } } }
        let indices = (0..<Int32(40)).map { $0 }
        XCTAssertEqual(batch({ data.gatherTraining(indices: indices, epoch: 0, images: $0, labels: $1) }, samples: 40, size: 144), nchw)
        let augmented = try DataSource(try smokeConfig(settings + ["data.augment={random_crop: 1, horizontal_flip: true}"]))
        let inMemory = Dataset(name: "x", channels: 3, height: 6, width: 8, classes: 2, images: nchw, labels: data.train.labels)
        XCTAssertEqual(batch({ augmented.gatherTraining(indices: indices, epoch: 2, images: $0, labels: $1) }, samples: 40, size: 144),
                       batch({ inMemory.gather(indices: indices, augmentation: augmented.augmentation!, epoch: 2, images: $0, labels: $1) },
                             samples: 40, size: 144), "files augment exactly as memory does")
        let t = try Trainer(config: try smokeConfig(settings), data: data)
        for _ in 0..<10 { try t.step() }
        XCTAssertEqual(try t.evaluate(t.data.test).samples, 8)
    }
}

/// A stored .npz (as np.savez writes it) of uint8 `x` and int64 `y`: one zip member each, no
/// compression, ZIP64 local extra fields as NumPy writes them.
private func npzFile(x: [UInt8], shape: [Int], y: [Int64]) -> [UInt8] {
    func le(_ v: Int, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    func npy(_ descr: String, _ shape: [Int], _ data: [UInt8]) -> [UInt8] {
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(shape.map(String.init).joined(separator: ", "))\(shape.count == 1 ? "," : "")), }"
        header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
        return [0x93] + Array("NUMPY".utf8) + [1, 0] + le(header.utf8.count, 2) + Array(header.utf8) + data
    }
    var file: [UInt8] = [], directory: [UInt8] = []
    let members = [("x.npy", npy("|u1", shape, x)), ("y.npy", npy("<i8", [y.count], y.flatMap { le(Int($0), 8) }))]
    for (name, data) in members {
        let crc = Int(data.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
        let common = le(0, 2) + le(0, 2) + le(0, 4) + le(crc, 4)
        directory += le(0x0201_4B50, 4) + le(45, 2) + le(45, 2) + common + le(data.count, 4) + le(data.count, 4) + le(name.utf8.count, 2)
            + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(file.count, 4) + Array(name.utf8)
        file += le(0x0403_4B50, 4) + le(45, 2) + common + le(data.count, 4) + le(data.count, 4) + le(name.utf8.count, 2) + le(0, 2)
            + Array(name.utf8) + data
    }
    return file + directory + le(0x0605_4B50, 4) + le(0, 4) + le(2, 2) + le(2, 2) + le(directory.count, 4) + le(file.count, 4) + le(0, 2)
}
