import Foundation

/// A line chart of one or more (x, y) series, rendered with the built-in font:
/// framed plot area with grid lines, 4-6 labelled ticks per axis, one polyline
/// per series and a legend in the top-right corner.
///
/// Points with a non-finite coordinate (NaN losses, for example) or one beyond
/// ±1e300 are left out, so axis arithmetic stays finite; with `logY`, points
/// with y <= 0 are left out too. Empty series and constant data render as an
/// ordinary chart around a default range.
package struct LineChart {
    package var title: String
    package var xLabel: String
    package var yLabel: String
    /// Drawn in order, so later series paint over earlier ones.
    package var series: [(name: String, points: [(Double, Double)], color: RGBColor)]
    /// Plot y on a base-10 logarithmic scale.
    package var logY: Bool

    /// Distinct series colours (matplotlib's "tab10"), used by `addSeries`.
    package static let palette: [RGBColor] = [
        RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44),
        RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75),
        RGBColor(227, 119, 194), RGBColor(127, 127, 127), RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ]

    package init(title: String = "", xLabel: String = "", yLabel: String = "",
                series: [(name: String, points: [(Double, Double)], color: RGBColor)] = [],
                logY: Bool = false) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.logY = logY
    }

    /// Appends a series; without a `color` it takes the next palette colour.
    package mutating func addSeries(name: String, points: [(Double, Double)], color: RGBColor? = nil) {
        series.append((name, points, color ?? Self.palette[series.count % Self.palette.count]))
    }

    /// Draws the chart on a white `width` x `height` image.
    package func render(width: Int = 640, height: Int = 400) -> RGBImage {
        var image = RGBImage(width: width, height: height, background: .white)

        // Points in axis units: y is log10(y) on a log axis.
        let lines: [[(x: Double, y: Double)]] = series.map { s in
            s.points.compactMap { x, y in
                guard isPlottable(x), isPlottable(y), !logY || y > 0 else { return nil }
                return (x, logY ? log10(y) : y)
            }
        }
        let xs = lines.flatMap { $0.map(\.x) }
        let ys = lines.flatMap { $0.map(\.y) }
        let xAxis = linearAxis(min: xs.min() ?? 0, max: xs.max() ?? 1)
        let yAxis = logY ? logAxis(min: ys.min() ?? 0, max: ys.max() ?? 1)
                         : linearAxis(min: ys.min() ?? 0, max: ys.max() ?? 1)

        // Margins leave room for the title, the y label above the plot, the
        // y tick labels on the left, the x tick labels and x label below, and
        // half of the last x tick label on the right.
        let top = 12 + (title.isEmpty ? 0 : 22) + (yLabel.isEmpty ? 0 : 14)
        let widestYTick = yAxis.ticks.map { RGBImage.textSize($0.label).width }.max() ?? 0
        let left = max(40, widestYTick + 14)
        let bottom = 24 + (xLabel.isEmpty ? 0 : 14)
        let plotWidth = max(2, width - left - 28)
        let plotHeight = max(2, height - top - bottom)
        let plotBottom = top + plotHeight - 1
        func px(_ x: Double) -> Int { left + Int((xAxis.fraction(x) * Double(plotWidth - 1)).rounded()) }
        func py(_ y: Double) -> Int { plotBottom - Int((yAxis.fraction(y) * Double(plotHeight - 1)).rounded()) }

        for tick in xAxis.ticks {
            let x = px(tick.position)
            image.drawLine(x0: x, y0: top, x1: x, y1: plotBottom, color: .lightGray)
            image.drawLine(x0: x, y0: plotBottom, x1: x, y1: plotBottom + 3, color: .black)
            let labelWidth = RGBImage.textSize(tick.label).width
            image.drawText(tick.label, x: x - labelWidth / 2, y: plotBottom + 7, color: .black)
        }
        for tick in yAxis.ticks {
            let y = py(tick.position)
            image.drawLine(x0: left, y0: y, x1: left + plotWidth - 1, y1: y, color: .lightGray)
            image.drawLine(x0: left - 3, y0: y, x1: left, y1: y, color: .black)
            let labelWidth = RGBImage.textSize(tick.label).width
            image.drawText(tick.label, x: left - 6 - labelWidth, y: y - 3, color: .black)
        }

        for (s, points) in zip(series, lines) {
            let pixels = points.map { (x: px($0.x), y: py($0.y)) }
            // A lone point has no segment to draw, so mark it with a dot.
            if pixels.count == 1 {
                image.fillRect(x: pixels[0].x - 2, y: pixels[0].y - 2, width: 5, height: 5, color: s.color)
            }
            for (a, b) in zip(pixels, pixels.dropFirst()) {
                image.drawLine(x0: a.x, y0: a.y, x1: b.x, y1: b.y, color: s.color, thickness: 2)
            }
        }
        image.strokeRect(x: left, y: top, width: plotWidth, height: plotHeight, color: .black)

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
        drawLegend(on: &image, plotRight: left + plotWidth - 1, plotTop: top)
        return image
    }

    /// A framed box of colour swatches and series names in the plot's top-right corner.
    private func drawLegend(on image: inout RGBImage, plotRight: Int, plotTop: Int) {
        guard !series.isEmpty else { return }
        let rowHeight = 12
        let widestName = series.map { RGBImage.textSize($0.name).width }.max() ?? 0
        let boxWidth = widestName + 36
        let boxHeight = series.count * rowHeight + 6
        let boxX = plotRight - 8 - boxWidth
        let boxY = plotTop + 8
        image.fillRect(x: boxX, y: boxY, width: boxWidth, height: boxHeight, color: .white)
        image.strokeRect(x: boxX, y: boxY, width: boxWidth, height: boxHeight, color: .gray)
        for (row, s) in series.enumerated() {
            let y = boxY + 5 + row * rowHeight
            image.fillRect(x: boxX + 6, y: y + 2, width: 18, height: 3, color: s.color)
            image.drawText(s.name, x: boxX + 30, y: y, color: .black)
        }
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
/// that the first and last ticks sit on the frame.
private func linearAxis(min: Double, max: Double) -> Axis {
    var lo = min, hi = max
    // Constant (or numerically constant) data gets a range around its value.
    if hi - lo <= Swift.max(abs(lo), abs(hi)) * 1e-9 {
        let pad = lo == 0 ? 1 : abs(lo) * 0.1
        lo -= pad
        hi += pad
    }
    let step = niceStep(lo: lo, hi: hi)
    let first = (lo / step + 1e-9).rounded(.down)
    let last = (hi / step - 1e-9).rounded(.up)
    let ticks = stride(from: first, through: last, by: 1).map { i in
        (position: i * step, label: formatTick(i * step, step: step))
    }
    return Axis(lo: first * step, hi: last * step, ticks: ticks)
}

/// The step of 1, 2, 2.5 or 5 times a power of ten whose tick count over
/// lo...hi is closest to five (ties go to the larger step). Ticks are counted
/// outward from the range, as `linearAxis` places them, or only those `inside` it.
private func niceStep(lo: Double, hi: Double, inside: Bool = false) -> Double {
    let magnitude = log10(hi - lo).rounded(.down)
    var best = pow(10, magnitude)
    var bestDistance = Double.infinity
    for exponent in [magnitude, magnitude - 1, magnitude - 2] {
        for mantissa in [5, 2.5, 2, 1] {
            let step = mantissa * pow(10, exponent)
            let count = inside
                ? (hi / step).rounded(.down) - (lo / step).rounded(.up) + 1
                : (hi / step - 1e-9).rounded(.up) - (lo / step + 1e-9).rounded(.down) + 1
            if abs(count - 5) < bestDistance {
                best = step
                bestDistance = abs(count - 5)
            }
        }
    }
    return best
}

/// A log axis over min...max, given in log10 units. The range is not widened;
/// ticks are whichever uncrowded candidate set inside it has a count closest
/// to five: powers of ten (thinned over many decades), 1-3, 1-2-5 or 1..9 per
/// decade, or plain linear ticks for ranges narrower than a decade.
private func logAxis(min: Double, max: Double) -> Axis {
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
        stride(from: lo.rounded(.down), through: hi.rounded(.up), by: everyNth).flatMap { exponent in
            mantissas.map { $0 * pow(10, exponent) }
        }.filter(inRange).map { ($0, formatTick($0, step: $0)) }
    }
    let linearStep = niceStep(lo: valueLo, hi: valueHi, inside: true)
    let linear = stride(from: (valueLo / linearStep).rounded(.up), through: (valueHi / linearStep).rounded(.down), by: 1)
        .map { $0 * linearStep }.filter(inRange).map { ($0, formatTick($0, step: linearStep)) }
    let candidates = [
        perDecade([1], everyNth: Swift.max(1, ((hi - lo) / 5).rounded(.up))),
        perDecade([1, 3]),
        perDecade([1, 2, 5]),
        perDecade([1, 2, 3, 4, 5, 6, 7, 8, 9]),
        linear,
    ]
    // Linear ticks bunch up at the top of a log axis; drop sets whose labels would collide.
    let readable = candidates.filter { ticks in
        zip(ticks, ticks.dropFirst()).allSatisfy { log10($1.0) - log10($0.0) >= (hi - lo) / 10 }
    }
    // min(by:) keeps the first of equally good candidates, favouring powers of ten.
    // The powers-of-ten set is never crowded, so `readable` is never empty.
    let best = readable.min { abs($0.count - 5) < abs($1.count - 5) }!
    return Axis(lo: lo, hi: hi, ticks: best.map { (position: log10($0.0), label: $0.1) })
}

/// A short label for tick value `v`: at least four significant digits, more
/// when needed to tell ticks `step` apart, in %g style (0.25, 1500, 1.2e+04).
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
}
