import AsymData
import XCTest

/// `data.augment`'s crop and flip (`Augmentation`, `Dataset.gather(indices:augmentation:epoch:...)`).
final class AugmentationTests: XCTestCase {
    /// 40 samples of 2 x 5 x 6 pixel bytes, none 0 (so padding shows), normalised so that a pixel
    /// of 0 is -2 and 255 is 2.
    let bytes: Dataset = {
        let values: [UInt8] = (0..<(40 * 60)).map { (i: Int) -> UInt8 in UInt8(1 + i * 7919 % 255) }
        let table: [Float] = (0..<512).map { (i: Int) -> Float in Float(i % 256) / 255 * 4 - 2 }
        return Dataset(name: "bytes", channels: 2, height: 5, width: 6, classes: 40, pixels: .bytes(values, table: table),
                       labels: (0..<40).map { Int32($0) })
    }()

    /// Sample i holds i * 100 + its position in its plane, channel 1 negated: a 2 x 2 x 3 image.
    let floats: Dataset = {
        let images: [Float] = (0..<120).map { (k: Int) -> Float in
            let (i, j) = (k / 12, k % 12)
            return Float(i * 100 + j % 6) * (j < 6 ? 1 : -1)
        }
        return Dataset(name: "floats", channels: 2, height: 2, width: 3, classes: 10, images: images,
                       labels: (0..<10).map { Int32($0) })
    }()

    func gather(_ data: Dataset, _ indices: [Int32], _ augmentation: Augmentation?, epoch: Int = 0) -> [Float] {
        var images = [Float](repeating: .nan, count: indices.count * data.sampleSize)
        var labels = [Int32](repeating: -1, count: indices.count)
        if let augmentation {
            data.gather(indices: indices, augmentation: augmentation, epoch: epoch, images: &images, labels: &labels)
        } else {
            data.gather(indices: indices, images: &images, labels: &labels)
        }
        XCTAssertEqual(labels, indices.map { data.labels[Int($0)] })
        return images
    }

    /// torchvision's definition spelled out: pad with `zero` on every side, cut the input size
    /// at (top, left), mirror the rows if flipped.
    func reference(_ sample: [Float], _ data: Dataset, _ place: Augmentation.Placement, padding: Int) -> [Float] {
        let (h, w, ph, pw) = (data.height, data.width, data.height + 2 * padding, data.width + 2 * padding)
        return (0..<data.channels).flatMap { c -> [Float] in
            var padded = [Float](repeating: data.zeroPixel[c], count: ph * pw)
            for y in 0..<h { for x in 0..<w { padded[(y + padding) * pw + x + padding] = sample[(c * h + y) * w + x] } }
            let crop = (0..<h).map { y in (0..<w).map { x in padded[(y + place.top) * pw + x + place.left] } }
            return crop.flatMap { place.flip ? $0.reversed() : $0 }
        }
    }

    func testFlipOfAKnownImageIsItsMirror() throws {
        let flip = Augmentation(padding: 0, horizontalFlip: true, seed: 1)
        let mirrored = try XCTUnwrap((0..<10).first { flip.placement(epoch: 0, index: $0).flip })
        let kept = try XCTUnwrap((0..<10).first { !flip.placement(epoch: 0, index: $0).flip })
        let i = Float(mirrored * 100)
        XCTAssertEqual(gather(floats, [Int32(mirrored)], flip),
                       [i + 2, i + 1, i, i + 5, i + 4, i + 3, -(i + 2), -(i + 1), -i, -(i + 5), -(i + 4), -(i + 3)])
        XCTAssertEqual(gather(floats, [Int32(kept)], flip), gather(floats, [Int32(kept)], nil))
    }

    func testPaddingZeroWithoutFlipIsTheIdentity() {
        let none = Augmentation(padding: 0, horizontalFlip: false, seed: 9)
        let all = (0..<Int32(40)).map { $0 }
        for epoch in 0..<3 {
            XCTAssertEqual(gather(bytes, all, none, epoch: epoch), gather(bytes, all, nil))
            XCTAssertEqual(gather(floats, Array(all.prefix(10)), none, epoch: epoch), gather(floats, Array(all.prefix(10)), nil))
        }
    }

    /// Every sample against the reference, over placements that cover every offset and both flips.
    func testCropAndFlipMatchTheirDefinition() {
        let padding = 2
        let augmentation = Augmentation(padding: padding, horizontalFlip: true, seed: 4)
        var seen = Set<[Int]>()
        for epoch in 0..<3 {
            for i in 0..<40 {
                let place = augmentation.placement(epoch: epoch, index: i)
                seen.insert([place.top, place.left, place.flip ? 1 : 0])
                XCTAssertEqual(gather(bytes, [Int32(i)], augmentation, epoch: epoch),
                               reference(gather(bytes, [Int32(i)], nil), bytes, place, padding: padding), "sample \(i), \(place)")
            }
        }
        XCTAssertEqual(Set(seen.map { $0[0] }), [0, 1, 2, 3, 4])
        XCTAssertEqual(Set(seen.map { $0[1] }), [0, 1, 2, 3, 4])
        XCTAssertEqual(Set(seen.map { $0[2] }), [0, 1])
        // Padding fills with what a pixel of 0 becomes: -2 here, in both channels.
        XCTAssertEqual(bytes.zeroPixel, [-2, -2])
    }

    /// A sample's augmentation depends on (seed, epoch, index) only: not on the batch it is in
    /// or where in that batch, nor on the instance.
    func testSameSeedEpochAndIndexGiveTheSameSample() {
        let a = Augmentation(padding: 3, horizontalFlip: true, seed: 11), b = Augmentation(padding: 3, horizontalFlip: true, seed: 11)
        let alone = gather(bytes, [17], a, epoch: 5)
        let inBatch = gather(bytes, [3, 17, 30], b, epoch: 5)
        XCTAssertEqual(Array(inBatch[60..<120]), alone)
        XCTAssertEqual(gather(bytes, [17], a, epoch: 5), alone)
        let otherSeed = Augmentation(padding: 3, horizontalFlip: true, seed: 12)
        let differ = (0..<200).filter { otherSeed.placement(epoch: 5, index: $0) != a.placement(epoch: 5, index: $0) }.count
        XCTAssertGreaterThan(differ, 180, "another seed places most samples elsewhere")
    }

    func testAnotherEpochGivesAnotherSample() {
        let a = Augmentation(padding: 4, horizontalFlip: true, seed: 2)
        // 81 crops x 2 flips: a sample keeps its placement from one epoch to the next 1 time in 162.
        let differ = (0..<400).filter { a.placement(epoch: 0, index: $0) != a.placement(epoch: 1, index: $0) }.count
        XCTAssertGreaterThan(differ, 390)
        let changed = (0..<Int32(40)).filter { gather(bytes, [$0], a, epoch: 0) != gather(bytes, [$0], a, epoch: 1) }
        XCTAssertGreaterThan(changed.count, 36)
    }

    /// Offsets uniform in 0...2 * padding, flips with probability 0.5.
    func testDrawsAreUniform() {
        let a = Augmentation(padding: 4, horizontalFlip: true, seed: 0)
        let places = (0..<9000).map { a.placement(epoch: 3, index: $0) }
        let flips = Double(places.filter(\.flip).count) / 9000
        XCTAssertEqual(flips, 0.5, accuracy: 0.03)
        for offset in 0...8 {
            XCTAssertEqual(places.filter { $0.top == offset }.count, 1000, accuracy: 150)
            XCTAssertEqual(places.filter { $0.left == offset }.count, 1000, accuracy: 150)
        }
        XCTAssertFalse(Augmentation(padding: 4, horizontalFlip: false, seed: 0).placement(epoch: 3, index: 1).flip)
    }
}
