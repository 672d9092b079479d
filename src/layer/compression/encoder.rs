//! The three encoders and the level each one runs at for a body of a given size.
//!
//! Each encoder is the synchronous one from its reference crate (`zstd`, `brotli`, `flate2`),
//! writing into a `Vec<u8>` that is drained after every write: a response body arrives in
//! frames, and each frame is compressed as it passes, in the poll that brought it.

use std::io::{self, Write};

use bytes::Bytes;

/// A content coding tokio_php produces, in the order it prefers them when a client accepts
/// several with the same q-value: zstd compresses a web page smaller than gzip at a fraction of
/// the CPU time, brotli at the qualities that are fast enough for dynamic pages is close behind,
/// gzip is what every client understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `zstd` (RFC 8878).
    Zstd,
    /// `br` (RFC 7932).
    Brotli,
    /// `gzip` (RFC 1952).
    Gzip,
}

impl Encoding {
    /// Every encoding, most preferred first.
    pub const PREFERENCE: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// How hard to compress a body of `size` bytes (`None`: a stream of unknown length).
///
/// Chosen from `cargo run --release --example compression_levels` on bench/www/page.php (the
/// figures are in docs/benchmarks.md): for each size class, the fastest level that compresses
/// at least as well as nginx's `gzip_comp_level 5`. zstd at those levels is 3× faster than
/// gzip 5 and 10–15 % smaller; brotli 3 costs about what gzip 5 does and is 20 % smaller (brotli
/// 4 and up turn several times slower on anything past 16 KiB); gzip stays at 5, nginx's ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// zstd level (1..=22).
    pub zstd: i32,
    /// brotli quality (0..=11).
    pub brotli: u32,
    /// gzip level (1..=9).
    pub gzip: u32,
}

/// Bodies up to this size get [`Level::SMALL`].
pub const SMALL_BODY: u64 = 16 * 1024;
/// Bodies up to this size (and above [`SMALL_BODY`]) get [`Level::MEDIUM`].
pub const MEDIUM_BODY: u64 = 256 * 1024;

impl Level {
    /// Up to [`SMALL_BODY`]: every level costs well under 0.1 ms here, so the stronger ones.
    pub const SMALL: Level = Level {
        zstd: 5,
        brotli: 4,
        gzip: 5,
    };
    /// Up to [`MEDIUM_BODY`]: a typical PHP page.
    pub const MEDIUM: Level = Level {
        zstd: 1,
        brotli: 3,
        gzip: 5,
    };
    /// Larger bodies and streams.
    pub const LARGE: Level = Level {
        zstd: 2,
        brotli: 3,
        gzip: 5,
    };

    /// The level for a body of `size` bytes, `None` when it streams.
    pub fn for_size(size: Option<u64>) -> Level {
        match size {
            Some(size) if size <= SMALL_BODY => Level::SMALL,
            Some(size) if size <= MEDIUM_BODY => Level::MEDIUM,
            _ => Level::LARGE,
        }
    }
}

/// A running compressor. [`Encoder::compress`] feeds it a frame and returns what it produced;
/// [`Encoder::finish`] ends the stream.
pub(crate) enum Encoder {
    /// zstd, one frame.
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    /// brotli (boxed: its state is several hundred bytes).
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    /// gzip through flate2's zlib-rs backend.
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Zstd(_) => "Encoder::Zstd",
            Encoder::Brotli(_) => "Encoder::Brotli",
            Encoder::Gzip(_) => "Encoder::Gzip",
        })
    }
}

impl Encoder {
    /// An encoder for `encoding` tuned for a body of `size` bytes (`None`: unknown).
    pub(crate) fn new(encoding: Encoding, size: Option<u64>) -> io::Result<Encoder> {
        let level = Level::for_size(size);
        Ok(match encoding {
            Encoding::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level.zstd)?;
                if let Some(size) = size {
                    // Lets zstd size its window and tables to the body.
                    encoder.set_pledged_src_size(Some(size))?;
                }
                Encoder::Zstd(encoder)
            }
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                level.brotli,
                brotli_window(size),
            ))),
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.gzip),
            )),
        })
    }

    /// Compresses `data`; with `flush`, everything given so far is in the returned bytes (a
    /// stream's chunk reaches the client as soon as it was produced).
    pub(crate) fn compress(&mut self, data: &[u8], flush: bool) -> io::Result<Bytes> {
        match self {
            Encoder::Zstd(w) => write_and_take(w, data, flush, |w| w.get_mut()),
            Encoder::Brotli(w) => write_and_take(w.as_mut(), data, flush, |w| w.get_mut()),
            Encoder::Gzip(w) => write_and_take(w, data, flush, |w| w.get_mut()),
        }
    }

    /// Ends the stream and returns the last bytes.
    pub(crate) fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            Encoder::Zstd(w) => w.finish()?,
            Encoder::Brotli(w) => w.into_inner(),
            Encoder::Gzip(w) => w.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

fn write_and_take<W: Write>(
    writer: &mut W,
    data: &[u8],
    flush: bool,
    output: impl FnOnce(&mut W) -> &mut Vec<u8>,
) -> io::Result<Bytes> {
    writer.write_all(data)?;
    if flush {
        writer.flush()?;
    }
    Ok(Bytes::from(std::mem::take(output(writer))))
}

/// Brotli's window (log2 of bytes): no larger than the body, as brotli allocates it up front
/// (4 MiB at the default of 22, which costs more than compressing a 40 KB page).
fn brotli_window(size: Option<u64>) -> u32 {
    const MIN: u32 = 16;
    const MAX: u32 = 22;
    match size {
        Some(size) => (u64::BITS - size.max(1).leading_zeros()).clamp(MIN, MAX),
        None => 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Zstd => {
                out = zstd::stream::decode_all(data).unwrap();
            }
            Encoding::Brotli => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    fn page(len: usize) -> Vec<u8> {
        (0..)
            .map(|i| format!("<tr><td>{i}</td><td>row {}</td></tr>\n", i * 7 % 13))
            .flat_map(String::into_bytes)
            .take(len)
            .collect()
    }

    #[test]
    fn every_encoder_round_trips_whole_and_chunked_bodies() {
        for encoding in Encoding::PREFERENCE {
            for size in [1000, 40_000, 200_000] {
                let body = page(size);
                let mut whole = Encoder::new(encoding, Some(size as u64)).unwrap();
                let mut out = whole.compress(&body, false).unwrap().to_vec();
                out.extend_from_slice(&whole.finish().unwrap());
                assert_eq!(decode(encoding, &out), body, "{encoding:?} {size} whole");
                assert!(out.len() < body.len() / 2, "{encoding:?} {size} compresses");

                let mut streamed = Encoder::new(encoding, None).unwrap();
                let mut out = Vec::new();
                for chunk in body.chunks(16 * 1024) {
                    let produced = streamed.compress(chunk, true).unwrap();
                    assert!(
                        !produced.is_empty(),
                        "{encoding:?}: a flushed chunk is sent"
                    );
                    out.extend_from_slice(&produced);
                }
                out.extend_from_slice(&streamed.finish().unwrap());
                assert_eq!(decode(encoding, &out), body, "{encoding:?} {size} streamed");
            }
        }
    }

    #[test]
    fn a_flushed_prefix_decodes_on_its_own() {
        // What a client has received after a flush is decodable up to that point.
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let mut encoder = Encoder::new(encoding, None).unwrap();
            let sent = encoder.compress(b"data: first event\n\n", true).unwrap();
            let mut out = Vec::new();
            match encoding {
                Encoding::Gzip => {
                    let _ = flate2::read::GzDecoder::new(&sent[..]).read_to_end(&mut out);
                }
                Encoding::Brotli => {
                    let _ = brotli::Decompressor::new(&sent[..], 4096).read_to_end(&mut out);
                }
                Encoding::Zstd => {
                    let mut decoder = zstd::stream::read::Decoder::new(&sent[..]).unwrap();
                    let _ = decoder.read_to_end(&mut out);
                }
            }
            assert_eq!(out, b"data: first event\n\n", "{encoding:?}");
        }
    }

    #[test]
    fn brotli_window_follows_the_body() {
        assert_eq!(brotli_window(Some(1)), 16);
        assert_eq!(brotli_window(Some(43_000)), 16);
        assert_eq!(brotli_window(Some(100_000)), 17);
        assert_eq!(brotli_window(Some(3 << 20)), 22);
        assert_eq!(brotli_window(None), 20);
    }
}
