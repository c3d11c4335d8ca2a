/// CRC-32C (Castagnoli) lookup table for the reflected polynomial 0x82F63B78.
private let crc32cTable: [UInt32] = (0..<256).map { index in
    var crc = UInt32(index)
    for _ in 0..<8 {
        crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
    }
    return crc
}

/// The CRC-32C (Castagnoli) checksum of `bytes`, as used by TFRecord files.
/// zlib only provides the IEEE CRC-32, hence this table-driven version.
package func crc32c(_ bytes: some Sequence<UInt8>) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc = crc32cTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
    }
    return ~crc
}

/// TFRecord's masked CRC-32C; masking keeps checksums of data that itself
/// contains CRCs from being degenerate.
func maskedCRC32C(_ bytes: some Sequence<UInt8>) -> UInt32 {
    let crc = crc32c(bytes)
    return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
}
