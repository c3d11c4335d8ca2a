import AsymCluster
import XCTest

final class WireTests: XCTestCase {
    func testHeaderRoundTripAndMismatches() {
        let payload: [Float] = [1, 2, 3, 4, 5, 6]
        let h = WireHeader(kind: .residual, step: 7, layer: 2, shard: 1, shape: [2, 3], payload: payload, count: 6)
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: WireHeader.size, alignment: 8)
        defer { bytes.deallocate() }
        h.encode(into: bytes)
        let back = WireHeader(decoding: bytes)
        XCTAssertEqual(back, h)
        XCTAssertNil(back.mismatch(expected: h))
        var other = h; other.step = 8
        XCTAssertTrue(back.mismatch(expected: other)!.contains("expected"))
        var bad = h; bad.magic = 0
        XCTAssertTrue(bad.mismatch(expected: h)!.contains("bad magic"))
        var old = h; old.version = 0
        XCTAssertTrue(old.mismatch(expected: h)!.contains("protocol version"))
        // The checksum sees a change of one value and a swap of two.
        XCTAssertNotEqual(payloadChecksum([1, 2, 3, 4, 5, 7], count: 6), h.checksum)
        XCTAssertNotEqual(payloadChecksum([2, 1, 3, 4, 5, 6], count: 6), h.checksum)
    }

    func testLayoutAssignsGroupsAndValidates() throws {
        let roles: [Role] = [.trusted, .trusted, .untrusted, .untrusted, .untrusted]
        let layout = try ClusterLayout(roles: roles, mode: .asym)
        XCTAssertEqual(layout.group(ofTrusted: 0), [2, 4])
        XCTAssertEqual(layout.group(ofTrusted: 1), [3])
        XCTAssertEqual(layout.server(ofUntrusted: 4).trusted, 0)
        XCTAssertEqual(layout.server(ofUntrusted: 4).shard, 1)
        XCTAssertThrowsError(try ClusterLayout(roles: [.untrusted, .untrusted], mode: .asym))
        XCTAssertThrowsError(try ClusterLayout(roles: [.trusted, .trusted, .untrusted], mode: .asym))
        XCTAssertThrowsError(try ClusterLayout(roles: [.untrusted, .trusted], mode: .teeOnly))
        // Only asym mode has work for untrusted ranks: asking for them otherwise is an error.
        XCTAssertThrowsError(try ClusterLayout(roles: [.trusted, .untrusted], mode: .plain))
        XCTAssertThrowsError(try ClusterLayout(roles: [.trusted, .untrusted], mode: .teeOnly))
        XCTAssertEqual(try ClusterLayout(roles: [.trusted, .trusted], mode: .plain).trusted, [0, 1])
    }
}
