import Foundation

/// Image similarity on pixel values in [0, 1] (8-bit pixel / 255).
package enum ImageQuality {
    /// Peak signal-to-noise ratio in dB, 10 log10(1 / MSE) for a peak of 1; +infinity for
    /// identical images.
    package static func psnr(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        precondition(a.count == b.count && !a.isEmpty, "psnr of \(a.count) and \(b.count) pixels")
        var sum = 0.0
        for (x, y) in zip(a, b) { sum += Double(x - y) * Double(x - y) }
        return sum == 0 ? .infinity : 10 * log10(Double(a.count) / sum)
    }

    /// The standard SSIM window (Wang et al. 2004): 11 x 11 Gaussian, sigma 1.5, sum 1.
    package static let window: [Double] = {
        let radius = 5, sigma = 1.5
        let g = (-radius...radius).map { exp(-Double($0 * $0) / (2 * sigma * sigma)) }
        let outer = g.flatMap { a in g.map { a * $0 } }
        let total = outer.reduce(0, +)
        return outer.map { $0 / total }
    }()
    static let windowSize = 11

    /// Mean SSIM of two images [channels, height, width] (Wang et al. 2004): local statistics
    /// under the 11 x 11 Gaussian window at every position where it fits inside the image
    /// (MATLAB's 'valid', no padding), C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1, averaged
    /// over positions and channels. 1 for identical images.
    package static func ssim(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>, channels: Int, height: Int, width: Int) -> Double {
        precondition(height >= windowSize && width >= windowSize, "SSIM needs images of at least \(windowSize)x\(windowSize)")
        precondition(a.count == channels * height * width && b.count == a.count)
        let c1 = 0.0001, c2 = 0.0009, k = windowSize
        let a = Array(a), b = Array(b)
        var total = 0.0, positions = 0
        for c in 0..<channels {
            for top in 0...(height - k) {
                for left in 0...(width - k) {
                    var mx = 0.0, my = 0.0, xx = 0.0, yy = 0.0, xy = 0.0
                    for i in 0..<k {
                        for j in 0..<k {
                            let w = window[i * k + j], p = (c * height + top + i) * width + left + j
                            let x = Double(a[p]), y = Double(b[p])
                            mx += w * x; my += w * y
                            xx += w * x * x; yy += w * y * y; xy += w * x * y
                        }
                    }
                    let vx = xx - mx * mx, vy = yy - my * my, cov = xy - mx * my
                    total += (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
                    positions += 1
                }
            }
        }
        return total / Double(positions)
    }

    /// Mean PSNR and mean SSIM over pairs of image sets [n][channels, height, width].
    package static func compare(_ a: [Float], _ b: [Float], shape: [Int]) -> (psnr: Double, ssim: Double) {
        let size = shape.reduce(1, *), n = a.count / size
        var p = 0.0, s = 0.0
        for i in 0..<n {
            let x = a[(i * size)..<((i + 1) * size)], y = b[(i * size)..<((i + 1) * size)]
            p += psnr(x, y)
            s += ssim(x, y, channels: shape[0], height: shape[1], width: shape[2])
        }
        return (p / Double(n), s / Double(n))
    }
}
