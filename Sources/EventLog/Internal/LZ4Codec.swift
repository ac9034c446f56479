import CLZ4

/// The only file that talks to liblz4. Compresses a whole batch into one standard LZ4 frame
/// (content size set, linked blocks, no checksum: our own CRC32C covers the frame) and decodes it.
enum LZ4 {
    private static func preferences(contentSize: Int) -> LZ4F_preferences_t {
        var prefs = LZ4F_preferences_t()
        prefs.frameInfo.blockSizeID = LZ4F_max4MB
        prefs.frameInfo.blockMode = LZ4F_blockLinked
        prefs.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum
        prefs.frameInfo.frameType = LZ4F_frame
        prefs.frameInfo.contentSize = UInt64(contentSize)
        prefs.compressionLevel = 0
        return prefs
    }

    static func compressBound(_ size: Int) -> Int {
        var prefs = preferences(contentSize: size)
        return LZ4F_compressFrameBound(size, &prefs)
    }

    /// Compresses `source` into `destination` (capacity at least `compressBound`); returns the frame size.
    static func compress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) -> Int {
        var prefs = preferences(contentSize: source.count)
        let n = LZ4F_compressFrame(destination.baseAddress, destination.count, source.baseAddress, source.count, &prefs)
        // Only a too-small destination can fail, and the caller sized it with compressBound.
        precondition(LZ4F_isError(n) == 0, "LZ4F_compressFrame: \(String(cString: LZ4F_getErrorName(n)))")
        return n
    }

    /// A reusable decompression context (one per cursor or scan).
    final class Decoder {
        private var context: OpaquePointer?

        init() {
            var ctx: OpaquePointer?
            let rc = LZ4F_createDecompressionContext(&ctx, UInt32(LZ4F_VERSION))
            precondition(LZ4F_isError(rc) == 0 && ctx != nil, "cannot create an LZ4 decompression context")
            context = ctx
        }

        deinit { LZ4F_freeDecompressionContext(context) }

        /// Decodes one whole frame from `source` into `destination`, which must be exactly the
        /// declared uncompressed size. Returns nil on success or the reason it failed.
        func decode(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) -> String? {
            LZ4F_resetDecompressionContext(context)
            var consumed = 0
            var produced = 0
            while true {
                var srcSize = source.count - consumed
                var dstSize = destination.count - produced
                let hint = LZ4F_decompress(context, destination.baseAddress.map { $0 + produced }, &dstSize,
                                           source.baseAddress.map { $0 + consumed }, &srcSize, nil)
                if LZ4F_isError(hint) != 0 { return String(cString: LZ4F_getErrorName(hint)) }
                consumed += srcSize
                produced += dstSize
                if hint == 0 { break }  // frame complete
                if srcSize == 0 && dstSize == 0 {
                    return produced == destination.count ? "frame is longer than its header says"
                        : "frame ends early after \(produced) bytes"
                }
            }
            if consumed != source.count { return "\(source.count - consumed) bytes after the end of the frame" }
            if produced != destination.count {
                return "frame holds \(produced) bytes, header says \(destination.count)"
            }
            return nil
        }
    }
}
