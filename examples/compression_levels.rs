//! Size and time of every encoder and level the compression layer could use, on a real page.
//!
//! ```text
//! php bench/www/page.php > /tmp/page.html
//! cargo run --release --example compression_levels /tmp/page.html
//! ```
//!
//! The page is also cut to 4 KiB and 16 KiB and extended to 256 KiB and 1 MiB (further copies
//! with their digits changed, as a longer table would be), so the table shows
//! how each level behaves at the sizes `Level::for_size` distinguishes. Each figure is the best of
//! several runs (the least disturbed by other work on the machine); `gzip -5` is nginx's
//! default `gzip_comp_level`, the baseline a level must beat in size.

use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: compression_levels PAGE.html");
    let page = std::fs::read(&path).expect("the page is readable");
    for size in [4 << 10, 16 << 10, page.len(), 256 << 10, 1 << 20] {
        let body = page_of_size(&page, size);
        println!("\n{size} bytes");
        println!(
            "{:<10} {:>9} {:>7} {:>10}",
            "encoder", "bytes", "ratio", "µs"
        );
        let baseline = measure("gzip 5", &body, |b| gzip(b, 5));
        for level in [1, 3, 4, 6, 9] {
            measure(&format!("gzip {level}"), &body, |b| gzip(b, level));
        }
        for quality in [1, 2, 3, 4, 5, 6] {
            measure(&format!("br {quality}"), &body, |b| brotli(b, quality));
        }
        for level in [1, 2, 3, 4, 5, 6, 7] {
            measure(&format!("zstd {level}"), &body, |b| zstd(b, level));
        }
        let _ = baseline;
    }
}

/// `size` bytes of `page`: cut, or followed by copies whose digits are shifted by the copy's
/// number, so no copy repeats an earlier one byte for byte.
fn page_of_size(page: &[u8], size: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(size);
    for copy in 0.. {
        if body.len() >= size {
            break;
        }
        body.extend(page.iter().map(|&b| match b {
            b'0'..=b'9' => b'0' + (b - b'0' + (copy % 10) as u8) % 10,
            _ => b,
        }));
    }
    body.truncate(size);
    body
}

fn measure(name: &str, body: &[u8], encode: impl Fn(&[u8]) -> usize) -> usize {
    let runs = (2_000_000 / body.len()).clamp(5, 200);
    let mut best = Duration::MAX;
    let mut bytes = 0;
    for _ in 0..runs {
        let started = Instant::now();
        bytes = encode(body);
        best = best.min(started.elapsed());
    }
    println!(
        "{name:<10} {bytes:>9} {:>6.1}% {:>10.0}",
        bytes as f64 * 100.0 / body.len() as f64,
        best.as_secs_f64() * 1e6
    );
    bytes
}

fn gzip(body: &[u8], level: u32) -> usize {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap().len()
}

fn brotli(body: &[u8], quality: u32) -> usize {
    let window = (u64::BITS - (body.len() as u64).leading_zeros()).clamp(16, 22);
    let mut encoder = brotli::CompressorWriter::new(Vec::new(), 4096, quality, window);
    encoder.write_all(body).unwrap();
    encoder.into_inner().len()
}

fn zstd(body: &[u8], level: i32) -> usize {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
    encoder
        .set_pledged_src_size(Some(body.len() as u64))
        .unwrap();
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap().len()
}
