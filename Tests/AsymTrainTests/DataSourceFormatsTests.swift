import AsymData
import AsymKernels
import AsymModel
import AsymTrain
import AsymViz
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
        XCTAssertEqual(npz, "data.path: npz needs the .npz file (np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...))")
        let folder = errorMessage { _ = try DataSource(try smokeConfig(["data.dataset=image_folder"])) }
        XCTAssertEqual(folder, "data.path: image_folder needs the folder that holds train/<class>/*.png and test/<class>/*.png")
        let missing = errorMessage { _ = try DataSource(try smokeConfig(["data.dataset=npz", "data.path=/nonexistent/cifar.npz"])) }
        XCTAssertTrue(missing.hasPrefix("/nonexistent/cifar.npz: no such file; set data.path to a .npz file"), missing)
    }
}
