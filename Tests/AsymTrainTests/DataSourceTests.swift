import AsymModel
import AsymTrain
import XCTest

/// The data a trusted rank trains on, as the config selects it.
final class DataSourceTests: XCTestCase {
    /// `data.train_samples: N` trains on the first N samples of the training split, unchanged.
    func testTrainSamplesKeepsThePrefix() throws {
        let all = try DataSource(try smokeConfig()), some = try DataSource(try smokeConfig(["data.train_samples=40"]))
        XCTAssertEqual(some.train.count, 40)
        XCTAssertEqual(some.train.labels, Array(all.train.labels.prefix(40)))
        XCTAssertEqual(some.train.images, Array(all.train.images.prefix(40 * all.train.sampleSize)))
        XCTAssertEqual(some.test.count, all.test.count)
    }

    func testMoreTrainSamplesThanTheDataSetIsAnError() {
        let many = errorMessage { _ = try DataSource(try smokeConfig(["data.train_samples=100000"])) }
        XCTAssertTrue(many.contains("data.train_samples: 100000 is more than the"), many)
    }
}
