import AsymKernels
import XCTest

/// Fills a tensor with seeded standard normal values.
func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = RNG(seed: seed)
    let t = Tensor(shape: shape)
    for i in 0..<t.count { t[i] = rng.normal() * scale }
    return t
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}

/// The one helper that checks an op's backward pass against central finite differences.
///
/// The scalar under test is L = sum(output * R) for a fixed random R, so dL/doutput = R is
/// what `backward` receives. `forward` recomputes the output from the current `inputs`;
/// `backward(R)` returns the analytic gradient of every input. A sample of coordinates of
/// each input is perturbed by +-eps and the slopes compared; the max relative error is
/// printed, llm.c style, and must stay under `tolerance`.
func checkGradients(_ name: String, inputs: [Tensor], eps: Float = 1e-2, tolerance: Float = 2e-2,
                    probes: Int = 24, forward: () -> Tensor, backward: (Tensor) -> [Tensor],
                    file: StaticString = #filePath, line: UInt = #line) {
    let out = forward()
    let r = randomTensor(out.shape, seed: 99)
    let analytic = backward(r).map { $0.array }
    func loss() -> Double {
        let o = forward()
        var s: Double = 0
        for i in 0..<o.count { s += Double(o[i]) * Double(r[i]) }
        return s
    }
    var rng = RNG(seed: 7)
    var worst: Float = 0
    for (j, x) in inputs.enumerated() {
        for _ in 0..<min(probes, x.count) {
            let i = rng.below(x.count)
            let saved = x[i]
            x[i] = saved + eps; let up = loss()
            x[i] = saved - eps; let down = loss()
            x[i] = saved
            let numeric = Float((up - down) / Double(2 * eps))
            let err = abs(numeric - analytic[j][i]) / max(1, abs(numeric), abs(analytic[j][i]))
            worst = max(worst, err)
            XCTAssertLessThan(err, tolerance, "\(name): input \(j)[\(i)] numeric \(numeric) analytic \(analytic[j][i])",
                              file: file, line: line)
        }
    }
    print("gradcheck \(name): max relative error \(worst)")
}
