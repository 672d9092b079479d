//! OpenTelemetry export from the real binary to a real OTLP/HTTP receiver on loopback: spans
//! carry the traceparent's ids and parent links and the HTTP attributes, the PHP span hangs
//! under the server span, and a missing or stalled collector never slows requests down.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::process::{binary, Server};
use common::Proto;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::mpsc;

/// What the receiver got: the spans of each export with their resource's service name, or why
/// an export was not a valid OTLP/HTTP protobuf request. The receiver's tasks only report; the
/// test body asserts, so a bad export fails the test instead of a task nobody joins.
type Export = Result<Vec<(String, Span)>, String>;

/// A minimal OTLP/HTTP receiver: decodes every `POST /v1/traces` protobuf export and sends it to
/// the returned channel.
async fn otlp_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Export>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (exports, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let exports = exports.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let exports = exports.clone();
                async move {
                    let export = decode_export(request).await;
                    let status = if export.is_ok() {
                        StatusCode::OK
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    let _ = exports.send(export);
                    let reply = ExportTraceServiceResponse::default().encode_to_vec();
                    let mut response = Response::new(Full::new(Bytes::from(reply)));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, received)
}

/// The spans of one export request, or what is wrong with it.
async fn decode_export(request: Request<Incoming>) -> Export {
    let path = request.uri().path().to_string();
    if path != "/v1/traces" {
        return Err(format!("exported to {path}, not /v1/traces"));
    }
    let content_type = request.headers().get("content-type").cloned();
    if content_type
        .as_ref()
        .is_none_or(|v| v != "application/x-protobuf")
    {
        return Err(format!(
            "content-type {content_type:?}, not application/x-protobuf"
        ));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the export: {e}"))?
        .to_bytes();
    let export = ExportTraceServiceRequest::decode(body)
        .map_err(|e| format!("not a valid OTLP protobuf export: {e}"))?;
    let mut spans = Vec::new();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| string(a.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push((service.clone(), span));
            }
        }
    }
    Ok(spans)
}

fn string(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| string(a.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn start(otlp_endpoint: &str) -> Server {
    start_with(otlp_endpoint, &[])
}

fn start_with(otlp_endpoint: &str, extra: &[(&str, &str)]) -> Server {
    let mut command = binary();
    command
        .env("PHP_WORKERS", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
        .env("OTEL_SERVICE_NAME", "tokio-php-under-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    for (name, value) in extra {
        command.env(name, value);
    }
    Server::start(&mut command)
}

async fn get(server: &Server, path: &str, traceparent: Option<&str>) -> Response<Bytes> {
    let mut request = Request::get(path);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    common::send(
        server.addr,
        Proto::Http1,
        request.body(Full::default()).unwrap(),
    )
    .await
}

/// Waits (bounded) until `count` spans arrived, or the deadline passed; returns all so far.
/// Panics on an export the receiver found invalid.
async fn wait_for_spans(
    received: &mut mpsc::UnboundedReceiver<Export>,
    count: usize,
) -> Vec<(String, Span)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut spans = Vec::new();
    while spans.len() < count {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(Ok(exported))) => spans.extend(exported),
            Ok(Some(Err(problem))) => panic!("the server sent a bad export: {problem}"),
            Ok(None) | Err(_) => break,
        }
    }
    spans
}

/// Fails on any invalid export that arrived after the spans a test waited for.
fn assert_no_bad_export(received: &mut mpsc::UnboundedReceiver<Export>) {
    while let Ok(export) = received.try_recv() {
        if let Err(problem) = export {
            panic!("the server sent a bad export: {problem}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_export_server_and_php_spans_with_the_traceparent_ids() {
    let (collector, mut received) = otlp_receiver().await;
    let server = start(&format!("http://{collector}"));
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let response = get(
        &server,
        "/slow.php?ms=30",
        Some(&format!("00-{trace_id}-{caller_span}-01")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let our_span = response.headers()["traceparent"].to_str().unwrap()[36..52].to_string();

    let spans = wait_for_spans(&mut received, 2).await;
    let (service, server_span) = spans
        .iter()
        .find(|(_, s)| hex(&s.span_id) == our_span)
        .unwrap_or_else(|| panic!("no span {our_span} among {spans:?}"));
    assert_eq!(service, "tokio-php-under-test");
    assert_eq!(hex(&server_span.trace_id), trace_id, "the caller's trace");
    assert_eq!(
        hex(&server_span.parent_span_id),
        caller_span,
        "parented to the caller's span"
    );
    assert_eq!(server_span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(server_span.name, "GET");
    assert_eq!(
        attribute(server_span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(server_span, "url.path").as_deref(),
        Some("/slow.php")
    );
    assert_eq!(
        attribute(server_span, "url.query").as_deref(),
        Some("ms=30")
    );
    assert_eq!(
        attribute(server_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(server_span, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        attribute(server_span, "client.address").as_deref(),
        Some("127.0.0.1")
    );

    let (_, php_span) = spans
        .iter()
        .find(|(_, s)| s.name == "php")
        .unwrap_or_else(|| panic!("no php span among {spans:?}"));
    assert_eq!(hex(&php_span.trace_id), trace_id);
    assert_eq!(
        hex(&php_span.parent_span_id),
        our_span,
        "the PHP span is the server span's child"
    );
    let script_us: u64 = attribute(php_span, "php.script_us")
        .unwrap()
        .parse()
        .unwrap();
    assert!(script_us >= 30_000, "the script slept 30 ms: {script_us}");
    assert!(attribute(php_span, "php.queue_us").is_some());
    assert!(php_span.end_time_unix_nano > php_span.start_time_unix_nano);
    assert!(server.terminate().success());
    assert_no_bad_export(&mut received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_balancer_the_span_names_the_forwarded_client() {
    let (collector, mut received) = otlp_receiver().await;
    let server = start_with(
        &format!("http://{collector}"),
        &[("TRUSTED_PROXIES", "127.0.0.1")],
    );
    let request = Request::get("/index.php")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .unwrap();
    let response = common::send(server.addr, Proto::Http1, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let spans = wait_for_spans(&mut received, 1).await;
    let (_, span) = spans
        .iter()
        .find(|(_, s)| s.kind == 2)
        .unwrap_or_else(|| panic!("no server span among {spans:?}"));
    let seen = [
        "client.address",
        "url.scheme",
        "server.port",
        "network.peer.address",
    ]
    .map(|key| attribute(span, key));
    assert_eq!(
        seen,
        [
            Some("203.0.113.9".into()),
            Some("https".into()),
            Some("443".into()),
            Some("127.0.0.1".into())
        ]
    );
    assert!(server.terminate().success());
    assert_no_bad_export(&mut received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_stalled_collector_never_holds_requests_up() {
    // Nothing listens on `gone`; `stalled` accepts connections and never answers.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = stalled.accept().await {
            held.push(stream);
        }
    });
    for collector in [gone, stalled_addr] {
        let server = start(&format!("http://{collector}"));
        for _ in 0..50 {
            let response = get(&server, "/index.php", None).await;
            assert_eq!(response.status(), StatusCode::OK, "collector {collector}");
        }
        assert!(
            server.terminate().success(),
            "shutdown with an unreachable collector still exits cleanly"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_flags_configure_the_export_too() {
    let (collector, mut received) = otlp_receiver().await;
    let server = Server::start(
        binary()
            .env("PHP_WORKERS", "1")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .arg("--otel-exporter-otlp-endpoint")
            .arg(format!("http://{collector}/"))
            .arg("--otel-service-name")
            .arg("named-by-flag"),
    );
    let response = get(&server, "/index.php", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let spans = wait_for_spans(&mut received, 1).await;
    assert!(
        spans.iter().any(|(service, _)| service == "named-by-flag"),
        "{spans:?}"
    );
    assert!(server.terminate().success());
    assert_no_bad_export(&mut received);
}
