/// Softmax cross-entropy over logits [batch, classes].
///
/// Returns the summed loss over the batch and the number of correct predictions, and writes
/// `dLogits = (softmax - onehot) / normalizer`. The normalizer is the *global* batch size,
/// so that shards of one global batch on several ranks add up to the mean over all of it.
@discardableResult
package func softmaxCrossEntropy(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                                batch: Int, classes: Int, normalizer: Int,
                                dLogits: UnsafeMutablePointer<Float>?) -> (lossSum: Double, correct: Int) {
    var lossSum: Double = 0
    var correct = 0
    let scale = 1 / Float(normalizer)
    for b in 0..<batch {
        let z = logits + b * classes
        var maxZ = z[0], arg = 0
        for k in 1..<classes where z[k] > maxZ { maxZ = z[k]; arg = k }
        var sum: Float = 0
        for k in 0..<classes { sum += expf(z[k] - maxZ) }
        let label = Int(labels[b])
        lossSum += Double(logf(sum) - (z[label] - maxZ))
        if arg == label { correct += 1 }
        if let dLogits {
            let d = dLogits + b * classes
            let inv = 1 / sum
            for k in 0..<classes { d[k] = expf(z[k] - maxZ) * inv * scale }
            d[label] -= scale
        }
    }
    return (lossSum, correct)
}

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
