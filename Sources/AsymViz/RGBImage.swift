/// An 8-bit-per-channel RGB colour.
package struct RGBColor: Equatable, Sendable {
    package var r: UInt8
    package var g: UInt8
    package var b: UInt8

    package init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
        self.r = r
        self.g = g
        self.b = b
    }

    package static let black = RGBColor(0, 0, 0)
    package static let white = RGBColor(255, 255, 255)
    package static let gray = RGBColor(128, 128, 128)
    package static let lightGray = RGBColor(225, 225, 225)
}

/// A simple in-memory RGB raster with clipped drawing primitives.
///
/// Coordinates are in pixels with (0, 0) at the top-left corner. Every drawing
/// call clips silently, so callers may draw partly (or wholly) off-image.
package struct RGBImage: Equatable, Sendable {
    package let width: Int
    package let height: Int
    /// Row-major RGB triples: the pixel (x, y) starts at `(y * width + x) * 3`.
    package private(set) var pixels: [UInt8]

    /// Creates a `width` x `height` image filled with `background`.
    package init(width: Int, height: Int, background: RGBColor = .white) {
        precondition(width > 0 && height > 0, "image size must be positive")
        self.width = width
        self.height = height
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in stride(from: 0, to: pixels.count, by: 3) {
            pixels[i] = background.r
            pixels[i + 1] = background.g
            pixels[i + 2] = background.b
        }
        self.pixels = pixels
    }

    /// The colour at (x, y), which must lie inside the image.
    package func pixel(x: Int, y: Int) -> RGBColor {
        precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel out of bounds")
        let i = (y * width + x) * 3
        return RGBColor(pixels[i], pixels[i + 1], pixels[i + 2])
    }

    /// Sets one pixel; points outside the image are ignored.
    package mutating func setPixel(x: Int, y: Int, color: RGBColor) {
        guard x >= 0, x < width, y >= 0, y < height else { return }
        let i = (y * width + x) * 3
        pixels[i] = color.r
        pixels[i + 1] = color.g
        pixels[i + 2] = color.b
    }

    /// Fills the rectangle whose top-left corner is (x, y), clipped to the image.
    package mutating func fillRect(x: Int, y: Int, width w: Int, height h: Int, color: RGBColor) {
        let x0 = max(x, 0), x1 = min(x + w, width)
        let y0 = max(y, 0), y1 = min(y + h, height)
        guard x0 < x1, y0 < y1 else { return }
        for py in y0..<y1 {
            for px in x0..<x1 {
                setPixel(x: px, y: py, color: color)
            }
        }
    }

    /// Draws a straight line (Bresenham) from (x0, y0) to (x1, y1), both ends
    /// included. `thickness` > 1 stamps a square of that size at every step.
    package mutating func drawLine(x0: Int, y0: Int, x1: Int, y1: Int, color: RGBColor, thickness: Int = 1) {
        let dx = abs(x1 - x0), dy = -abs(y1 - y0)
        let sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1
        let offset = (thickness - 1) / 2
        var x = x0, y = y0
        var err = dx + dy
        while true {
            if thickness <= 1 {
                setPixel(x: x, y: y, color: color)
            } else {
                fillRect(x: x - offset, y: y - offset, width: thickness, height: thickness, color: color)
            }
            if x == x1 && y == y1 { break }
            let e2 = 2 * err
            if e2 >= dy { err += dy; x += sx }
            if e2 <= dx { err += dx; y += sy }
        }
    }

    /// Copies `other` into this image with its top-left corner at (x, y), clipped.
    package mutating func blit(_ other: RGBImage, x: Int, y: Int) {
        for oy in 0..<other.height {
            for ox in 0..<other.width {
                setPixel(x: x + ox, y: y + oy, color: other.pixel(x: ox, y: oy))
            }
        }
    }

    /// Renders `values` (row-major, `width` x `height`) as a grey-scale image,
    /// mapping the minimum to black and the maximum to white, with each value
    /// enlarged to a `scale` x `scale` block. Constant input renders mid grey;
    /// non-finite values render black (converting them to `UInt8` would trap).
    package static func grayscale(values: [Float], width: Int, height: Int, scale: Int = 1) -> RGBImage {
        precondition(values.count == width * height, "values.count must equal width * height")
        precondition(scale > 0, "scale must be positive")
        let finite = values.filter { $0.isFinite }
        let lo = finite.min() ?? 0, hi = finite.max() ?? 0
        var image = RGBImage(width: width * scale, height: height * scale, background: .black)
        for y in 0..<height {
            for x in 0..<width {
                let v = values[y * width + x]
                guard v.isFinite else { continue }
                // Double avoids overflow of `hi - lo` for extreme Float ranges.
                let t = hi > lo ? (Double(v) - Double(lo)) / (Double(hi) - Double(lo)) : 0.5
                let level = UInt8((t * 255).rounded())
                image.fillRect(x: x * scale, y: y * scale, width: scale, height: scale,
                               color: RGBColor(level, level, level))
            }
        }
        return image
    }
}
