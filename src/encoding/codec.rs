//! The compressions themselves (flate2, zstd): whole bodies, and the
//! deflate piece an `/mcp` answer is spliced around.

use std::io::{self, Write};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

/// zlib's default level: about 100 MB/s for a catalog, 27x smaller
/// (measured on the harness catalog; ADR 0022).
const GZIP_LEVEL: u32 = 6;
/// zstd's default level: about 1.8 GB/s for a catalog, 72x smaller.
const ZSTD_LEVEL: i32 = 3;
/// RFC 9659: a `zstd` content coding needs at most an 8 MB window.
const ZSTD_WINDOW_LOG: u32 = 23;

/// `chunks` as one gzip member.
pub fn gzip(chunks: &[Bytes]) -> io::Result<Bytes> {
    let len = chunks.iter().map(Bytes::len).sum::<usize>();
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(len / 8), Compression::new(GZIP_LEVEL));
    for chunk in chunks {
        encoder.write_all(chunk)?;
    }
    Ok(Bytes::from(encoder.finish()?))
}

/// `chunks` as one zstd frame (content size in the header, no checksum:
/// TCP and the JSON parser are the checks that matter here).
pub fn zstd(chunks: &[Bytes]) -> io::Result<Bytes> {
    let len = chunks.iter().map(Bytes::len).sum::<usize>();
    let mut encoder = zstd::stream::write::Encoder::new(Vec::with_capacity(len / 16), ZSTD_LEVEL)?;
    encoder.set_pledged_src_size(Some(len as u64))?;
    encoder.include_contentsize(true)?;
    encoder.include_checksum(false)?;
    encoder.window_log(ZSTD_WINDOW_LOG)?;
    for chunk in chunks {
        encoder.write_all(chunk)?;
    }
    Ok(Bytes::from(encoder.finish()?))
}

/// A body compressed once as raw deflate blocks that end byte-aligned and
/// not final (a sync flush), with what a gzip trailer needs: such blocks
/// can sit between other blocks of one deflate stream (RFC 1951 3.2.3: a
/// stream is a sequence of blocks; they refer back only to bytes of their
/// own, at the same distances).
pub struct DeflatePiece {
    pub deflate: Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

impl DeflatePiece {
    pub fn compress(chunks: &[Bytes]) -> io::Result<Self> {
        let len = chunks.iter().map(Bytes::len).sum::<usize>();
        let mut deflate = Compress::new(Compression::new(GZIP_LEVEL), false);
        let mut out: Vec<u8> = Vec::with_capacity(len / 8 + 64);
        let mut crc = crc32fast::Hasher::new();
        for chunk in chunks {
            crc.update(chunk);
            feed(&mut deflate, chunk, &mut out, FlushCompress::None)?;
        }
        feed(&mut deflate, &[], &mut out, FlushCompress::Sync)?;
        Ok(Self {
            deflate: Bytes::from(out),
            crc,
            len: len as u64,
        })
    }

    /// The uncompressed length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Runs `input` through `deflate` into `out` (growing it as needed) until
/// it is consumed and, for a flush, until the flush is complete (zlib's
/// rule: a call that leaves room in the output has written all it had).
fn feed(
    deflate: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> io::Result<()> {
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let before_in = deflate.total_in();
        let before_out = deflate.total_out();
        deflate
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        let used = (deflate.total_in() - before_in) as usize;
        input = &input[used..];
        let room_left = out.capacity() > out.len();
        if input.is_empty() && room_left {
            return Ok(());
        }
        if used == 0 && deflate.total_out() == before_out && room_left {
            return Err(io::Error::other("deflate made no progress"));
        }
    }
}

/// The 10-byte gzip header (RFC 1952 2.3): deflate, no flags, no time,
/// OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// A stored block carries at most this many bytes (RFC 1951 3.2.4).
const STORED_MAX: usize = 0xffff;

/// One gzip member: `prefix`, the piece, `suffix`. The prefix and suffix
/// go in stored (uncompressed) deflate blocks, so nothing is compressed
/// for the request itself; the CRC of the whole is combined from the
/// piece's (crc32fast's `combine`, O(log n)). Three chunks: the piece is
/// shared, not copied.
pub fn gzip_splice(prefix: &[u8], piece: &DeflatePiece, suffix: &[u8]) -> Vec<Bytes> {
    let mut head = Vec::with_capacity(GZIP_HEADER.len() + prefix.len() + 5);
    head.extend_from_slice(&GZIP_HEADER);
    stored_blocks(&mut head, prefix, false);
    let mut crc = crc32fast::Hasher::new();
    crc.update(prefix);
    crc.combine(&piece.crc);
    crc.update(suffix);
    let total = prefix.len() as u64 + piece.len + suffix.len() as u64;
    let mut tail = Vec::with_capacity(suffix.len() + 13);
    stored_blocks(&mut tail, suffix, true);
    tail.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    tail.extend_from_slice(&((total & 0xffff_ffff) as u32).to_le_bytes());
    vec![Bytes::from(head), piece.deflate.clone(), Bytes::from(tail)]
}

/// `data` as stored blocks (header bits `BFINAL`, `BTYPE=00`, then byte
/// alignment, `LEN`, `NLEN`); `last` marks the final block of the stream.
/// Empty data still gives one block when it must end the stream.
fn stored_blocks(out: &mut Vec<u8>, data: &[u8], last: bool) {
    let mut chunks = data.chunks(STORED_MAX).peekable();
    if chunks.peek().is_none() {
        if last {
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        return;
    }
    while let Some(chunk) = chunks.next() {
        let final_block = last && chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(final_block));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Status;
    use std::io::Read;

    fn body() -> Vec<Bytes> {
        (0..300)
            .map(|i| {
                Bytes::from(format!(
                    "{{\"name\":\"tool{i}\",\"description\":\"Test tool {i}\"}},"
                ))
            })
            .collect()
    }

    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        // MultiGzDecoder would hide a second member; one member is the
        // claim, so the single-member decoder must read it all and the
        // input must end there.
        let mut d = flate2::read::GzDecoder::new(data);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn whole_bodies_round_trip() {
        let chunks = body();
        assert_eq!(gunzip(&gzip(&chunks).unwrap()), joined(&chunks));
        let z = zstd(&chunks).unwrap();
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), joined(&chunks));
        assert!(z.len() * 10 < joined(&chunks).len());
    }

    #[test]
    fn the_zstd_frame_declares_its_size_and_a_small_window() {
        let chunks = body();
        let z = zstd(&chunks).unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(&z).unwrap();
        assert_eq!(size, Some(joined(&chunks).len() as u64));
    }

    #[test]
    fn a_spliced_member_is_one_valid_gzip_member() {
        let chunks = body();
        let piece = DeflatePiece::compress(&chunks).unwrap();
        for (prefix, suffix) in [
            (&b"{\"id\":1,\"tools\":["[..], &b"]}"[..]),
            (b"", b""),
            (&[b'x'; 70_000][..], &[b'y'; 140_000][..]),
        ] {
            let member: Vec<u8> = joined(&gzip_splice(prefix, &piece, suffix));
            let mut want = prefix.to_vec();
            want.extend(joined(&chunks));
            want.extend_from_slice(suffix);
            assert_eq!(gunzip(&member), want);
            // zlib's own view: one stream, nothing after it.
            let mut raw = flate2::Decompress::new(false);
            let mut out = Vec::with_capacity(want.len() + 16);
            let status = raw
                .decompress_vec(&member[10..], &mut out, flate2::FlushDecompress::Finish)
                .unwrap();
            assert_eq!(status, Status::StreamEnd);
            assert_eq!(out, want);
            assert_eq!(raw.total_in() as usize, member.len() - 10 - 8);
        }
    }

    #[test]
    fn an_empty_piece_splices_too() {
        let piece = DeflatePiece::compress(&[]).unwrap();
        assert!(piece.is_empty());
        let member = joined(&gzip_splice(b"[", &piece, b"]"));
        assert_eq!(gunzip(&member), b"[]");
    }
}
