import AsymViz
import XCTest

final class LineChartTests: XCTestCase {
    /// Renders `chart` and checks the size and that something besides the
    /// white background was drawn.
    private func assertRenders(_ chart: LineChart, width: Int = 320, height: Int = 200,
                               file: StaticString = #filePath, line: UInt = #line) {
        let image = chart.render(width: width, height: height)
        XCTAssertEqual(image.width, width, file: file, line: line)
        XCTAssertEqual(image.height, height, file: file, line: line)
        XCTAssertNotEqual(image, RGBImage(width: width, height: height), "blank chart", file: file, line: line)
    }

    func testNormalSeries() {
        var chart = LineChart(title: "Loss", xLabel: "step", yLabel: "loss")
        chart.addSeries(name: "train", points: (0..<100).map { (Double($0), 1 / Double($0 + 1)) })
        chart.addSeries(name: "test", points: (0..<10).map { (Double($0 * 10), 0.5 / Double($0 + 1)) })
        assertRenders(chart)
        chart.logY = true
        assertRenders(chart)
    }

    func testSeriesColoursAreDrawn() {
        var chart = LineChart()
        chart.addSeries(name: "a", points: [(0, 0), (1, 1)])
        chart.addSeries(name: "b", points: [(0, 1), (1, 0)])
        let image = chart.render()
        var colours = Set<[UInt8]>()
        for y in 0..<image.height {
            for x in 0..<image.width {
                let p = image.pixel(x: x, y: y)
                colours.insert([p.r, p.g, p.b])
            }
        }
        for colour in LineChart.palette.prefix(2) {
            XCTAssertTrue(colours.contains([colour.r, colour.g, colour.b]))
        }
    }

    func testEmptyChartAndEmptySeries() {
        assertRenders(LineChart())
        var chart = LineChart(title: "nothing yet")
        chart.addSeries(name: "empty", points: [])
        assertRenders(chart)
        chart.logY = true
        assertRenders(chart)
    }

    func testSinglePoint() {
        var chart = LineChart()
        chart.addSeries(name: "one", points: [(3, 4)])
        assertRenders(chart)
        chart.logY = true
        assertRenders(chart)
    }

    func testConstantValues() {
        for value in [0.0, 5, -2e-7, 1e12] {
            var chart = LineChart(xLabel: "x", yLabel: "y")
            chart.addSeries(name: "flat", points: (0..<5).map { _ in (1, value) })
            assertRenders(chart)
            chart.logY = true
            assertRenders(chart)
        }
    }

    func testUnplottableValuesAndTinyImages() {
        var chart = LineChart(title: "a long title that does not fit")
        chart.addSeries(name: "bad", points: [(0, .nan), (1, .infinity), (2, -1), (3, 1e308), (4, 2)])
        assertRenders(chart)
        chart.logY = true
        assertRenders(chart)
        // Too small for the margins: only the size is checked, and that nothing traps.
        let tiny = chart.render(width: 5, height: 3)
        XCTAssertEqual([tiny.width, tiny.height], [5, 3])
    }
}
