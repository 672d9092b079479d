//! A real PHP behind a real server: superglobals, bodies, headers and output, over HTTP/1.1 and
//! h2c.

mod common;

use bytes::Bytes;
use common::{json, send, text, Proto, TestServer, BOTH};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio_php::{http::BodyLimits, php::PoolConfig};

fn body(data: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(data.into())
}

async fn server() -> TestServer {
    TestServer::with_workers(2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_become_get() {
    let server = server().await;
    for proto in BOTH {
        let response = server
            .get(proto, "/dump.php?a=1&b[]=x&b[]=y&c%20d=%C3%A9&e.f=2")
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let dump = json(&response);
        assert_eq!(
            dump["get"],
            serde_json::json!({"a": "1", "b": ["x", "y"], "c_d": "é", "e_f": "2"}),
            "{proto:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urlencoded_posts_become_post_and_request() {
    let server = server().await;
    for proto in BOTH {
        let request = Request::post("/dump.php?q=from-query")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body("x=1&y[k]=v&z=hello+world%21"))
            .unwrap();
        let dump = json(&send(server.addr, proto, request).await);
        assert_eq!(dump["method"], "POST");
        assert_eq!(
            dump["post"],
            serde_json::json!({"x": "1", "y": {"k": "v"}, "z": "hello world!"})
        );
        assert_eq!(
            dump["request"]["q"], "from-query",
            "{proto:?}: $_REQUEST has GET"
        );
        assert_eq!(dump["request"]["x"], "1", "{proto:?}: $_REQUEST has POST");
    }
}

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, content) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(file) => out.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => out.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", md5::compute(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_several_files_in_one_field() {
    // A small spill threshold puts the body in a temporary file: uploads must work from there too.
    let server = TestServer::start(
        PoolConfig {
            workers: 2,
            ..PoolConfig::default()
        },
        BodyLimits {
            max_size: 8 << 20,
            spill_threshold: 4096,
        },
    )
    .await;
    let first: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let second = b"second file\x00with a NUL".to_vec();
    let third: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let boundary = "----tokio-php-boundary";
    let payload = multipart(
        boundary,
        &[
            ("title", None, b"holiday"),
            ("files[]", Some("a.bin"), &first),
            ("files[]", Some("b.txt"), &second),
            ("files[]", Some("c.dat"), &third),
        ],
    );
    for proto in BOTH {
        let request = Request::post("/upload.php")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body(payload.clone()))
            .unwrap();
        let response = send(server.addr, proto, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        let result = json(&response);
        assert_eq!(result["fields"]["title"], "holiday");
        let files = result["files"].as_array().unwrap();
        assert_eq!(files.len(), 3, "{proto:?}");
        for (file, (name, content)) in
            files
                .iter()
                .zip([("a.bin", &first), ("b.txt", &second), ("c.dat", &third)])
        {
            assert_eq!(file["name"], name);
            assert_eq!(file["error"], 0);
            assert_eq!(file["size"], content.len());
            assert_eq!(file["moved"], true, "move_uploaded_file() accepts {name}");
            assert_eq!(file["md5"], md5_hex(content), "{name} arrives intact");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_parsed_and_split_http2_cookies_joined() {
    let server = server().await;
    for proto in BOTH {
        let request = Request::get("/dump.php")
            .header("cookie", "a=1; b=two%20words")
            .header("cookie", "c=3")
            .body(body(""))
            .unwrap();
        let dump = json(&send(server.addr, proto, request).await);
        assert_eq!(
            dump["cookie"],
            serde_json::json!({"a": "1", "b": "two words", "c": "3"}),
            "{proto:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bodies_reach_php_input_for_every_method() {
    let server = server().await;
    let payload = r#"{"name":"tokio","list":[1,2,3]}"#;
    for proto in BOTH {
        for method in ["POST", "PUT", "PATCH", "DELETE", "QUERY"] {
            let request = Request::builder()
                .method(method)
                .uri("/dump.php")
                .header("content-type", "application/json")
                .body(body(payload))
                .unwrap();
            let response = send(server.addr, proto, request).await;
            assert_eq!(response.status(), StatusCode::OK, "{proto:?} {method}");
            let dump = json(&response);
            assert_eq!(dump["method"], method);
            assert_eq!(dump["input"], payload, "{proto:?} {method}: php://input");
            assert_eq!(dump["post"], serde_json::json!([]), "JSON is not form data");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_spill_threshold_arrive_intact() {
    let server = TestServer::start(
        PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        BodyLimits {
            max_size: 4 << 20,
            spill_threshold: 1024,
        },
    )
    .await;
    let payload: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
    for proto in BOTH {
        let request = Request::put("/dump.php")
            .header("content-type", "application/octet-stream")
            .body(body(payload.clone()))
            .unwrap();
        let dump = json(&send(server.addr, proto, request).await);
        assert_eq!(dump["input_md5"], md5_hex(&payload), "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_headers_and_cookies_reach_the_client() {
    let server = server().await;
    for proto in BOTH {
        let response = server.get(proto, "/status.php").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-custom"], "yes");
        let multi: Vec<_> = response.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"], "{proto:?}");
        let cookies: Vec<_> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["first=1", "second=2; HttpOnly"], "{proto:?}");
        assert_eq!(
            response.headers()["content-type"],
            "text/plain;charset=UTF-8"
        );
        assert!(
            response.headers().get("x-powered-by").is_none(),
            "expose_php is off"
        );
        assert_eq!(text(&response), "created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_after_post_uses_http11_semantics() {
    let server = server().await;
    let response = server.get(Proto::Http1, "/redirect.php").await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], "/index.php");
    let post = Request::post("/redirect.php").body(body("")).unwrap();
    let response = send(server.addr, Proto::Http1, post).await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "PHP sees HTTP/1.1 (proto_num)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_get_headers_without_a_body() {
    let server = server().await;
    for proto in BOTH {
        let request = Request::head("/status.php").body(body("")).unwrap();
        let response = send(server.addr, proto, request).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-custom"], "yes");
        assert!(response.body().is_empty(), "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_output_round_trips_every_byte() {
    let server = server().await;
    let expected: Vec<u8> = (0..=255u8).collect();
    for proto in BOTH {
        let response = server.get(proto, "/binary.php").await;
        assert_eq!(response.body().as_ref(), expected.as_slice(), "{proto:?}");
        assert_eq!(response.headers()["content-length"], "256");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_of_output_streams_intact() {
    let server = server().await;
    let line = "0123456789abcdef".repeat(64);
    let expected = line.repeat(1024);
    for proto in BOTH {
        let response = server.get(proto, "/large.php").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().len(), 1 << 20, "{proto:?}");
        assert!(
            response.body().as_ref() == expected.as_bytes(),
            "{proto:?}: content differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_variables_are_complete() {
    let server = server().await;
    let root = common::fixtures_root().canonicalize().unwrap();
    for (proto, protocol) in [(Proto::Http1, "HTTP/1.1"), (Proto::H2c, "HTTP/2.0")] {
        let request = Request::post("/server.php/extra/path?x=1&y=2")
            .header("content-type", "text/plain")
            .header("x-custom-header", "custom")
            .header("x_spoofed", "evil")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .body(body("abc"))
            .unwrap();
        let response = send(server.addr, proto, request).await;
        let vars = json(&response);
        let expect =
            |key: &str, value: &str| assert_eq!(vars[key], value, "{proto:?} $_SERVER[{key}]");
        expect("REQUEST_METHOD", "POST");
        expect("REQUEST_URI", "/server.php/extra/path?x=1&y=2");
        expect("QUERY_STRING", "x=1&y=2");
        expect("SCRIPT_NAME", "/server.php");
        expect("SCRIPT_FILENAME", root.join("server.php").to_str().unwrap());
        expect("PATH_INFO", "/extra/path");
        expect("PHP_SELF", "/server.php/extra/path");
        expect("DOCUMENT_ROOT", root.to_str().unwrap());
        expect("SERVER_NAME", "127.0.0.1");
        expect("SERVER_ADDR", "127.0.0.1");
        expect("SERVER_PORT", &server.addr.port().to_string());
        expect("REMOTE_ADDR", "127.0.0.1");
        expect("SERVER_PROTOCOL", protocol);
        expect("SERVER_SOFTWARE", tokio_php::SERVER_SOFTWARE);
        expect("GATEWAY_INTERFACE", "CGI/1.1");
        expect("CONTENT_TYPE", "text/plain");
        expect("CONTENT_LENGTH", "3");
        expect("HTTP_HOST", &server.addr.to_string());
        expect("HTTP_X_CUSTOM_HEADER", "custom");
        expect("PHP_AUTH_USER", "user");
        expect("PHP_AUTH_PW", "pass");
        assert!(vars["REMOTE_PORT"].as_str().unwrap().parse::<u16>().is_ok());
        assert!(vars["REQUEST_TIME"].as_i64().is_some());
        assert!(vars["REQUEST_TIME_FLOAT"].as_f64().is_some());
        assert!(
            vars.get("HTTP_X_SPOOFED").is_none(),
            "headers with '_' are dropped"
        );
        assert!(vars.get("HTTPS").is_none(), "plain TCP is not HTTPS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_requests_are_served() {
    let server = server().await;
    let response = common::raw_exchange(
        server.addr,
        b"GET /server.php HTTP/1.0\r\nHost: example\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(
        response.contains(r#""SERVER_PROTOCOL":"HTTP\/1.0""#),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_serve_their_index_script() {
    let server = server().await;
    for proto in BOTH {
        assert_eq!(text(&server.get(proto, "/").await), "index of /index.php");
        assert_eq!(
            text(&server.get(proto, "/sub/").await),
            "sub index of /sub/index.php"
        );
    }
}
