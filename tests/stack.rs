//! The whole layer stack, as the server builds it from its configuration, in front of real PHP.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{json, send, send_until_end, text, BodyEnd, Proto, TestServer, BOTH};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio_php::layer::ErrorPagesLayer;
use tokio_php::stack::{self, StackConfig};

fn config() -> StackConfig {
    StackConfig {
        request_timeout: Some(Duration::from_secs(30)),
        static_cache_ttl: Some(Duration::from_secs(86_400)),
        ..common::stack_config()
    }
}

async fn server(config: StackConfig) -> TestServer {
    TestServer::with_stack(2, config).await
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path)
}

fn empty() -> Full<Bytes> {
    Full::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_and_request_id_reach_php_and_the_client() {
    let server = server(config()).await;
    for proto in BOTH {
        let request = get("/trace.php")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("tracestate", "vendor=x")
            .body(empty())
            .unwrap();
        let response = send(server.addr, proto, request).await;
        let traceparent = response.headers()["traceparent"]
            .to_str()
            .unwrap()
            .to_string();
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let php = json(&response);
        assert_eq!(
            php["TRACE_ID"], "0af7651916cd43dd8448eb211c80319c",
            "{proto:?}"
        );
        assert_eq!(php["PARENT_SPAN_ID"], "b7ad6b7169203331");
        assert_eq!(
            php["HTTP_TRACEPARENT"],
            traceparent.as_str(),
            "PHP propagates this server's span"
        );
        assert_eq!(php["HTTP_TRACESTATE"], "vendor=x");
        assert_eq!(
            traceparent,
            format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                php["SPAN_ID"].as_str().unwrap()
            )
        );
        assert_eq!(php["HTTP_X_REQUEST_ID"], request_id.as_str());
        assert_eq!(
            request_id,
            format!("0af7651916cd-{}", &php["SPAN_ID"].as_str().unwrap()[..4])
        );

        let request = get("/trace.php")
            .header("x-request-id", "client-chosen-42")
            .body(empty())
            .unwrap();
        let response = send(server.addr, proto, request).await;
        assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
        assert_eq!(json(&response)["HTTP_X_REQUEST_ID"], "client-chosen-42");
        assert_eq!(
            json(&response)["PARENT_SPAN_ID"],
            serde_json::Value::Null,
            "a new trace"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_then_lets_the_client_back() {
    for proto in BOTH {
        // A server of its own for each protocol: a full bucket without waiting for a refill.
        let server = server(StackConfig {
            rate_limit: Some((2, Duration::from_secs(1))),
            ..config()
        })
        .await;
        for remaining in ["1", "0"] {
            let response = server.get(proto, "/index.php").await;
            assert_eq!(response.status(), StatusCode::OK, "{proto:?}");
            assert_eq!(response.headers()["x-ratelimit-limit"], "2");
            assert_eq!(response.headers()["x-ratelimit-remaining"], remaining);
        }
        let refused = server.get(proto, "/index.php").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "{proto:?}");
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(text(&refused), "429 Too Many Requests\n");
        // The limiter's clock is real time: one request refills every 500 ms. Refused requests
        // take nothing from the bucket, so asking until one is admitted finds the refill.
        let what = format!("{proto:?}: the bucket to refill and admit the client again");
        common::wait_until(&what, Duration::from_secs(10), || async {
            server.get(proto, "/index.php").await.status() == StatusCode::OK
        })
        .await;
    }
}

fn brotli_decode(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Decodes a body by its Content-Encoding, with the reference decoders.
fn decode(response: &http::Response<bytes::Bytes>) -> Vec<u8> {
    use std::io::Read;
    let data = &response.body()[..];
    match response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap())
    {
        Some("br") => brotli_decode(data),
        Some("zstd") => zstd::stream::decode_all(data).unwrap(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        None => data.to_vec(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_output_is_compressed_with_what_the_client_accepts() {
    let server = server(config()).await;
    for proto in BOTH {
        let plain = server.get(proto, "/page.php").await;
        assert!(plain.headers().get("content-encoding").is_none());
        assert_eq!(plain.headers()["vary"], "accept-encoding");

        for (accept, expected) in [
            ("gzip, deflate, br, zstd", "zstd"),
            ("gzip, br", "br"),
            ("gzip, deflate", "gzip"),
        ] {
            let request = get("/page.php")
                .header("accept-encoding", accept)
                .body(empty())
                .unwrap();
            let compressed = send(server.addr, proto, request).await;
            assert_eq!(
                compressed.headers()["content-encoding"],
                expected,
                "{proto:?} {accept}"
            );
            assert!(compressed.body().len() < plain.body().len() / 4);
            assert_eq!(decode(&compressed), plain.body().to_vec(), "{accept}");
        }

        let request = get("/large.php")
            .header("accept-encoding", "br")
            .body(empty())
            .unwrap();
        let streamed = send(server.addr, proto, request).await;
        assert_eq!(
            streamed.headers()["content-encoding"],
            "br",
            "long streamed output too"
        );
        assert_eq!(brotli_decode(streamed.body()).len(), 1 << 20);

        // Output that started with flush() asked to be delivered promptly: even of a compressible
        // type (stream.php sends text/plain), it goes out as PHP wrote it, never into an encoder.
        // (tests/streaming.rs times the delivery.)
        let request = get("/stream.php?n=3")
            .header("accept-encoding", "br")
            .body(empty())
            .unwrap();
        let flushed = send(server.addr, proto, request).await;
        assert!(
            flushed.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "a compressible type"
        );
        assert!(
            flushed.headers().get("content-encoding").is_none(),
            "{proto:?}: flushed output is never held back in an encoder"
        );
        assert_eq!(flushed.body().len(), 3 * 1024);

        let request = get("/binary.php")
            .header("accept-encoding", "br")
            .body(empty())
            .unwrap();
        let binary = send(server.addr, proto, request).await;
        assert!(
            binary.headers().get("content-encoding").is_none(),
            "octet-stream is not compressed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_are_served_with_validators_ranges_and_cache_control() {
    let server = server(config()).await;
    for proto in BOTH {
        let response = server.get(proto, "/style.css").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/css");
        assert_eq!(response.headers()["cache-control"], "public, max-age=86400");
        assert_eq!(text(&response), "body{}\n");
        let etag = response.headers()["etag"].clone();
        let modified = response.headers()["last-modified"].clone();

        let request = get("/style.css")
            .header("if-none-match", etag)
            .body(empty())
            .unwrap();
        let response = send(server.addr, proto, request).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{proto:?}");
        assert!(response.body().is_empty());

        let request = get("/style.css")
            .header("if-modified-since", modified)
            .body(empty())
            .unwrap();
        assert_eq!(
            send(server.addr, proto, request).await.status(),
            StatusCode::NOT_MODIFIED
        );

        let request = get("/style.css")
            .header("range", "bytes=0-3")
            .body(empty())
            .unwrap();
        let response = send(server.addr, proto, request).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(response.headers()["content-range"], "bytes 0-3/7");
        assert_eq!(text(&response), "body");

        let request = Request::head("/style.css").body(empty()).unwrap();
        let response = send(server.addr, proto, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-length"], "7");
        assert!(response.body().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_and_dotfiles_are_never_served_as_files() {
    let server = server(config()).await;
    for proto in BOTH {
        let response = server.get(proto, "/index.php").await;
        assert_eq!(
            text(&response),
            "index of /index.php",
            "{proto:?}: run, not shown"
        );
        for hidden in ["/.env", "/%2eenv", "/sub/../.env"] {
            let response = server.get(proto, hidden).await;
            assert!(matches!(response.status().as_u16(), 403 | 404), "{hidden}");
            assert!(!text(&response).contains("SECRET"), "{hidden}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_controller_gets_everything_but_static_files() {
    let server = server(StackConfig {
        index_file: Some("front.php".into()),
        ..config()
    })
    .await;
    for proto in BOTH {
        let routed = json(&server.get(proto, "/blog/42?x=1").await);
        assert_eq!(routed["script_name"], "/front.php", "{proto:?}");
        assert_eq!(
            routed["path_info"], "",
            "a rewrite has no PATH_INFO, as under nginx"
        );
        assert_eq!(routed["request_uri"], "/blog/42?x=1");
        assert_eq!(routed["query"]["x"], "1");
        let other_script = json(&server.get(proto, "/dump.php").await);
        assert_eq!(
            other_script["script_name"], "/front.php",
            "only the front controller runs"
        );
        assert_eq!(other_script["request_uri"], "/dump.php");
        assert_eq!(text(&server.get(proto, "/style.css").await), "body{}\n");
        assert_eq!(
            server.get(proto, "/front.php").await.status(),
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_files_runs_the_fallback_and_still_refuses_hidden_and_escaping_paths() {
    let server = server(StackConfig {
        try_files: Some("$uri $uri/ /front.php?$args".parse().unwrap()),
        ..config()
    })
    .await;
    for proto in BOTH {
        let routed = json(&server.get(proto, "/blog/42?x=1").await);
        assert_eq!(routed["script_name"], "/front.php", "{proto:?}");
        assert_eq!(routed["path_info"], "");
        assert_eq!(routed["request_uri"], "/blog/42?x=1");
        assert_eq!(routed["query"]["x"], "1");
        assert_eq!(
            text(&server.get(proto, "/index.php").await),
            "index of /index.php",
            "{proto:?}: an existing script runs itself"
        );
        assert_eq!(text(&server.get(proto, "/style.css").await), "body{}\n");
        let redirect = server.get(proto, "/sub?a=b").await;
        assert_eq!(redirect.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(redirect.headers()["location"], "/sub/?a=b");
        for hidden in ["/.env", "/%2eenv", "/sub/.env", "/.git/config"] {
            let response = server.get(proto, hidden).await;
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{proto:?} {hidden}"
            );
            assert!(!text(&response).contains("SECRET"), "{hidden}");
        }
        for escape in [
            "/../front.php",
            "/sub/../.env",
            "/%2e%2e/x",
            "/..%2fx",
            "/a%00b",
            "/a%5cb",
        ] {
            let response = server.get(proto, escape).await;
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{proto:?} {escape}"
            );
        }
        for missing in ["/missing.php", "/missing.php/x"] {
            let response = server.get(proto, missing).await;
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{proto:?} {missing}"
            );
        }
        assert_eq!(
            json(&server.get(proto, "/after/the/attacks").await)["script_name"],
            "/front.php",
            "{proto:?}: the next request is served"
        );
    }
}

#[test]
fn a_missing_front_controller_stops_startup() {
    let Err(error) = stack::build::<_, (), _>(
        &StackConfig {
            index_file: Some("no-such-index.php".into()),
            ..config()
        },
        tokio_php::StubService,
    ) else {
        panic!("a missing INDEX_FILE is refused");
    };
    assert!(
        error.to_string().contains("INDEX_FILE=no-such-index.php"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_error_pages_and_api_clients_plain_errors() {
    let errors = common::fixtures_root().join("../errors");
    let server = server(StackConfig {
        error_pages: Some(ErrorPagesLayer::from_dir(errors).unwrap()),
        ..config()
    })
    .await;
    for proto in BOTH {
        let request = get("/missing.php")
            .header("accept", "text/html,*/*;q=0.8")
            .body(empty())
            .unwrap();
        let page = send(server.addr, proto, request).await;
        assert_eq!(page.status(), StatusCode::NOT_FOUND);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert!(
            text(&page).contains("This page does not exist"),
            "{proto:?}"
        );

        let request = get("/missing.php")
            .header("accept", "application/json")
            .body(empty())
            .unwrap();
        let plain = send(server.addr, proto, request).await;
        assert_eq!(text(&plain), "404 Not Found\n");

        let request = get("/fatal.php")
            .header("accept", "text/html")
            .body(empty())
            .unwrap();
        let fatal = send(server.addr, proto, request).await;
        assert_eq!(fatal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(fatal.body().is_empty(), "no 500.html: the empty 500 stays");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_time_every_phase_of_a_php_request() {
    let server = server(StackConfig {
        profile: true,
        ..config()
    })
    .await;
    for (proto, version) in [(Proto::Http1, "HTTP/1.1"), (Proto::H2c, "HTTP/2.0")] {
        let request = get("/slow.php?ms=20")
            .header("x-profile", "1")
            .body(empty())
            .unwrap();
        let response = send(server.addr, proto, request).await;
        let micros =
            |name: &str| -> u64 { response.headers()[name].to_str().unwrap().parse().unwrap() };
        assert_eq!(response.headers()["x-profile-http-version"], version);
        assert!(
            micros("x-profile-script-us") >= 20_000,
            "the script slept 20 ms"
        );
        assert!(micros("x-profile-total-us") >= micros("x-profile-script-us"));
        for name in [
            "x-profile-parse-us",
            "x-profile-queue-us",
            "x-profile-php-startup-us",
            "x-profile-output-us",
            "x-profile-php-shutdown-us",
        ] {
            micros(name);
        }
        let plain = server.get(proto, "/slow.php?ms=1").await;
        assert!(
            plain.headers().get("x-profile-total-us").is_none(),
            "only when asked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_response_stays_broken_through_compression_and_every_layer() {
    let server = server(StackConfig {
        access_log: true,
        profile: true,
        ..config()
    })
    .await;
    let line = "stream before the fatal error ".repeat(32) + "\n";
    for proto in BOTH {
        let request = get("/fatal_after_stream.php")
            .header("accept-encoding", "gzip")
            .body(empty())
            .unwrap();
        let (parts, body, end) = send_until_end(server.addr, proto, request).await;
        assert_eq!(parts.status, StatusCode::OK, "{proto:?}");
        assert_eq!(parts.headers["content-encoding"], "gzip", "{proto:?}");
        assert!(
            matches!(end, BodyEnd::Broken(_)),
            "{proto:?}: the script died mid-stream: {end:?}"
        );
        let decoded = gunzip_what_arrived(&body);
        assert!(
            !decoded.is_empty(),
            "{proto:?}: the output before the error arrived"
        );
        assert!(
            line.repeat(64).as_bytes().starts_with(&decoded),
            "{proto:?}: what arrived is the script's output"
        );
    }
}

/// Decompresses as much of a truncated gzip stream as is there.
fn gunzip_what_arrived(compressed: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut decoder = flate2::read::GzDecoder::new(compressed);
    let mut decoded = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = decoder.read(&mut buf) {
        if n == 0 {
            break;
        }
        decoded.extend_from_slice(&buf[..n]);
    }
    decoded
}
