/// Buffers that a model's layers share by liveness instead of owning one each (docs/DESIGN.md
/// §10). In a sequential model an input gradient is read only by the layer before, and an
/// output that no backward pass reads only by the layer after: each lives until the next
/// layer is done with it. A layer takes the first buffer that holds nothing it still reads
/// (`avoiding`: its input, or the output gradient, and its own temporaries), so a few buffers,
/// each as large as the largest map, serve every layer in turn, forward and backward.
package final class ActivationArena {
    private var buffers: [Tensor] = []

    package init() {}

    /// A buffer shaped `shape` (contents unspecified) that is none of `busy`.
    package func tensor(shape: [Int], avoiding busy: [Tensor?]) -> Tensor {
        let free = buffers.first { b in !busy.contains { $0 === b } }
        if let free { return Tensor.reuse(free, shape: shape) }
        let t = Tensor(shape: shape)
        buffers.append(t)
        return t
    }
}
