/// y = max(x, 0). In place is allowed (y == x).
public func reluForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    parallelRanges(count, grain: 1 << 15) { r in
        for i in r { y[i] = x[i] > 0 ? x[i] : 0 }
    }
}

/// dx = dy where the forward output was positive. `y` is the forward output.
public func reluBackward(y: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                         dx: UnsafeMutablePointer<Float>, count: Int) {
    parallelRanges(count, grain: 1 << 15) { r in
        for i in r { dx[i] = y[i] > 0 ? dy[i] : 0 }
    }
}

/// z = a + b (residual add). In place is allowed.
public func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ z: UnsafeMutablePointer<Float>, count: Int) {
    parallelRanges(count, grain: 1 << 15) { r in
        for i in r { z[i] = a[i] + b[i] }
    }
}

/// y += x
public func accumulate(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    parallelRanges(count, grain: 1 << 15) { r in
        for i in r { y[i] += x[i] }
    }
}

/// Sum of squares, accumulated in double so that large maps do not lose precision.
public func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
    var s: Double = 0
    var i = 0
    while i < count {
        let n = min(4096, count - i)
        var f: Float = 0
        for j in i..<(i + n) { f += x[j] * x[j] }
        s += Double(f)
        i += n
    }
    return s
}
