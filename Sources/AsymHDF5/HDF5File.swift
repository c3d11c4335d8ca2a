import CHDF5

/// An open HDF5 file: groups, float32 and int64 datasets of any rank, and scalar attributes.
///
/// Object paths are slash-separated, from the root group: `/model/conv1/weight`; `/` is the root.
/// Every call's HDF5 status is checked and failures throw `HDF5Error`. Serial HDF5 is not
/// thread-safe: use the files of a process from one thread at a time.
package final class HDF5File {
    /// The kinds of object a path can name.
    package enum ObjectKind: Sendable {
        case group
        case dataset
    }

    /// The path of the file on disk, as given to `create` or `open`.
    package let path: String
    /// The HDF5 file identifier; negative once closed.
    private var fileID: hid_t

    private init(path: String, fileID: hid_t) {
        self.path = path
        self.fileID = fileID
    }

    /// Creates a file at `path` for writing, truncating any file already there.
    package static func create(path: String) throws -> HDF5File {
        try openFile(path, "cannot create file") {
            H5Fcreate(path, asym_h5f_acc_trunc(), defaultPropertyList, defaultPropertyList)
        }
    }

    /// Opens the existing file at `path` read-only.
    package static func open(path: String) throws -> HDF5File {
        try openFile(path, "cannot open file") {
            H5Fopen(path, asym_h5f_acc_rdonly(), defaultPropertyList)
        }
    }

    private static func openFile(_ path: String, _ reason: String, _ open: () -> hid_t) throws -> HDF5File {
        guard errorPrintingSilenced else {
            throw HDF5Error.fromLibrary(file: path, object: nil, reason: "cannot silence HDF5 error printing")
        }
        let id = open()
        guard id >= 0 else { throw HDF5Error.fromLibrary(file: path, object: nil, reason: reason) }
        return HDF5File(path: path, fileID: id)
    }

    /// Closes the file; later calls on it throw. Closing twice is harmless.
    package func close() throws {
        guard fileID >= 0 else { return }
        let status = H5Fclose(fileID)
        fileID = -1
        try check(status, nil, "cannot close file")
    }

    /// Closes the file if `close()` was not called. A deinit cannot report failure: call
    /// `close()` where a failed close must be noticed.
    deinit {
        if fileID >= 0 { _ = H5Fclose(fileID) }
    }

    /// The size of the file in bytes, as HDF5 sees it.
    func fileSize() throws -> Int {
        var size: hsize_t = 0
        try check(H5Fget_filesize(try openID(), &size), nil, "cannot read the file size")
        return Int(clamping: size)
    }

    /// Writes HDF5's buffered data and metadata for this file to the operating system.
    package func flush() throws {
        try check(H5Fflush(try openID(), H5F_SCOPE_LOCAL), nil, "cannot flush file")
    }

    // MARK: Groups and navigation

    /// Creates the group at `path` and any missing groups above it (`mkdir -p`).
    package func createGroups(_ path: String) throws {
        let file = try openID()
        for prefix in Self.prefixes(of: path) where try !linkExists(file, prefix) {
            try withID(H5Gcreate2(file, prefix, defaultPropertyList, defaultPropertyList, defaultPropertyList),
                       prefix, "cannot create group", closedBy: H5Gclose) { _ in }
        }
    }

    /// Whether an object exists at `path`. Missing groups along the way give false, not an error;
    /// a dataset along the way (`/model/weight/x`) is an error.
    package func exists(_ path: String) throws -> Bool {
        let file = try openID()
        return try Self.prefixes(of: path).allSatisfy { try linkExists(file, $0) }
    }

    /// Whether `path` names a group or a dataset.
    package func kind(of path: String) throws -> ObjectKind {
        try withObject(path) { object in
            switch H5Iget_type(object) {
            case H5I_GROUP: return .group
            case H5I_DATASET: return .dataset
            default: throw HDF5Error(file: self.path, object: path, reason: "neither a group nor a dataset")
            }
        }
    }

    /// The names (not paths) of the objects directly inside the group at `groupPath`,
    /// in HDF5's name order.
    package func listChildren(_ groupPath: String) throws -> [String] {
        guard try exists(groupPath) else { throw failure(groupPath, "no such group") }
        let file = try openID()
        return try withID(H5Gopen2(file, groupPath, defaultPropertyList), groupPath, "cannot open group",
                          closedBy: H5Gclose) { group in
            var info = H5G_info_t()
            try check(H5Gget_info(group, &info), groupPath, "cannot read group info")
            return try (0..<info.nlinks).map { index in
                let length = try check(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, index,
                                                          nil, 0, defaultPropertyList),
                                       groupPath, "cannot read the name of child \(index)")
                var name = [CChar](repeating: 0, count: length + 1)
                try check(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, index,
                                             &name, name.count, defaultPropertyList),
                          groupPath, "cannot read the name of child \(index)")
                let child = String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                // A path cannot name such a child; `group/` would name the group itself again
                // (a walk over the file would never end).
                guard !child.isEmpty, child != ".", !child.contains("/") else {
                    throw failure(groupPath, "child \(index) has the name '\(child)', which no path can name: the file is damaged")
                }
                return child
            }
        }
    }

    /// `/a/b/c` (or `a/b/c`) → `["/a", "/a/b", "/a/b/c"]`; the root `/` has no prefixes.
    static func prefixes(of path: String) -> [String] {
        var prefix = ""
        return path.split(separator: "/").map { component in
            prefix += "/" + component
            return prefix
        }
    }

    /// Whether the link `path` exists; every group above it must exist.
    private func linkExists(_ file: hid_t, _ path: String) throws -> Bool {
        try check(H5Lexists(file, path, defaultPropertyList), path, "cannot look up link") > 0
    }

    // MARK: Shared helpers

    /// The file identifier, or an error if the file was closed.
    func openID() throws -> hid_t {
        guard fileID >= 0 else { throw failure(nil, "file is closed") }
        return fileID
    }

    /// An error found by this wrapper (not by HDF5) at `object`.
    func failure(_ object: String?, _ reason: String) -> HDF5Error {
        HDF5Error(file: path, object: object, reason: reason)
    }

    /// Returns `status`, or throws if HDF5 signalled failure with a negative value.
    @discardableResult
    func check<Status: SignedInteger>(_ status: Status, _ object: String?, _ reason: String) throws -> Status {
        guard status >= 0 else { throw HDF5Error.fromLibrary(file: path, object: object, reason: reason) }
        return status
    }

    /// Runs `body` with the identifier `id` just returned by HDF5 (failing with `reason` if it is
    /// negative), then releases it with `close`, whose status is checked too.
    @discardableResult
    func withID<Result>(_ id: hid_t, _ object: String, _ reason: String, closedBy close: (hid_t) -> herr_t,
                        _ body: (hid_t) throws -> Result) throws -> Result {
        try check(id, object, reason)
        let result: Result
        do {
            result = try body(id)
        } catch {
            _ = close(id)  // the first error is the one worth reporting
            throw error
        }
        try check(close(id), object, "cannot release identifier")
        return result
    }

    /// Runs `body` with the group or dataset at `path` opened.
    func withObject<Result>(_ path: String, _ body: (hid_t) throws -> Result) throws -> Result {
        guard try exists(path) else { throw failure(path, "no such object") }
        return try withID(H5Oopen(try openID(), path, defaultPropertyList), path, "cannot open object",
                          closedBy: H5Oclose, body)
    }
}

/// `H5P_DEFAULT`: the default property list.
let defaultPropertyList = asym_h5p_default()
