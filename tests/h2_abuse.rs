//! HTTP/2 abuse from a hand-written client (raw frames over h2c, every flood bounded in count
//! and time): rapid reset, CONTINUATION flood, an HPACK bomb, PING and SETTINGS floods, and
//! streams beyond the limit. Each attack ends with the connection refused or closed (GOAWAY),
//! never a crash, and the next ordinary client is served.

mod common;

use std::time::Duration;

use common::TestServer;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// HPACK for `GET http://t/index.php`: static-table `:method GET` and `:scheme http`, literal
/// `:path` and `:authority` without indexing.
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    block.push(0x04); // :path, literal without indexing (static index 4)
    block.push(10);
    block.extend_from_slice(b"/index.php");
    block.push(0x01); // :authority (static index 1)
    block.push(1);
    block.push(b't');
    block
}

async fn connect(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    stream
}

/// Writes `frames` (ignoring a write error: the server may close mid-flood), then reads what the
/// server sends until it closes the connection or `limit` passes. Returns the frames seen.
async fn flood_and_read(mut stream: TcpStream, frames: Vec<u8>, limit: Duration) -> Vec<Frame> {
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let _ = writer.write_all(&frames).await;
    };
    let read = async {
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        received
    };
    let (_, received) = tokio::join!(write, tokio::time::timeout(limit, read));
    parse_frames(&received.unwrap_or_default())
}

/// A frame the server sent: its type and the start of its payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    payload: Vec<u8>,
}

fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let end = (9 + len).min(bytes.len());
        frames.push(Frame {
            kind: bytes[3],
            payload: bytes[9..end].iter().copied().take(16).collect(),
        });
        bytes = &bytes[end..];
    }
    frames
}

fn has(frames: &[Frame], kind: u8) -> bool {
    frames.iter().any(|f| f.kind == kind)
}

/// A response `HEADERS` frame starting with `:status: 200` (HPACK static index 8).
fn answered_200(frames: &[Frame]) -> bool {
    frames
        .iter()
        .any(|f| f.kind == HEADERS && f.payload.first() == Some(&0x88))
}

async fn server() -> TestServer {
    TestServer::with_stack(1, common::stack_config()).await
}

async fn still_serves(server: &TestServer, after: &str) {
    for proto in common::BOTH {
        let response = server.get(proto, "/index.php").await;
        assert_eq!(response.status(), StatusCode::OK, "{proto:?} after {after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway() {
    let server = server().await;
    let stream = connect(&server).await;
    let mut frames = Vec::new();
    for i in 0..5_000u32 {
        let id = 2 * i + 1;
        frames.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &get_block()));
        frames.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    let seen = flood_and_read(stream, frames, Duration::from_secs(10)).await;
    assert!(has(&seen, GOAWAY), "no GOAWAY after 5000 resets: {seen:?}");
    still_serves(&server, "a rapid reset flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let server = server().await;
    let stream = connect(&server).await;
    let mut frames = frame(HEADERS, 0, 1, &get_block());
    let junk = [0x40, 100]
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'x', 100))
        .chain([100])
        .chain(std::iter::repeat_n(b'y', 100))
        .collect::<Vec<u8>>();
    for _ in 0..20_000 {
        frames.extend(frame(CONTINUATION, 0, 1, &junk));
    }
    let seen = flood_and_read(stream, frames, Duration::from_secs(10)).await;
    assert!(
        !answered_200(&seen),
        "a 4 MB header block must not be answered: {seen:?}"
    );
    still_serves(&server, "a CONTINUATION flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused() {
    let server = server().await;
    let stream = connect(&server).await;
    // One 4000-byte header stored in the dynamic table, then referenced by one byte 5,000 times:
    // 20 MB of decoded headers from a 9 KB block.
    let mut block = get_block();
    block.extend([0x40, 4]);
    block.extend_from_slice(b"bomb");
    block.extend([0x7f, 0xa1, 0x1e]); // value length 4000 (7-bit prefix 127 + 3873)
    block.extend(std::iter::repeat_n(b'b', 4000));
    block.extend(std::iter::repeat_n(0xbe, 5_000)); // indexed: dynamic entry 62
    let frames = frame(HEADERS, END_HEADERS | END_STREAM, 1, &block);
    let seen = flood_and_read(stream, frames, Duration::from_secs(10)).await;
    assert!(!answered_200(&seen), "the bomb must be refused: {seen:?}");
    still_serves(&server, "an HPACK bomb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_do_not_stop_the_server() {
    let server = server().await;
    let stream = connect(&server).await;
    let mut frames = Vec::new();
    for i in 0..20_000u64 {
        frames.extend(frame(PING, 0, 0, &i.to_be_bytes()));
        frames.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff])); // INITIAL_WINDOW_SIZE
    }
    let _ = flood_and_read(stream, frames, Duration::from_secs(5)).await;
    still_serves(&server, "PING and SETTINGS floods").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused_and_data_on_closed_streams_ends_the_connection() {
    let server = server().await;
    let stream = connect(&server).await;
    let mut frames = Vec::new();
    for i in 0..1_000u32 {
        // Opened and never ended: each holds a stream slot.
        frames.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &get_block()));
    }
    frames.extend(frame(DATA, END_STREAM, 9_999, b"on a stream never opened"));
    let seen = flood_and_read(stream, frames, Duration::from_secs(10)).await;
    assert!(
        has(&seen, RST_STREAM) || has(&seen, GOAWAY),
        "1000 open streams over a limit of 250: {seen:?}"
    );
    still_serves(&server, "a stream flood").await;
}

/// The control: the same hand-written frames, sent politely, get a `200` — so the refusals above
/// are the server's doing, not a malformed client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_written_client_is_served_when_it_behaves() {
    let server = server().await;
    let stream = connect(&server).await;
    let mut frames = frame(HEADERS, END_HEADERS | END_STREAM, 1, &get_block());
    frames.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
    let seen = flood_and_read(stream, frames, Duration::from_secs(5)).await;
    assert!(answered_200(&seen), "{seen:?}");
    assert!(has(&seen, DATA), "{seen:?}");
}
