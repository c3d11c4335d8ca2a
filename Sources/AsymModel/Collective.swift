import AsymKernels

/// How a trainer takes part in a multi-rank job. One process needs none of it.
package protocol Collective: AnyObject {
    /// This trusted rank's index among the trusted ranks, and their number: it takes shard
    /// `index` of every global batch (and of the test set).
    var trustedIndex: Int { get }
    var trustedCount: Int { get }
    /// Sums the packed gradients across the trusted ranks, in place (untrusted shares are
    /// already in them: they reach their trusted rank first).
    func sumGradients(_ values: UnsafeMutablePointer<Float>, count: Int) throws
    /// Sums values across the trusted ranks (losses, accuracy counts).
    func sumOverTrusted(_ values: [Double]) throws -> [Double]
    /// Sums floats across the trusted ranks, in place (batch-norm statistics).
    func sumOverTrusted(_ values: UnsafeMutablePointer<Float>, count: Int) throws
    /// Called after every optimizer step (`step` is the number of steps taken); checks now
    /// and then that the replicas agree.
    func stepApplied(step: Int, parameters: [Parameter]) throws
    /// Ends the job unless every trusted rank holds bit-identical `tensors`.
    func checkReplicas(_ tensors: [Tensor], what: String) throws
}
