/// A grow-only scratch buffer: kernels borrow temporary memory from it instead of
/// allocating on every call. Layers run one after another, so a model shares one.
package final class Scratch: @unchecked Sendable {
    private var buffers: [UnsafeMutablePointer<Float>] = []
    private var capacities: [Int] = []

    /// Buffers allocated or grown by any scratch since the process started (a test checks
    /// that steady-state training steps add none).
    package nonisolated(unsafe) static var growths = 0

    package init() {}

    deinit { for b in buffers { b.deallocate() } }

    /// Buffer number `slot` with room for at least `count` floats (contents unspecified).
    package func buffer(_ slot: Int, count: Int) -> UnsafeMutablePointer<Float> {
        while buffers.count <= slot {
            buffers.append(.allocate(capacity: 1))
            capacities.append(1)
        }
        if capacities[slot] < count {
            buffers[slot].deallocate()
            buffers[slot] = .allocate(capacity: count)
            capacities[slot] = count
            Scratch.growths += 1
        }
        return buffers[slot]
    }
}
