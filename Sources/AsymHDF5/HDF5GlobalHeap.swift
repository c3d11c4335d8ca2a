import CHDF5
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

// (Inside `HDF5File`, `open` and `close` name its own methods.)
private func openReadOnly(_ path: String) -> Int32 { open(path, O_RDONLY) }
private func closeFile(_ fd: Int32) { _ = close(fd) }

// Variable-length strings live in the file's global heap. HDF5 1.10's reader of that heap
// trusts the file: a damaged collection makes it loop forever (an object of size 0) or copy
// past its buffers (an object index past the collection's objects, an object larger than the
// collection), so one flipped bit in a checkpoint could hang or crash the process. This
// wrapper therefore reads variable-length strings itself: `H5Aread` hands over the
// attribute's raw heap ID (length, collection address, object index) through a conversion
// that leaves the bytes as they are, and the object is read from the file here, with every
// offset and size checked against the collection and the file.

/// The tag of the opaque memory type that receives a raw heap ID.
private let rawHeapIDTag = "asymml raw global heap ID"

/// The conversion from variable-length strings (as stored) to the tagged opaque type of the
/// same size: the raw heap IDs stay where they are.
private func keepRawHeapIDs(_ source: hid_t, _ destination: hid_t, _ cdata: UnsafeMutablePointer<H5T_cdata_t>?,
                            _ count: Int, _ bufferStride: Int, _ backgroundStride: Int, _ buffer: UnsafeMutableRawPointer?,
                            _ background: UnsafeMutableRawPointer?, _ transfer: hid_t) -> herr_t {
    guard let cdata else { return -1 }
    switch cdata.pointee.command {
    case H5T_CONV_INIT:
        cdata.pointee.need_bkg = H5T_BKG_NO
        guard H5Tget_class(source) == H5T_STRING, H5Tis_variable_str(source) > 0,
              H5Tget_class(destination) == H5T_OPAQUE, H5Tget_size(source) == H5Tget_size(destination),
              let tag = H5Tget_tag(destination) else { return -1 }
        defer { _ = H5free_memory(tag) }
        return String(cString: tag) == rawHeapIDTag ? 0 : -1
    default:
        return 0  // H5T_CONV_CONV: same size, nothing moves; H5T_CONV_FREE: nothing to free
    }
}

/// Whether `keepRawHeapIDs` is registered (once, before the first read).
private let rawHeapIDConversionRegistered: Bool = {
    let source = H5Tcopy(asym_h5t_c_s1())
    guard source >= 0 else { return false }
    defer { _ = H5Tclose(source) }
    let destination = H5Tcreate(H5T_OPAQUE, 16)
    guard destination >= 0 else { return false }
    defer { _ = H5Tclose(destination) }
    return H5Tset_size(source, asym_h5t_variable()) >= 0 && H5Tset_tag(destination, rawHeapIDTag) >= 0
        && H5Tregister(H5T_PERS_SOFT, "asymml raw heap ID", source, destination, keepRawHeapIDs) >= 0
}()

/// `bytes` as a little-endian unsigned integer (at most 8 bytes).
private func littleEndian<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
    bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
}

private func aligned8(_ n: Int) -> Int { (n + 7) / 8 * 8 }

extension HDF5File {
    /// Reads the variable-length string attribute `attribute` (already open, one value) of the
    /// object at `path` without HDF5's global-heap reader (see above).
    func readVariableLengthString(_ attribute: hid_t, name: String, at path: String) throws -> String {
        guard errorPrintingSilenced, rawHeapIDConversionRegistered else {
            throw failure(path, "attribute '\(name)': cannot set up the reading of variable-length strings")
        }
        // Sizes of addresses and lengths in this file, and where its addresses start.
        var addressSize = 0, lengthSize = 0
        var base: hsize_t = 0
        try withID(H5Fget_create_plist(try openID()), path, "cannot read the file's creation properties", closedBy: H5Pclose) { plist in
            try check(H5Pget_sizes(plist, &addressSize, &lengthSize), path, "cannot read the file's address size")
            try check(H5Pget_userblock(plist, &base), path, "cannot read the file's user block size")
        }
        guard (2...8).contains(addressSize), (2...8).contains(lengthSize) else {
            throw failure(path, "attribute '\(name)': unsupported address size \(addressSize) or length size \(lengthSize)")
        }
        let idSize = 4 + addressSize + 4
        let raw = try withID(H5Tcreate(H5T_OPAQUE, idSize), path, "cannot create a type for attribute '\(name)'",
                             closedBy: H5Tclose) { type -> [UInt8] in
            try check(H5Tset_tag(type, rawHeapIDTag), path, "cannot create a type for attribute '\(name)'")
            var bytes = [UInt8](repeating: 0, count: idSize)
            try check(H5Aread(attribute, type, &bytes), path, "cannot read attribute '\(name)'")
            return bytes
        }
        let length = littleEndian(raw[0..<4])
        guard length > 0 else { return "" }
        let bytes = try globalHeapObject(address: littleEndian(raw[4..<(4 + addressSize)]),
                                         index: littleEndian(raw[(4 + addressSize)...]), length: length,
                                         lengthSize: lengthSize, base: base, path: path, attribute: name)
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Object `index` of the global heap collection at `address`, which must hold `length` bytes.
    private func globalHeapObject(address: UInt64, index: UInt64, length: UInt64, lengthSize: Int, base: UInt64,
                                  path: String, attribute: String) throws -> [UInt8] {
        func damaged(_ why: String) -> HDF5Error {
            failure(path, "attribute '\(attribute)': damaged global heap (\(why))")
        }
        let fd = openReadOnly(self.path)
        guard fd >= 0 else {
            throw failure(path, "attribute '\(attribute)': cannot open the file: \(String(cString: strerror(errno)))")
        }
        defer { closeFile(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw failure(path, "attribute '\(attribute)': cannot read the file's size: \(String(cString: strerror(errno)))")
        }
        let fileSize = UInt64(max(0, info.st_size))
        func read(_ offset: UInt64, _ count: Int) throws -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw damaged("the collection at address \(address) runs past the end of the file") }
                done += n
            }
            return bytes
        }
        // The collection: "GCOL", version 1, 3 reserved bytes, its size; then its objects, each
        // an index (2 bytes), a reference count (2), 4 reserved bytes and a size, then the
        // object padded to 8 bytes. Index 0 is the free space at the end.
        let headerSize = aligned8(8 + lengthSize), objectHeaderSize = 8 + lengthSize
        let (start, overflow) = address.addingReportingOverflow(base)
        guard !overflow, start < fileSize, fileSize - start >= UInt64(headerSize) else {
            throw damaged("collection address \(address) lies outside the file of \(fileSize) bytes")
        }
        let header = try read(start, headerSize)
        guard header[0..<4].elementsEqual("GCOL".utf8), header[4] == 1 else {
            throw damaged("no collection at address \(address)")
        }
        let size = littleEndian(header[8..<(8 + lengthSize)])
        guard size >= UInt64(headerSize), size <= fileSize - start else {
            throw damaged("the collection at address \(address) claims \(size) bytes; the file has \(fileSize - start) from there")
        }
        let collection = try read(start, Int(size))
        var p = headerSize
        while p + objectHeaderSize <= collection.count {
            let i = littleEndian(collection[p..<(p + 2)])
            let s = littleEndian(collection[(p + 8)..<(p + 8 + lengthSize)])
            if i == 0 { break }
            let room = UInt64(collection.count - p - objectHeaderSize)
            guard s <= room else {
                throw damaged("object \(i) of the collection at address \(address) claims \(s) bytes; \(room) are left")
            }
            let begin = p + objectHeaderSize
            if i == index {
                guard s == length else {
                    throw damaged("the attribute holds \(length) bytes, its heap object \(s)")
                }
                return Array(collection[begin..<(begin + Int(s))])
            }
            p = begin + aligned8(Int(s))
        }
        throw damaged("no object \(index) in the collection at address \(address)")
    }
}
