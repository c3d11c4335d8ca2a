/// The header of a .npy file (NumPy's format, versions 1 to 3): the array's shape, its element
/// type, and where its data starts, in C order and little-endian (the byte order NumPy writes
/// on every common machine).
struct NPYHeader {
    /// The element types the loaders use: integers (labels, uint8 pixels) and floats (pixels).
    enum Element: Equatable {
        case unsigned(bytes: Int), signed(bytes: Int), float(bytes: Int)

        var size: Int {
            switch self { case .unsigned(let b), .signed(let b), .float(let b): return b }
        }
        /// NumPy's name: uint8, int64, float32, ...
        var name: String {
            switch self {
            case .unsigned(let b): return "uint\(8 * b)"
            case .signed(let b): return "int\(8 * b)"
            case .float(let b): return "float\(8 * b)"
            }
        }
    }

    /// Names the array in errors: "data.npz: x_train.npy".
    let path: String
    let shape: [Int]
    let element: Element
    /// Where the data starts, after the header.
    let dataOffset: Int

    var count: Int { shape.reduce(1, *) }
    /// The shape as NumPy prints it: (60000, 28, 28), (5,).
    var shapeText: String { NPYHeader.shapeText(shape) }
    static func shapeText(_ shape: [Int]) -> String {
        "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
    }

    /// Parses the header of a .npy file of `size` bytes, whose bytes `read(offset, count)`
    /// returns (throwing `truncated` past the end); checks that the data fills the rest exactly.
    init(size: Int, path: String, read: (Int, Int) throws -> [UInt8]) throws {
        self.path = path
        func malformed(_ detail: String) -> DataError { DataError.malformed(path: path, detail: detail) }
        let start = try read(0, min(size, 12))
        guard start.starts(with: [0x93] + Array("NUMPY".utf8)) else { throw malformed("not a .npy array (no \\x93NUMPY magic)") }
        let reader = LittleEndian(bytes: start, path: path)
        let version = try reader.int(at: 6, 1)
        let lengthBytes: Int
        switch version {
        case 1: lengthBytes = 2
        case 2, 3: lengthBytes = 4
        default: throw malformed(".npy format version \(version) is not supported (1 to 3 are)")
        }
        let headerLength = try reader.int(at: 8, lengthBytes)
        let header = String(decoding: try read(8 + lengthBytes, headerLength), as: UTF8.self)
        dataOffset = 8 + lengthBytes + headerLength

        // The header is a Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
        func value(_ key: String) throws -> Substring {
            guard let k = header.firstRange(of: "'\(key)'") ?? header.firstRange(of: "\"\(key)\"") else {
                throw malformed("the .npy header has no '\(key)': \(header[...].trimmed)")
            }
            let rest = header[k.upperBound...].drop { $0 == " " }
            guard rest.first == ":" else { throw malformed("the .npy header is not a dict: \(header[...].trimmed)") }
            return rest.dropFirst().drop { $0 == " " }
        }
        let descr = try value("descr")
        guard let quote = descr.first, quote == "'" || quote == "\"", let close = descr.dropFirst().firstIndex(of: quote) else {
            throw malformed("structured arrays are not supported (dtype \(descr.prefix { $0 != "}" }))")
        }
        element = try NPYHeader.element(String(descr[descr.index(after: descr.startIndex)..<close]), malformed)
        guard try value("fortran_order").hasPrefix("False") else {
            throw malformed("the array is in Fortran order; save np.ascontiguousarray(array) instead")
        }
        let tuple = try value("shape")
        guard tuple.first == "(", let end = tuple.firstIndex(of: ")") else { throw malformed("the .npy shape is not a tuple") }
        shape = try tuple[tuple.index(after: tuple.startIndex)..<end].split(separator: ",").map {
            guard let d = Int($0.trimmed), d >= 0 else { throw malformed("the .npy shape \(tuple[...end]) is not a tuple of sizes") }
            return d
        }
        var expected = element.size
        for d in shape {
            let (p, overflow) = expected.multipliedReportingOverflow(by: d)
            guard !overflow else { throw malformed("the .npy shape \(NPYHeader.shapeText(shape)) is impossibly large") }
            expected = p
        }
        let found = size - dataOffset
        guard found >= expected else {
            throw DataError.truncated(path: path, detail: "\(shapeText) \(element.name) needs \(expected) bytes of data, found \(found)")
        }
        guard found == expected else {
            throw malformed("\(found - expected) bytes follow the \(expected) bytes of data that \(shapeText) \(element.name) needs")
        }
    }

    /// The element type of a descr ('<f4', '|u1', ...): little-endian (or single-byte) integers and floats.
    private static func element(_ descr: String, _ malformed: (String) -> DataError) throws -> Element {
        let chars = Array(descr)
        guard chars.count >= 3, let size = Int(String(chars[2...])) else { throw malformed("dtype '\(descr)' is not supported") }
        if chars[0] == ">" && size > 1 {
            throw malformed("dtype '\(descr)' is big-endian; save the array little-endian (array.astype('<\(chars[1])\(size)'))")
        }
        guard "<|=>".contains(chars[0]) else { throw malformed("dtype '\(descr)' is not supported") }
        switch (chars[1], size) {
        case ("u", 1), ("u", 2), ("u", 4), ("u", 8): return .unsigned(bytes: size)
        case ("i", 1), ("i", 2), ("i", 4), ("i", 8): return .signed(bytes: size)
        case ("f", 4), ("f", 8): return .float(bytes: size)
        default: throw malformed("dtype '\(descr)' is not supported (integers, float32 and float64 are)")
        }
    }

}

/// A whole .npy array in memory: labels, and the images of a deflated .npz member.
struct NPYArray {
    let header: NPYHeader
    let bytes: [UInt8]

    init(_ bytes: [UInt8], path: String) throws {
        header = try NPYHeader(size: bytes.count, path: path) { offset, count in
            try Array(LittleEndian(bytes: bytes, path: path).slice(at: offset, count))
        }
        self.bytes = bytes
    }

    /// Element i of an integer array; nil where it does not fit an Int.
    func integer(_ i: Int) -> Int? {
        let at = header.dataOffset + i * header.element.size
        var raw: UInt64 = 0
        for b in (0..<header.element.size).reversed() { raw = raw << 8 | UInt64(bytes[at + b]) }
        switch header.element {
        case .signed(let size):
            let unused = UInt64(64 - 8 * size)
            return Int(Int64(bitPattern: raw << unused) >> unused)
        default:
            return Int(exactly: raw)
        }
    }
}

private extension Substring {
    /// Without the spaces and newline that pad NumPy's headers.
    var trimmed: Substring {
        var s = drop { $0 == " " || $0 == "\n" }
        while let last = s.last, last == " " || last == "\n" { s = s.dropLast() }
        return s
    }
}
