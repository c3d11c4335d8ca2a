import CHDF5

/// The attribute holding each dataset's checksum: zlib's crc32 of its raw little-endian bytes.
let checksumAttribute = "crc32"

extension HDF5File {
    /// Writes a float32 dataset of shape `shape` (`[]` for a scalar) from row-major `values`,
    /// creating missing parent groups. The dataset must not exist yet.
    package func writeFloats(_ path: String, shape: [Int], values: [Float]) throws {
        try values.withUnsafeBufferPointer { try writeDataset(path, shape: shape, values: $0) }
    }

    /// Writes a float32 dataset straight from memory; see `writeFloats(_:shape:values:)`.
    package func writeFloats(_ path: String, shape: [Int], values: UnsafeBufferPointer<Float>) throws {
        try writeDataset(path, shape: shape, values: values)
    }

    /// Reads a float32 dataset, verifying its crc32. Other element types are an error.
    package func readFloats(_ path: String) throws -> (shape: [Int], values: [Float]) {
        try readDataset(path)
    }

    /// Writes an int64 dataset of shape `shape` (`[]` for a scalar) from row-major `values`,
    /// creating missing parent groups. The dataset must not exist yet.
    package func writeInt64s(_ path: String, shape: [Int], values: [Int64]) throws {
        try values.withUnsafeBufferPointer { try writeDataset(path, shape: shape, values: $0) }
    }

    /// Writes an int64 dataset straight from memory; see `writeInt64s(_:shape:values:)`.
    package func writeInt64s(_ path: String, shape: [Int], values: UnsafeBufferPointer<Int64>) throws {
        try writeDataset(path, shape: shape, values: values)
    }

    /// Reads an int64 dataset, verifying its crc32. Other element types are an error.
    package func readInt64s(_ path: String) throws -> (shape: [Int], values: [Int64]) {
        try readDataset(path)
    }

    /// The shape of the dataset at `path`; `[]` for a scalar.
    /// Reads a float32 or int64 dataset only to verify its crc32 (which throws on a mismatch).
    package func verifyChecksum(_ path: String) throws {
        let isFloat = try withDataset(path) { dataset in
            try withID(H5Dget_type(dataset), path, "cannot read dataset type", closedBy: H5Tclose) { type in
                try check(H5Tequal(type, Float.nativeType), path, "cannot compare types") > 0
            }
        }
        if isFloat { _ = try readFloats(path) } else { _ = try readInt64s(path) }
    }

    package func datasetShape(_ path: String) throws -> [Int] {
        try withDataset(path) { dataset in try extent(of: dataset, path) }
    }

    private func writeDataset<Element: HDF5Element>(_ path: String, shape: [Int],
                                                    values: UnsafeBufferPointer<Element>) throws {
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == values.count else {
            throw failure(path, "shape \(shape) does not hold \(values.count) values")
        }
        guard try !exists(path) else { throw failure(path, "already exists") }
        let parent = Self.prefixes(of: path).dropLast().last ?? "/"
        try createGroups(parent)
        let file = try openID()
        let dims = shape.map { hsize_t($0) }
        let space = shape.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(dims.count), dims, nil)
        try withID(space, path, "cannot create dataspace", closedBy: H5Sclose) { space in
            try withID(H5Dcreate2(file, path, Element.nativeType, space,
                                  defaultPropertyList, defaultPropertyList, defaultPropertyList),
                       path, "cannot create dataset", closedBy: H5Dclose) { dataset in
                try check(H5Dwrite(dataset, Element.nativeType, asym_h5s_all(), asym_h5s_all(),
                                   defaultPropertyList, values.baseAddress),
                          path, "cannot write dataset")
            }
        }
        try setAttribute(checksumAttribute, int64: Int64(crc32(of: UnsafeRawBufferPointer(values))), at: path)
    }

    private func readDataset<Element: HDF5Element>(_ path: String) throws -> (shape: [Int], values: [Element]) {
        let (shape, values) = try withDataset(path) { dataset in
            try withID(H5Dget_type(dataset), path, "cannot read dataset type", closedBy: H5Tclose) { type in
                guard try check(H5Tequal(type, Element.nativeType), path, "cannot compare types") > 0 else {
                    throw failure(path, "dataset is not \(Element.typeName)")
                }
            }
            let shape = try extent(of: dataset, path)
            // A damaged dataspace can claim any shape: no more values than the file could hold.
            let fileBytes = try fileSize()
            var count = 1
            for n in shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: n)
                guard !overflow, product <= fileBytes / MemoryLayout<Element>.stride else {
                    throw failure(path, "shape \(shape) holds more values than the file's \(fileBytes) bytes: the file is damaged")
                }
                count = product
            }
            // What the file stores for it must be exactly those values (a damaged layout makes
            // HDF5 copy past its buffers); this wrapper writes contiguous datasets only.
            let layout = try withID(H5Dget_create_plist(dataset), path, "cannot read the dataset's layout",
                                    closedBy: H5Pclose) { H5Pget_layout($0) }
            let stored = H5Dget_storage_size(dataset)
            guard layout == H5D_CONTIGUOUS || layout == H5D_COMPACT,
                  stored == hsize_t(count * MemoryLayout<Element>.stride) else {
                let name = layout == H5D_CONTIGUOUS ? "contiguous" : layout == H5D_COMPACT ? "compact" : layout == H5D_CHUNKED ? "chunked" : "unknown"
                throw failure(path, "the file stores \(stored) bytes (\(name) layout) for shape \(shape) of \(Element.typeName): the file is damaged")
            }
            let values = try [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
                try check(H5Dread(dataset, Element.nativeType, asym_h5s_all(), asym_h5s_all(),
                                  defaultPropertyList, buffer.baseAddress),
                          path, "cannot read dataset")
                initialized = count
            }
            return (shape, values)
        }
        let stored = try int64Attribute(checksumAttribute, at: path)
        let actual = values.withUnsafeBytes { crc32(of: $0) }
        guard stored == Int64(actual) else {
            throw failure(path, "crc32 mismatch: stored \(stored), computed \(actual) from the data")
        }
        return (shape, values)
    }

    private func withDataset<Result>(_ path: String, _ body: (hid_t) throws -> Result) throws -> Result {
        guard try exists(path) else { throw failure(path, "no such dataset") }
        return try withID(H5Dopen2(try openID(), path, defaultPropertyList), path, "cannot open dataset",
                          closedBy: H5Dclose, body)
    }

    private func extent(of dataset: hid_t, _ path: String) throws -> [Int] {
        try withID(H5Dget_space(dataset), path, "cannot read dataspace", closedBy: H5Sclose) { space in
            let rank = try check(H5Sget_simple_extent_ndims(space), path, "cannot read rank")
            var dims = [hsize_t](repeating: 0, count: Int(rank))
            try check(H5Sget_simple_extent_dims(space, &dims, nil), path, "cannot read dimensions")
            return try dims.map {
                guard let n = Int(exactly: $0) else { throw failure(path, "dimension \($0) is out of range: the file is damaged") }
                return n
            }
        }
    }
}
