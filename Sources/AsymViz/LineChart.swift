import Foundation

/// A line chart of one or more (x, y) series, rendered with the built-in font:
/// framed plot area with grid lines, at least four labelled ticks per axis, one
/// polyline per series (with a marker at each point where the points are sparse)
/// and a legend in whichever corner of the plot hides the least of the data.
///
/// Points with a non-finite coordinate (NaN losses, for example) or one beyond
/// ±1e300 are left out, so axis arithmetic stays finite; with `logY`, points
/// with y <= 0 are left out too. Empty series and constant data render as an
/// ordinary chart around a default range (with `emptyMessage` in the plot area
/// when nothing at all is plottable).
package struct LineChart {
    /// Whether a series marks each of its points with a dot.
    package enum Markers: Sendable {
        /// Lines only (a lone point, which has no line, still gets its dot).
        case never
        /// A dot at each point when the points lie at least `sparseSpacing`
        /// pixels apart on average along x, so that they read as separate
        /// measurements; dense series stay lines. A lone point always gets one.
        case auto
        /// A dot at every point.
        case always
    }

    /// How tick labels write a value.
    package enum TickFormat: Sendable {
        /// The value itself, in %g style (0.25, 1500, 1.2e+04).
        case plain
        /// The value is a fraction, labelled as a percentage (0.85 reads "85%").
        case percent
    }

    package struct Series {
        package var name: String
        package var points: [(Double, Double)]
        package var color: RGBColor
        package var markers: Markers

        package init(name: String, points: [(Double, Double)], color: RGBColor, markers: Markers = .auto) {
            self.name = name
            self.points = points
            self.color = color
            self.markers = markers
        }
    }

    package var title: String
    package var xLabel: String
    package var yLabel: String
    /// Drawn in order, so later series paint over earlier ones (markers paint over all lines).
    package var series: [Series]
    /// Plot y on a base-10 logarithmic scale.
    package var logY: Bool
    /// How the y tick labels write values.
    package var yFormat: TickFormat
    /// When every plotted y lies in these bounds, the y axis does not extend past them
    /// (an accuracy axis stops at 100% even for a single point at 100%).
    package var yBounds: ClosedRange<Double>?
    /// The x axis covers at least this range besides the data (the steps of a whole
    /// run, so that charts of one run share their x axis and start at step 0).
    package var xInclude: ClosedRange<Double>?
    /// Written in the middle of the plot area when no series has a plottable point.
    package var emptyMessage: String

    /// Distinct series colours (matplotlib's "tab10"), used by `addSeries`.
    package static let palette: [RGBColor] = [
        RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44),
        RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75),
        RGBColor(227, 119, 194), RGBColor(127, 127, 127), RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ]

    /// The least average horizontal distance, in pixels, between successive points
    /// of a `.auto` series for it to get markers.
    package static let sparseSpacing = 12
    /// The radius in pixels of a point's marker (a filled disc with a white rim).
    package static let markerRadius = 3

    package init(title: String = "", xLabel: String = "", yLabel: String = "",
                series: [Series] = [], logY: Bool = false, yFormat: TickFormat = .plain,
                yBounds: ClosedRange<Double>? = nil, xInclude: ClosedRange<Double>? = nil, emptyMessage: String = "") {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.logY = logY
        self.yFormat = yFormat
        self.yBounds = yBounds
        self.xInclude = xInclude
        self.emptyMessage = emptyMessage
    }

    /// Appends a series; without a `color` it takes the next palette colour.
    package mutating func addSeries(name: String, points: [(Double, Double)], color: RGBColor? = nil,
                                    markers: Markers = .auto) {
        series.append(Series(name: name, points: points, color: color ?? Self.palette[series.count % Self.palette.count],
                             markers: markers))
    }

    /// The labelled ticks of both axes, values in data units (not log10 on a log axis).
    package func ticks() -> (x: [(value: Double, label: String)], y: [(value: Double, label: String)]) {
        let (xAxis, yAxis) = axes(plottedPoints())
        return (xAxis.ticks.map { ($0.position, $0.label) },
                yAxis.ticks.map { (logY ? pow(10, $0.position) : $0.position, $0.label) })
    }

    /// Where the data point (x, y) lands on a `width` x `height` rendering, or nil
    /// for a point that is not plotted (non-finite, or y <= 0 on a log axis).
    package func pixel(of point: (Double, Double), width: Int = 640, height: Int = 400) -> (x: Int, y: Int)? {
        guard let p = axisPoint(point) else { return nil }
        let layout = Layout(chart: self, lines: plottedPoints(), width: width, height: height)
        return (layout.px(p.x), layout.py(p.y))
    }

    /// Whether series `index` gets markers on a `width`-pixel-wide rendering.
    package func drawsMarkers(series index: Int, width: Int = 640, height: Int = 400) -> Bool {
        let layout = Layout(chart: self, lines: plottedPoints(), width: width, height: height)
        return layout.hasMarkers(index)
    }

    /// Draws the chart on a white `width` x `height` image.
    package func render(width: Int = 640, height: Int = 400) -> RGBImage {
        var image = RGBImage(width: width, height: height, background: .white)
        let layout = Layout(chart: self, lines: plottedPoints(), width: width, height: height)
        let (left, top, plotWidth, plotHeight) = (layout.left, layout.top, layout.plotWidth, layout.plotHeight)
        let plotBottom = layout.plotBottom

        for tick in layout.xAxis.ticks {
            let x = layout.px(tick.position)
            image.drawLine(x0: x, y0: top, x1: x, y1: plotBottom, color: .lightGray)
            image.drawLine(x0: x, y0: plotBottom, x1: x, y1: plotBottom + 3, color: .black)
            let labelWidth = RGBImage.textSize(tick.label).width
            image.drawText(tick.label, x: x - labelWidth / 2, y: plotBottom + 7, color: .black)
        }
        for tick in layout.yAxis.ticks {
            let y = layout.py(tick.position)
            image.drawLine(x0: left, y0: y, x1: left + plotWidth - 1, y1: y, color: .lightGray)
            image.drawLine(x0: left - 3, y0: y, x1: left, y1: y, color: .black)
            let labelWidth = RGBImage.textSize(tick.label).width
            image.drawText(tick.label, x: left - 6 - labelWidth, y: y - 3, color: .black)
        }
        image.strokeRect(x: left, y: top, width: plotWidth, height: plotHeight, color: .black)

        let pixels = layout.lines.map { $0.map { (x: layout.px($0.x), y: layout.py($0.y)) } }
        for (s, points) in zip(series, pixels) {
            for (a, b) in zip(points, points.dropFirst()) {
                image.drawLine(x0: a.x, y0: a.y, x1: b.x, y1: b.y, color: s.color, thickness: 2)
            }
        }
        // Markers after every line, so no later series' line hides a measurement.
        for (index, (s, points)) in zip(series, pixels).enumerated() where layout.hasMarkers(index) {
            for p in points { image.drawMarker(x: p.x, y: p.y, color: s.color) }
        }

        if layout.lines.allSatisfy(\.isEmpty) && !emptyMessage.isEmpty {
            let size = RGBImage.textSize(emptyMessage)
            let x = left + (plotWidth - size.width) / 2, y = top + (plotHeight - size.height) / 2
            // On a white patch, so no grid line runs through the words.
            image.fillRect(x: x - 4, y: y - 4, width: size.width + 8, height: size.height + 8, color: .white)
            image.drawText(emptyMessage, x: x, y: y, color: .gray)
        }
        if !title.isEmpty {
            let titleWidth = RGBImage.textSize(title, scale: 2).width
            image.drawText(title, x: (width - titleWidth) / 2, y: 10, color: .black, scale: 2)
        }
        if !yLabel.isEmpty {
            image.drawText(yLabel, x: 8, y: top - 14, color: .black)
        }
        if !xLabel.isEmpty {
            let labelWidth = RGBImage.textSize(xLabel).width
            image.drawText(xLabel, x: left + (plotWidth - labelWidth) / 2, y: plotBottom + 21, color: .black)
        }
        drawLegend(on: &image, layout: layout)
        return image
    }

    /// A framed box of colour swatches and series names (series with nothing to plot
    /// left out), in the corner of the plot area that covers the fewest drawn pixels,
    /// top right first on ties.
    private func drawLegend(on image: inout RGBImage, layout: Layout) {
        let entries = series.indices.filter { !layout.lines[$0].isEmpty }
        guard !entries.isEmpty else { return }
        let rowHeight = 12
        let widestName = entries.map { RGBImage.textSize(series[$0].name).width }.max() ?? 0
        let boxWidth = widestName + 36
        let boxHeight = entries.count * rowHeight + 6
        let plotLeft = layout.left, plotTop = layout.top
        let plotRight = layout.left + layout.plotWidth - 1, plotBottom = layout.plotBottom
        let corners = [
            (plotRight - 8 - boxWidth, plotTop + 8), (plotLeft + 8, plotTop + 8),
            (plotRight - 8 - boxWidth, plotBottom - 8 - boxHeight), (plotLeft + 8, plotBottom - 8 - boxHeight),
        ]
        // Data ink (anything but the background and the grid) under the box or
        // within a few pixels of it, so the box does not touch a point either.
        func covered(_ corner: (Int, Int)) -> Int {
            let margin = 4
            let x0 = max(0, corner.0 - margin), x1 = max(x0, min(image.width, corner.0 + boxWidth + margin))
            let y0 = max(0, corner.1 - margin), y1 = max(y0, min(image.height, corner.1 + boxHeight + margin))
            var count = 0
            for y in y0..<y1 {
                for x in x0..<x1 {
                    let p = image.pixel(x: x, y: y)
                    if p != .white && p != .lightGray { count += 1 }
                }
            }
            return count
        }
        let counts = corners.map(covered)
        let (boxX, boxY) = corners[counts.indices.min { counts[$0] < counts[$1] }!]
        image.fillRect(x: boxX, y: boxY, width: boxWidth, height: boxHeight, color: .white)
        image.strokeRect(x: boxX, y: boxY, width: boxWidth, height: boxHeight, color: .gray)
        for (row, index) in entries.enumerated() {
            let s = series[index]
            let y = boxY + 5 + row * rowHeight
            image.fillRect(x: boxX + 6, y: y + 2, width: 18, height: 3, color: s.color)
            if layout.hasMarkers(index) { image.drawMarker(x: boxX + 15, y: y + 3, color: s.color) }
            image.drawText(s.name, x: boxX + 30, y: y, color: .black)
        }
    }

    /// (x, y) in axis units (y is log10(y) on a log axis), or nil when it is not plotted.
    private func axisPoint(_ point: (Double, Double)) -> (x: Double, y: Double)? {
        let (x, y) = point
        guard isPlottable(x), isPlottable(y), !logY || y > 0 else { return nil }
        return (x, logY ? log10(y) : y)
    }

    /// Each series' plotted points, in axis units.
    private func plottedPoints() -> [[(x: Double, y: Double)]] {
        series.map { $0.points.compactMap(axisPoint) }
    }

    private func axes(_ lines: [[(x: Double, y: Double)]]) -> (x: Axis, y: Axis) {
        let xs = lines.flatMap { $0.map(\.x) }
            + [xInclude?.lowerBound, xInclude?.upperBound].compactMap { $0 }.filter(isPlottable)
        let ys = lines.flatMap { $0.map(\.y) }
        let xAxis = linearAxis(min: xs.min() ?? 0, max: xs.max() ?? 1, format: .plain, tight: true)
        var bounds = yBounds
        if logY, let b = bounds { bounds = b.lowerBound > 0 ? log10(b.lowerBound)...log10(b.upperBound) : nil }
        let yAxis = logY ? logAxis(min: ys.min() ?? 0, max: ys.max() ?? 1, format: yFormat)
                         : linearAxis(min: ys.min() ?? 0, max: ys.max() ?? 1, format: yFormat, bounds: bounds)
        return (xAxis, yAxis)
    }

    /// Where the plot area lies on the image and how axis units map to pixels.
    private struct Layout {
        let lines: [[(x: Double, y: Double)]]
        let xAxis: Axis, yAxis: Axis
        let left: Int, top: Int, plotWidth: Int, plotHeight: Int
        /// Pixels between the frame and the data range, so points (and their markers)
        /// at the ends of an axis stay clear of the frame.
        let inset: Int
        let markers: [Bool]

        init(chart: LineChart, lines: [[(x: Double, y: Double)]], width: Int, height: Int) {
            self.lines = lines
            let (xAxis, yAxis) = chart.axes(lines)
            (self.xAxis, self.yAxis) = (xAxis, yAxis)
            // Margins leave room for the title, the y label above the plot, the
            // y tick labels on the left, the x tick labels and x label below, and
            // half of the last x tick label on the right.
            let top = 12 + (chart.title.isEmpty ? 0 : 22) + (chart.yLabel.isEmpty ? 0 : 14)
            let widestYTick = yAxis.ticks.map { RGBImage.textSize($0.label).width }.max() ?? 0
            let left = max(40, widestYTick + 14)
            let bottom = 24 + (chart.xLabel.isEmpty ? 0 : 14)
            let plotWidth = max(2, width - left - 28), plotHeight = max(2, height - top - bottom)
            (self.top, self.left, self.plotWidth, self.plotHeight) = (top, left, plotWidth, plotHeight)
            let inset = min(LineChart.markerRadius + 3, (min(plotWidth, plotHeight) - 1) / 4)
            self.inset = inset
            let xSpan = Double(max(1, plotWidth - 1 - 2 * inset))
            markers = zip(chart.series, lines).map { s, points in
                switch s.markers {
                case .never: return points.count == 1  // a lone point has no line to show it
                case .always: return true
                case .auto:
                    guard points.count > 1 else { return points.count == 1 }
                    let xs = points.map { xAxis.fraction($0.x) * xSpan }
                    let spread = xs.max()! - xs.min()!
                    return spread == 0 || spread / Double(points.count - 1) >= Double(LineChart.sparseSpacing)
                }
            }
        }

        var plotBottom: Int { top + plotHeight - 1 }
        func px(_ x: Double) -> Int {
            left + inset + Int((xAxis.fraction(x) * Double(max(1, plotWidth - 1 - 2 * inset))).rounded())
        }
        func py(_ y: Double) -> Int {
            plotBottom - inset - Int((yAxis.fraction(y) * Double(max(1, plotHeight - 1 - 2 * inset))).rounded())
        }
        func hasMarkers(_ series: Int) -> Bool { markers[series] }
    }
}

/// One chart axis: its range in axis units (log10 of the value on a log axis)
/// and its labelled ticks.
private struct Axis {
    var lo: Double
    var hi: Double
    var ticks: [(position: Double, label: String)]

    /// Where `v` lies along the axis, 0 at `lo` and 1 at `hi`.
    func fraction(_ v: Double) -> Double {
        (v - lo) / (hi - lo)
    }
}

/// Keeps spans and tick arithmetic finite (see `LineChart`).
private func isPlottable(_ v: Double) -> Bool {
    v.isFinite && abs(v) <= 1e300
}

/// A linear axis covering min...max, widened outward to whole tick steps so
/// that the first and last ticks sit at the ends of the axis. With `bounds`
/// holding min...max, the axis stays inside them. A `tight` axis widens by at
/// most a tenth of the range (with four to seven ticks); where no step allows
/// that, it covers min...max exactly, with the ticks inside.
private func linearAxis(min: Double, max: Double, format: LineChart.TickFormat,
                        bounds: ClosedRange<Double>? = nil, tight: Bool = false) -> Axis {
    var lo = min, hi = max
    // Constant (or numerically constant) data gets a range around its value.
    if hi - lo <= Swift.max(abs(lo), abs(hi)) * 1e-9 {
        let pad = lo == 0 ? 1 : abs(lo) * 0.1
        lo -= pad
        hi += pad
    }
    let inBounds = bounds.map { $0.contains(min) && $0.contains(max) } ?? false
    if let b = bounds, inBounds {
        lo = Swift.max(lo, b.lowerBound)
        hi = Swift.min(hi, b.upperBound)
    }
    func widened(_ step: Double) -> (lo: Double, hi: Double) {
        ((lo / step + 1e-9).rounded(.down) * step, (hi / step - 1e-9).rounded(.up) * step)
    }
    var step = niceStep(lo: lo, hi: hi)
    var (first, last) = widened(step)
    if tight && last - first > 1.1 * (hi - lo) {
        let snug = niceSteps(lo: lo, hi: hi, inside: false).filter { candidate in
            let (a, b) = widened(candidate.step)
            return (4...7).contains(candidate.count) && b - a <= 1.1 * (hi - lo)
        }
        if let best = snug.min(by: { tickBadness($0.count) < tickBadness($1.count) }) {
            step = best.step
            (first, last) = widened(step)
        } else {
            step = niceStep(lo: lo, hi: hi, inside: true)
            (first, last) = (lo, hi)
        }
    }
    if let b = bounds, inBounds {
        first = Swift.max(first, b.lowerBound)
        last = Swift.min(last, b.upperBound)
    }
    let ticks = stride(from: (first / step - 1e-9).rounded(.up), through: (last / step + 1e-9).rounded(.down), by: 1)
        .map { i in (position: i * step, label: format.label(i * step, step: step)) }
    return Axis(lo: first, hi: last, ticks: ticks)
}

/// The step of 1, 2, 2.5 or 5 times a power of ten whose tick count over
/// lo...hi is closest to five, and at least four where a step gives four (ties
/// go to the larger step). Ticks are counted outward from the range, as
/// `linearAxis` places them, or only those `inside` it.
private func niceStep(lo: Double, hi: Double, inside: Bool = false) -> Double {
    niceSteps(lo: lo, hi: hi, inside: inside).min { tickBadness($0.count) < tickBadness($1.count) }!.step
}

/// How far a tick count is from the five an axis aims at; under four counts as far off.
private func tickBadness(_ count: Double) -> Double {
    abs(count - 5) + (count < 4 ? 100 : 0)
}

/// Every step of 1, 2, 2.5 or 5 times a power of ten from about a tenth to a
/// hundredth of hi - lo, largest first, with its tick count (see `niceStep`).
private func niceSteps(lo: Double, hi: Double, inside: Bool) -> [(step: Double, count: Double)] {
    let magnitude = log10(hi - lo).rounded(.down)
    return [magnitude, magnitude - 1, magnitude - 2].flatMap { exponent in
        [5, 2.5, 2, 1].map { mantissa in
            let step = mantissa * pow(10, exponent)
            let count = inside
                ? (hi / step).rounded(.down) - (lo / step).rounded(.up) + 1
                : (hi / step - 1e-9).rounded(.up) - (lo / step + 1e-9).rounded(.down) + 1
            return (step, count)
        }
    }
}

/// A log axis over min...max, given in log10 units. The range is not widened;
/// ticks are the candidate set inside it that is not crowded (neighbouring ticks
/// at least a tenth of the axis apart) and has a count closest to five, with at
/// least four whenever a candidate has four: powers of ten (every one, or every
/// n-th over many decades), 1-3, 1-2-5, 1-2-3-5, 1-1.5-2-3-5-7 or 1..9 per decade,
/// linear ticks (up to the first that crowds the one below) for ranges of about a decade
/// or less, or 1-1.2-1.5-2-2.5-3-4-5-6-8
/// per decade. Ties favour the earlier set.
private func logAxis(min: Double, max: Double, format: LineChart.TickFormat) -> Axis {
    var lo = min, hi = max
    if hi - lo < 1e-6 {
        lo -= 0.5
        hi += 0.5
    }
    let valueLo = pow(10, lo), valueHi = pow(10, hi)
    func inRange(_ v: Double) -> Bool {
        v > 0 && v >= valueLo * (1 - 1e-9) && v <= valueHi * (1 + 1e-9)
    }
    func perDecade(_ mantissas: [Double], everyNth: Double = 1) -> [(Double, String)] {
        stride(from: (lo / everyNth).rounded(.down) * everyNth, through: hi.rounded(.up), by: everyNth).flatMap { exponent in
            mantissas.map { $0 * pow(10, exponent) }
        }.filter(inRange).map { ($0, format.label($0, step: $0)) }
    }
    let decades = hi - lo
    // Linear ticks up to the first that would crowd the one below (they bunch up at the top).
    func linear(_ step: Double) -> [(Double, String)] {
        var kept: [Double] = []
        for v in stride(from: (valueLo / step).rounded(.up), through: (valueHi / step).rounded(.down), by: 1).map({ $0 * step })
        where inRange(v) {
            if let below = kept.last, log10(v) - log10(below) < decades / 10 { break }
            kept.append(v)
        }
        return kept.map { ($0, format.label($0, step: step)) }
    }
    // Every n-th power for n = 1, 2, 3, 5, 10, 20, 30, 50, ... up to a third of the decades.
    let strides = (0...3).flatMap { k in [1.0, 2, 3, 5].map { $0 * pow(10, Double(k)) } }
    var candidates = strides.filter { $0 == 1 || $0 <= decades / 3 }.map { perDecade([1], everyNth: $0) }
    candidates += [[1, 3], [1, 2, 5], [1, 2, 3, 5], [1, 1.5, 2, 3, 5, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9]].map { perDecade($0) }
    // Linear ticks only read well within about a decade; beyond it they all bunch at the top.
    if decades <= 1.5 {
        candidates += niceSteps(lo: valueLo, hi: valueHi, inside: true).filter { $0.count >= 3 && $0.count <= 8 }.map { linear($0.step) }
    }
    // Nearly even in log: for half a decade or so, where 1..9 crowds at the top and linear ticks too.
    candidates.append(perDecade([1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8]))
    let readable = candidates.filter { ticks in
        zip(ticks, ticks.dropFirst()).allSatisfy { log10($1.0) - log10($0.0) >= decades / 10 }
    }
    // Fewer than four ticks only when no readable set has four. min(by:) keeps the first
    // of equally good candidates, favouring powers of ten. Powers of ten are never
    // crowded, so `readable` is never empty.
    let best = readable.min { tickBadness(Double($0.count)) < tickBadness(Double($1.count)) }!
    return Axis(lo: lo, hi: hi, ticks: best.map { (position: log10($0.0), label: $0.1) })
}

extension LineChart.TickFormat {
    /// A short label for tick value `v`: at least four significant digits, more
    /// when needed to tell ticks `step` apart, in %g style (0.25, 1500, 1.2e+04);
    /// a percentage writes 100 v with a "%" after it.
    fileprivate func label(_ v: Double, step: Double) -> String {
        switch self {
        case .plain: return formatTick(v, step: step)
        case .percent: return formatTick(100 * v, step: 100 * step) + "%"
        }
    }
}

/// `TickFormat.plain`'s label for `v` among ticks `step` apart.
private func formatTick(_ v: Double, step: Double) -> String {
    let leadingDigit = log10(max(abs(v), step)).rounded(.down)
    let stepDigit = log10(step).rounded(.down)
    let digits = min(15, max(4, Int(leadingDigit - stepDigit) + 2))
    // `v == 0 ? 0 : v` turns -0.0 into 0.0 so no tick reads "-0".
    return String(format: "%.\(digits)g", v == 0 ? 0 : v)
}

extension RGBImage {
    /// Draws the one-pixel outline of a `width` x `height` rectangle at (x, y).
    fileprivate mutating func strokeRect(x: Int, y: Int, width: Int, height: Int, color: RGBColor) {
        let right = x + width - 1, bottom = y + height - 1
        drawLine(x0: x, y0: y, x1: right, y1: y, color: color)
        drawLine(x0: x, y0: bottom, x1: right, y1: bottom, color: color)
        drawLine(x0: x, y0: y, x1: x, y1: bottom, color: color)
        drawLine(x0: right, y0: y, x1: right, y1: bottom, color: color)
    }

    /// Draws a point's marker: a disc of radius `LineChart.markerRadius` in `color`
    /// centred on (x, y), inside a one-pixel white rim that parts it from lines it sits on.
    fileprivate mutating func drawMarker(x: Int, y: Int, color: RGBColor) {
        let r = LineChart.markerRadius
        for (radius, c) in [(r + 1, RGBColor.white), (r, color)] {
            for dy in -radius...radius {
                for dx in -radius...radius where dx * dx + dy * dy <= radius * radius + radius {
                    setPixel(x: x + dx, y: y + dy, color: c)
                }
            }
        }
    }
}
