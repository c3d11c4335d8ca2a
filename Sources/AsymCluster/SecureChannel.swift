import AsymKernels
import AsymModel
import Crypto
import Foundation

/// AES-GCM for the gradient sums among trusted ranks (`cluster.encrypt`), so that the
/// network between enclave nodes need not be trusted (docs/DESIGN.md §4).
///
/// MPI cannot add ciphertexts, so a sum becomes an exchange: every rank seals its buffer,
/// sends it to every other trusted rank, opens what it receives and adds the parts in rank
/// order (the same order everywhere, so every replica gets bit-identical sums). Nonces are
/// never sent: each is the sender's rank and the channel's message count, which every rank
/// knows. A flipped byte fails authentication, and so does a replayed message, because it
/// was sealed under an older count than the one its receiver opens it with.
package final class SecureChannel {
    let key: SymmetricKey
    let rank: Int
    /// Messages this channel has sealed (and opened from each peer): the nonce's counter.
    private(set) var sequence: UInt64 = 0
    static let tag = 23

    /// `keyFile` holds 32 bytes: raw, or 64 hexadecimal digits (a trailing newline is fine).
    package init(keyFile: String?, rank: Int) throws {
        guard let keyFile, let data = FileManager.default.contents(atPath: keyFile) else {
            throw FileError("cluster.key_file: cannot read '\(keyFile ?? "")'; every trusted rank needs the same 32-byte key (e.g. head -c 32 /dev/urandom > key)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if data.count == 32 {
            key = SymmetricKey(data: data)
        } else if text.count == 64, let bytes = SecureChannel.hexBytes(text) {
            key = SymmetricKey(data: bytes)
        } else {
            throw ConfigError("cluster.key_file: \(keyFile) holds \(data.count) bytes; it must be 32 raw bytes or 64 hex digits")
        }
        self.rank = rank
    }

    package init(key: SymmetricKey, rank: Int) { self.key = key; self.rank = rank }

    static func hexBytes(_ text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        var it = text.makeIterator()
        while let hi = it.next(), let lo = it.next() {
            guard let h = hi.hexDigitValue, let l = lo.hexDigitValue else { return nil }
            bytes.append(UInt8(h << 4 | l))
        }
        return bytes
    }

    /// The nonce of message `sequence` sealed by `sender`: 4 bytes of rank, 8 of count.
    func nonce(sender: Int, sequence: UInt64) throws -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: UInt32(sender).littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: sequence.littleEndian) { bytes.replaceSubrange(4..<12, with: $0) }
        return try AES.GCM.Nonce(data: bytes)
    }

    /// Seals `count` floats as message number `sequence` of this rank: ciphertext + tag.
    package func seal(_ values: UnsafePointer<Float>, count: Int, sequence: UInt64) throws -> Data {
        let plain = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: values), count: 4 * count, deallocator: .none)
        let box = try AES.GCM.seal(plain, using: key, nonce: nonce(sender: rank, sequence: sequence))
        var sealed = Data(capacity: 4 * count + 16)  // indexed from 0, unlike the box's slices
        sealed.append(box.ciphertext)
        sealed.append(box.tag)
        return sealed
    }

    /// Opens message number `sequence` from `sender` and adds its floats into `sum`;
    /// a tampered or replayed message throws, naming the sender.
    package func open(_ sealed: Data, from sender: Int, sequence: UInt64, addingTo sum: UnsafeMutablePointer<Float>, count: Int) throws {
        do {
            guard sealed.count == 4 * count + 16 else { throw CryptoKitError.incorrectParameterSize }
            let box = try AES.GCM.SealedBox(nonce: nonce(sender: sender, sequence: sequence),
                                            ciphertext: sealed.prefix(4 * count), tag: sealed.suffix(16))
            let plain = try AES.GCM.open(box, using: key)
            plain.withUnsafeBytes { accumulate($0.bindMemory(to: Float.self).baseAddress!, into: sum, count: count) }
        } catch {
            throw ProtocolError("encrypted gradient sum: the message from trusted rank \(sender) failed authentication (tampered, replayed or sealed with another key)")
        }
    }

    /// The sum of `values` over every rank of `comm`, in place, through sealed messages.
    package func sum(_ values: UnsafeMutablePointer<Float>, count: Int, over comm: Communicator, what: String) throws {
        defer { sequence += 1 }
        guard comm.size > 1 else { return }
        let mine = try seal(values, count: count, sequence: sequence), size = mine.count
        // One buffer for every peer's message, alive until the receives complete.
        let inbox = UnsafeMutableRawBufferPointer.allocate(byteCount: size * comm.size, alignment: 16)
        defer { inbox.deallocate() }
        var requests: [Request] = []
        try mine.withUnsafeBytes { out in
            for peer in 0..<comm.size where peer != comm.rank {
                requests.append(try comm.receiveBytes(inbox.baseAddress! + peer * size, count: size, from: peer, tag: SecureChannel.tag))
                requests.append(try comm.sendBytes(out.baseAddress!, count: size, to: peer, tag: SecureChannel.tag))
            }
            try comm.waitAll(&requests, peer: "a trusted rank", awaiting: what)
        }
        let own = Tensor(shape: [count])
        own.data.update(from: values, count: count)
        values.update(repeating: 0, count: count)
        for r in 0..<comm.size {
            if r == comm.rank {
                accumulate(own.data, into: values, count: count)
            } else {
                let sealed = Data(bytes: inbox.baseAddress! + r * size, count: size)
                try open(sealed, from: r, sequence: sequence, addingTo: values, count: count)
            }
        }
    }
}
