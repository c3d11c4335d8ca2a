/// A dense float32 tensor in row-major (NCHW for feature maps) order; inside a model, maps
/// between oneDNN convolutions are channel-blocked instead (`ConvBlocks`).
///
/// A final class over one manually owned buffer: kernels read and write it through raw
/// pointers with no copy-on-write checks, and layers keep their tensors between steps so
/// that training does not allocate in its hot path (see `Tensor.reuse`).
package final class Tensor: @unchecked Sendable {
    package private(set) var shape: [Int]
    package private(set) var count: Int
    package private(set) var data: UnsafeMutablePointer<Float>
    package private(set) var capacity: Int

    /// A zero-filled tensor of the given shape.
    package init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        count = shape.reduce(1, *)
        capacity = max(count, 1)
        data = .allocate(capacity: capacity)
        data.initialize(repeating: 0, count: capacity)
    }

    /// A tensor holding a copy of `values`.
    package convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    deinit { data.deallocate() }

    /// Returns `tensor` reshaped to `shape`, reusing its buffer when it is large enough, or
    /// giving it a new buffer otherwise (the old one is freed). The contents are unspecified;
    /// callers overwrite them.
    package static func reuse(_ tensor: Tensor?, shape: [Int]) -> Tensor {
        guard let t = tensor else { return Tensor(shape: shape) }
        let n = shape.reduce(1, *)
        if n > t.capacity {
            t.data.deallocate()
            t.capacity = n
            t.data = .allocate(capacity: n)
            t.data.initialize(repeating: 0, count: n)
        }
        t.shape = shape
        t.count = n
        return t
    }

    /// Like `reuse`, for a buffer that fills in parts (micro-batches, the pieces of a pass):
    /// the first `keeping` values stay, and when it must grow, a new tensor takes their copy
    /// (as many as the old one holds: a pass's pieces fill a member's rows from the end down,
    /// so the first part to arrive may keep more than an earlier, smaller pass left) while the
    /// old one is left as it was, for whoever still reads it (a reply still being sent).
    package static func grown(_ tensor: Tensor?, shape: [Int], keeping: Int) -> Tensor {
        guard let tensor, tensor.capacity < shape.reduce(1, *), keeping > 0 else { return reuse(tensor, shape: shape) }
        let bigger = Tensor(shape: shape)
        bigger.data.update(from: tensor.data, count: min(keeping, tensor.capacity))
        return bigger
    }

    /// Reinterprets the same values under another shape with the same element count.
    package func reshape(_ newShape: [Int]) {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        shape = newShape
    }

    package var buffer: UnsafeMutableBufferPointer<Float> { .init(start: data, count: count) }
    package var array: [Float] { Array(buffer) }

    package func fill(_ value: Float) { data.update(repeating: value, count: count) }
    package func zero() { fill(0) }

    package func copy(from other: Tensor) {
        precondition(other.count == count, "copy of \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
    }

    /// Copies `tensors` one after another into this tensor, which must hold exactly their
    /// values (one buffer for a collective or a message instead of one per tensor).
    package func pack(_ tensors: [Tensor]) {
        var offset = 0
        for t in tensors {
            precondition(offset + t.count <= count, "packing more than \(count) values")
            (data + offset).update(from: t.data, count: t.count)
            offset += t.count
        }
        precondition(offset == count, "packed \(offset) values into \(count)")
    }

    /// The inverse of `pack`: copies consecutive parts of this tensor back into `tensors`.
    package func unpack(into tensors: [Tensor]) {
        var offset = 0
        for t in tensors {
            precondition(offset + t.count <= count, "unpacking more than \(count) values")
            t.data.update(from: data + offset, count: t.count)
            offset += t.count
        }
        precondition(offset == count, "unpacked \(offset) of \(count) values")
    }

    package subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }
}

/// max |a - b| / max |b|: how far `a` is from the reference `b`, relative to b's scale.
/// Tests compare every tensor on its own with it (a whole-model maximum hides a wrong bias).
package func relativeDifference(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.count == b.count, "comparing \(a.shape) with \(b.shape)")
    var num: Float = 0, den: Float = 0
    for i in 0..<a.count { num = max(num, abs(a[i] - b[i])); den = max(den, abs(b[i])) }
    return num / max(den, 1e-20)
}
