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

/// What the charts of `asymml plot` need to read well: enough log ticks, percent
/// labels, markers on sparse series, a legend clear of the data.
final class LineChartReadabilityTests: XCTestCase {
    private func logTicks(_ lo: Double, _ hi: Double) -> [(value: Double, label: String)] {
        var chart = LineChart(logY: true)
        chart.addSeries(name: "loss", points: [(0, lo), (1, hi)])
        return chart.ticks().y
    }

    func testLogAxisUnderOneDecadeHasFourLabelledTicks() {
        let ticks = logTicks(0.3, 2.5)
        XCTAssertGreaterThanOrEqual(ticks.count, 4, "\(ticks)")
        XCTAssertEqual(ticks.map(\.label), ["0.5", "1", "1.5", "2", "2.5"])
        for t in ticks { XCTAssertTrue((0.3...2.5).contains(t.value), "\(t)") }
    }

    func testLogAxisOverManyDecadesLabelsEveryDecade() {
        // 1.4 down to 2e-5: two labels (1 and 0.01) would leave the range unreadable.
        let ticks = logTicks(2e-5, 1.4)
        XCTAssertEqual(ticks.map(\.label), ["0.0001", "0.001", "0.01", "0.1", "1"])
        XCTAssertEqual(logTicks(0.012, 1.4).map(\.label), ["0.03", "0.1", "0.3", "1"])
    }

    /// Any range, narrow or wide, gets at least four ticks, in order, inside it, with
    /// distinct labels and no two closer than a tenth of the axis (labels never collide).
    func testLogAxisAlwaysHasFourReadableTicks() {
        var ranges: [(Double, Double)] = [(1, 1.0001), (0.99, 1.01), (0.15, 1.4), (0.11, 0.88), (0.55, 1.9),
                                          (0.0308, 0.0699), (13.5, 45.6), (1e-30, 1e30), (1e-300, 1e300)]
        // Starts across two decades (in steps that are no simple fraction of one) and spans
        // from a thousandth of a decade to twelve decades.
        for start in stride(from: -1.0, to: 1, by: 0.0173) {
            for span in [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.36, 0.45, 0.53, 0.6, 0.7, 0.8, 0.85, 0.9, 1, 1.1, 1.3, 1.5,
                         1.7, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 9, 12] {
                ranges.append((pow(10, start), pow(10, start + span)))
            }
        }
        for (lo, hi) in ranges {
            let ticks = logTicks(lo, hi)
            let name = "ticks over \(lo)...\(hi): \(ticks.map(\.label))"
            XCTAssertGreaterThanOrEqual(ticks.count, 4, name)
            XCTAssertEqual(Set(ticks.map(\.label)).count, ticks.count, name)
            for (a, b) in zip(ticks, ticks.dropFirst()) {
                XCTAssertGreaterThanOrEqual(log10(b.value) - log10(a.value), (log10(hi) - log10(lo)) / 10 * (1 - 1e-9), name)
            }
            for t in ticks { XCTAssertTrue(t.value >= lo * (1 - 1e-9) && t.value <= hi * (1 + 1e-9), name) }
        }
    }

    func testPercentTicks() {
        var chart = LineChart(yFormat: .percent, yBounds: 0...1)
        chart.addSeries(name: "test accuracy", points: [(4, 0.86), (8, 0.9), (12, 0.935)])
        XCTAssertEqual(chart.ticks().y.map(\.label), ["85%", "87.5%", "90%", "92.5%", "95%"])
        chart.series[0].points = [(4, 0.25), (96, 1)]
        XCTAssertEqual(chart.ticks().y.map(\.label), ["20%", "40%", "60%", "80%", "100%"])
        // One evaluation at 100%: the axis stops there rather than at 110%.
        chart.series[0].points = [(32, 1)]
        let ticks = chart.ticks().y
        XCTAssertEqual(ticks.last?.label, "100%")
        XCTAssertGreaterThanOrEqual(ticks.count, 4)
        XCTAssertTrue(ticks.allSatisfy { $0.label.hasSuffix("%") && $0.value <= 1 })
        // The x axis stays plain numbers.
        XCTAssertFalse(chart.ticks().x.contains { $0.label.contains("%") })
    }

    /// A marker is a disc around the point, so pixels a marker radius above and
    /// below and beside a point on a sloped line take the series colour only with markers.
    func testSparseSeriesGetsMarkers() {
        let points: [(Double, Double)] = [(0, 0), (10, 3), (20, 1), (30, 2)]
        var chart = LineChart()
        chart.addSeries(name: "test accuracy", points: points)
        XCTAssertTrue(chart.drawsMarkers(series: 0))
        let colour = chart.series[0].color
        let marked = chart.render()
        chart.series[0].markers = .never
        let plain = chart.render()
        for point in points.dropFirst().dropLast() {
            let p = try! XCTUnwrap(chart.pixel(of: point))
            for (dx, dy) in [(0, -3), (0, 3), (-3, 0), (3, 0), (2, 2), (-2, -2)] {
                XCTAssertEqual(marked.pixel(x: p.x + dx, y: p.y + dy), colour, "marker at \(point) + (\(dx), \(dy))")
            }
            XCTAssertNotEqual(plain.pixel(x: p.x, y: p.y - 3), colour, "no marker at \(point) without markers")
        }
    }

    func testDenseSeriesStaysALine() {
        var chart = LineChart()
        chart.addSeries(name: "train loss", points: (0..<200).map { (Double($0), 1 / Double($0 + 1)) })
        chart.addSeries(name: "test loss", points: [(50, 0.1), (100, 0.05), (150, 0.02), (199, 0.01)])
        XCTAssertFalse(chart.drawsMarkers(series: 0))
        XCTAssertTrue(chart.drawsMarkers(series: 1))
        let auto = chart.render()
        chart.series[0].markers = .never
        XCTAssertEqual(auto, chart.render())
    }

    func testSinglePointIsAMarker() {
        for markers in [LineChart.Markers.never, .auto, .always] {
            var chart = LineChart(yFormat: .percent, yBounds: 0...1)
            chart.addSeries(name: "test accuracy", points: [(64, 0.75)], markers: markers)
            let image = chart.render()
            let p = try! XCTUnwrap(chart.pixel(of: (64, 0.75)))
            for (dx, dy) in [(0, 0), (0, -3), (0, 3), (-3, 0), (3, 0)] {
                XCTAssertEqual(image.pixel(x: p.x + dx, y: p.y + dy), chart.series[0].color, "\(markers)")
            }
        }
    }

    /// Points at the ends of the axes (accuracy 100% at the last step) stay clear of the
    /// frame: their markers are whole, with background between them and the frame.
    func testPointsAtTheAxisEndsStayInsideTheFrame() {
        var chart = LineChart(yFormat: .percent, yBounds: 0...1)
        chart.addSeries(name: "test accuracy", points: [(0, 0.5), (50, 0.9), (100, 1)])
        let image = chart.render()
        let colour = chart.series[0].color
        let last = try! XCTUnwrap(chart.pixel(of: (100, 1)))
        let r = LineChart.markerRadius
        for d in 0...r {
            XCTAssertEqual(image.pixel(x: last.x, y: last.y - d), colour)
            XCTAssertEqual(image.pixel(x: last.x + d, y: last.y), colour)
        }
        // The frame (black) lies beyond the marker's white rim, with a pixel to spare.
        let frameTop = try! XCTUnwrap((0..<last.y).last { image.pixel(x: last.x, y: $0) == .black })
        let frameRight = try! XCTUnwrap((last.x..<image.width).first { image.pixel(x: $0, y: last.y) == .black })
        XCTAssertLessThan(frameTop, last.y - r - 1)
        XCTAssertGreaterThan(frameRight, last.x + r + 1)
        XCTAssertEqual(image.pixel(x: last.x, y: last.y - r - 1), .white)
    }

    func testEmptyChartSaysWhy() {
        let plain = LineChart(title: "Test accuracy", yFormat: .percent, yBounds: 0...1)
        var said = plain
        said.emptyMessage = "no evaluation yet"
        XCTAssertNotEqual(plain.render(), said.render())
        XCTAssertEqual(said.ticks().y.last?.label, "100%")
    }

    /// The legend moves to the corner where it hides the least: a rising series fills the
    /// top right, so the top-right corner of the plot shows the series, not the legend's white box.
    func testLegendAvoidsTheData() {
        var chart = LineChart()
        chart.addSeries(name: "rising", points: (0...100).map { (Double($0), Double($0 * $0)) }, markers: .never)
        let image = chart.render()
        let end = try! XCTUnwrap(chart.pixel(of: (100, 10000)))
        XCTAssertEqual(image.pixel(x: end.x, y: end.y), chart.series[0].color)
        var ink = 0
        for y in (end.y - 10)...(end.y + 40) {
            for x in (end.x - 60)...end.x where image.pixel(x: x, y: y) == chart.series[0].color { ink += 1 }
        }
        XCTAssertGreaterThan(ink, 50)
    }
}
