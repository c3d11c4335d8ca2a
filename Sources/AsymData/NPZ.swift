/// Loads the train and test splits of a NumPy .npz file (`np.savez`, stored, or
/// `np.savez_compressed`, deflated) that holds the arrays `x_train`, `y_train`, `x_test` and
/// `y_test`.
///
/// Images are uint8, kept as bytes and normalised batch by batch as CIFAR-10's are (pixel /
/// 255, then `normalization`), or float32 or float64, taken as they are (then `normalization`,
/// if given). Their layout follows from their shape and `input` ([C, H, W], the model's):
/// (N, C, H, W) is NCHW, (N, H, W, C) NHWC, and (N, H, W) one channel; a shape that fits both
/// NCHW and NHWC (C = H = W) is read as NCHW. Labels are integers, shaped (N,) or (N, 1); the
/// classes are 0 ... the largest label of either split. Every problem is a `DataError` that
/// names the file and the array.
package func loadNPZ(path: String, input: [Int], normalization: Normalization?) throws -> (train: Dataset, test: Dataset) {
    let save = "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
    let archive = try ZipArchive(path: path, bytes: try readFile(path, advice: "set data.path to a .npz file written by \(save)"))
    func array(_ name: String) throws -> NPYArray {
        guard let member = archive.members.first(where: { $0.name == name + ".npy" }) else {
            let held = archive.members.map { $0.name.hasSuffix(".npy") ? String($0.name.dropLast(4)) : $0.name }
            throw DataError.malformed(path: path, detail: "no array '\(name)' (it holds \(held.isEmpty ? "none" : held.joined(separator: ", "))); write all four: \(save)")
        }
        return try NPYArray(try archive.contents(of: member), path: "\(path): \(member.name)")
    }
    let (xTrain, yTrain, xTest, yTest) = (try array("x_train"), try array("y_train"), try array("x_test"), try array("y_test"))
    let trainLabels = try npzLabels(yTrain, images: xTrain), testLabels = try npzLabels(yTest, images: xTest)
    let classes = Int((trainLabels + testLabels).max()!) + 1
    func split(_ x: NPYArray, _ labels: [Int32], _ name: String) throws -> Dataset {
        let (pixels, zero) = try npzPixels(x, input: input, normalization: normalization)
        return Dataset(name: "\(lastPathComponent(path))/\(name)", channels: input[0], height: input[1], width: input[2],
                       classes: classes, pixels: pixels, labels: labels, zeroPixel: zero)
    }
    return (try split(xTrain, trainLabels, "train"), try split(xTest, testLabels, "test"))
}

/// The labels of `y` for the images `images`: integers >= 0 in (N,) or (N, 1).
private func npzLabels(_ y: NPYArray, images x: NPYArray) throws -> [Int32] {
    guard let n = x.shape.first, n > 0 else {
        throw DataError.malformed(path: x.path, detail: "shape \(x.shapeText) holds no images")
    }
    guard n <= Int(Int32.max) else {
        throw DataError.malformed(path: x.path, detail: "\(n) images is more than this trainer indexes (2^31 - 1)")
    }
    guard y.shape == [n] || y.shape == [n, 1] else {
        throw DataError.malformed(path: y.path, detail: "shape \(y.shapeText) does not fit \(n) images: expected (\(n),) or (\(n), 1)")
    }
    if case .float = y.element {
        throw DataError.malformed(path: y.path, detail: "labels are \(y.element.name); they must be integers (y.astype(np.int64))")
    }
    return try (0..<n).map { i in
        guard let label = y.integer(i), label >= 0, label <= Int(Int32.max) else {
            throw DataError.malformed(path: y.path, detail: "label \(y.integer(i).map(String.init) ?? "beyond 2^63") at index \(i) is not a class index 0, 1, ... (below 2^31)")
        }
        return Int32(label)
    }
}

/// The images of `x` in NCHW order, and for floats the value of a pixel of 0 once normalised.
private func npzPixels(_ x: NPYArray, input: [Int], normalization: Normalization?) throws -> (Dataset.Pixels, [Float]?) {
    let (c, h, w) = (input[0], input[1], input[2])
    let sample = Array(x.shape.dropFirst())
    let channelsLast: Bool
    if x.shape.count == 4 && sample == [c, h, w] || x.shape.count == 3 && c == 1 && sample == [h, w] {
        channelsLast = false
    } else if x.shape.count == 4 && sample == [h, w, c] {
        channelsLast = true
    } else {
        let fits = ["(N, \(c), \(h), \(w)) (NCHW)", "(N, \(h), \(w), \(c)) (NHWC)"] + (c == 1 ? ["(N, \(h), \(w))"] : [])
        throw DataError.malformed(path: x.path, detail: "shape \(x.shapeText) does not fit model.input \(input): expected \(fits.joined(separator: ", "))")
    }
    let n = x.shape[0], plane = h * w
    /// body(source element, NCHW position, channel) for every element.
    func reorder(_ body: (Int, Int, Int) -> Void) {
        for s in 0..<n {
            for ch in 0..<c {
                for p in 0..<plane {
                    body(channelsLast ? (s * plane + p) * c + ch : (s * c + ch) * plane + p, (s * c + ch) * plane + p, ch)
                }
            }
        }
    }
    switch x.element {
    case .unsigned(bytes: 1):
        let table = try pixelTable(normalization, channels: c, dataset: x.path)
        var bytes = [UInt8](repeating: 0, count: x.count)
        x.withData { d in reorder { from, to, _ in bytes[to] = d[from] } }
        return (.bytes(bytes, table: table), nil)
    case .float(let size):
        let (mean, std) = try normalizationPerChannel(normalization, channels: c, dataset: x.path)
        var floats = [Float](repeating: 0, count: x.count)
        var bad: Int?
        x.withData { d in
            reorder { from, to, ch in
                let v = size == 4 ? d.loadUnaligned(fromByteOffset: 4 * from, as: Float.self)
                    : Float(d.loadUnaligned(fromByteOffset: 8 * from, as: Double.self))
                if !v.isFinite && bad == nil { bad = from }
                floats[to] = (v - mean[ch]) / std[ch]
            }
        }
        if let bad {
            throw DataError.malformed(path: x.path, detail: "element \(bad) is not a finite number; images must be finite")
        }
        return (.floats(floats), (0..<c).map { (0 - mean[$0]) / std[$0] })
    default:
        throw DataError.malformed(path: x.path, detail: "images are \(x.element.name); they must be uint8, float32 or float64 (x.astype(np.uint8))")
    }
}
