import CHDF5
import CZlib

#if _endian(big)
#error("AsymHDF5 writes native-order data and checksums its raw bytes as little-endian")
#endif

/// The element types of datasets and numeric attributes.
protocol HDF5Element: BitwiseCopyable {
    /// Zero, for buffers that HDF5 fills.
    init()
    /// The HDF5 native type of the element, used both in memory and in the file.
    static var nativeType: hid_t { get }
    /// The name used in error messages.
    static var typeName: String { get }
}

extension Float: HDF5Element {
    static var nativeType: hid_t { asym_h5t_native_float() }
    static var typeName: String { "float32" }
}

extension Int64: HDF5Element {
    static var nativeType: hid_t { asym_h5t_native_int64() }
    static var typeName: String { "int64" }
}

/// zlib's crc32 of the raw (little-endian) bytes of `values`.
func crc32(of values: UnsafeRawBufferPointer) -> UInt32 {
    let bytes = values.baseAddress?.assumingMemoryBound(to: Bytef.self)
    return UInt32(crc32_z(0, bytes, values.count))
}
