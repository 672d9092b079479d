//! `TRUSTED_PROXIES` through the real binary: a trusted peer's `Forwarded` / `X-Forwarded-*`
//! headers set the client's address, scheme and port everywhere the server reports or keys on
//! the client (`$_SERVER`, the access log, the rate limiter), and from any other peer, including
//! one on the same machine, they change nothing. Clients connect from chosen loopback addresses
//! (127.0.0.1 is the trusted balancer, 127.0.0.3 an untrusted peer).

mod common;

use std::net::IpAddr;

use bytes::Bytes;
use common::process::{binary, Server};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

const BALANCER: &str = "127.0.0.1";
const STRANGER: &str = "127.0.0.3";

fn start(extra: &[(&str, &str)]) -> Server {
    let mut command = binary();
    command
        .env("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
        .env("ACCESS_LOG", "1");
    for (name, value) in extra {
        command.env(name, value);
    }
    Server::start(&mut command)
}

/// `GET path` with `headers`, on a connection from the loopback address `source`.
async fn get_from(
    source: &str,
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Bytes> {
    let mut request = Request::get(path).header("host", "app.example");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::<Bytes>::default()).unwrap();
    common::exchange(server.addr, Some(source.parse().unwrap()), request)
        .await
        .unwrap()
}

/// `$_SERVER` as `server.php` saw it.
async fn server_vars(source: &str, server: &Server, headers: &[(&str, &str)]) -> Value {
    let response = get_from(source, server, "/server.php", headers).await;
    assert_eq!(response.status(), StatusCode::OK);
    common::json(&response)
}

/// The `$_SERVER` entries that say who the client is and how it came.
fn client_view(vars: &Value) -> Value {
    let names = [
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "HTTPS",
        "REQUEST_SCHEME",
        "SERVER_PORT",
    ];
    names.iter().map(|name| vars[name].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_balancers_headers_set_the_client_address_scheme_and_port() {
    let server = start(&[]);
    let vars = server_vars(
        BALANCER,
        &server,
        &[
            ("x-forwarded-for", "203.0.113.7, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "8443"),
        ],
    )
    .await;
    // 10.1.2.3 is a trusted hop too, so the walk goes past it to the client. The client's port
    // is not known: REMOTE_PORT is left out rather than filled with the balancer's.
    assert_eq!(
        client_view(&vars),
        json!(["203.0.113.7", null, "on", "https", "8443"]),
        "{vars}"
    );
    assert_eq!(vars["HTTP_X_FORWARDED_FOR"], "203.0.113.7, 10.1.2.3");

    let vars = server_vars(
        BALANCER,
        &server,
        &[(
            "forwarded",
            r#"for="[2001:db8::7]:4711";proto=https;host=app.example"#,
        )],
    )
    .await;
    assert_eq!(
        client_view(&vars),
        json!(["2001:db8::7", "4711", "on", "https", "443"]),
        "a forwarded https without a port is on 443: {vars}"
    );

    let lines = server.wait_for_logs("access", 2);
    let clients: Vec<(&Value, &Value)> = lines
        .iter()
        .map(|line| (&line["data"]["client_ip"], &line["data"]["peer_ip"]))
        .collect();
    assert_eq!(
        clients,
        [
            (&"203.0.113.7".into(), &BALANCER.into()),
            (&"2001:db8::7".into(), &BALANCER.into())
        ]
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_change_nothing() {
    let server = start(&[]);
    let plain = server_vars(STRANGER, &server, &[]).await;
    let port = server.addr.port().to_string();
    assert_eq!(plain["REMOTE_ADDR"], STRANGER, "{plain}");
    for spoof in [
        &[
            ("x-forwarded-for", "203.0.113.66"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
        ][..],
        &[(
            "forwarded",
            "for=203.0.113.66;proto=https;host=\"bank.example:443\"",
        )],
        &[("x-forwarded-for", "127.0.0.1")],
    ] {
        let vars = server_vars(STRANGER, &server, spoof).await;
        assert_eq!(vars["REMOTE_ADDR"], STRANGER, "{spoof:?}: {vars}");
        assert_eq!(vars["HTTPS"], Value::Null, "{spoof:?}: {vars}");
        assert_eq!(vars["REQUEST_SCHEME"], "http", "{spoof:?}: {vars}");
        assert_eq!(vars["SERVER_PORT"], port.as_str(), "{spoof:?}: {vars}");
        assert!(
            vars["REMOTE_PORT"].is_string(),
            "the peer's own port: {vars}"
        );
    }
    for line in server.wait_for_logs("access", 4) {
        assert_eq!(line["data"]["client_ip"], STRANGER, "{line}");
    }
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_the_balancer_cannot_spoof_past_it() {
    let server = start(&[]);
    // The client sent "X-Forwarded-For: 10.0.0.99" (an address in TRUSTED_PROXIES) itself; the
    // balancer appended the address it really came from. That one is not trusted: it is the client.
    let vars = server_vars(
        BALANCER,
        &server,
        &[("x-forwarded-for", "10.0.0.99, 198.51.100.23")],
    )
    .await;
    assert_eq!(vars["REMOTE_ADDR"], "198.51.100.23", "{vars}");
    // Junk in the list stops the walk at the last address known: the balancer's own word.
    let vars = server_vars(
        BALANCER,
        &server,
        &[("x-forwarded-for", "203.0.113.1, <script>, 198.51.100.24")],
    )
    .await;
    assert_eq!(vars["REMOTE_ADDR"], "198.51.100.24", "{vars}");
    let vars = server_vars(BALANCER, &server, &[("x-forwarded-for", "unknown")]).await;
    assert_eq!(
        vars["REMOTE_ADDR"], BALANCER,
        "nothing usable: the peer: {vars}"
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_counts_forwarded_clients_apart_and_strangers_as_one() {
    let server = start(&[("RATE_LIMIT", "2"), ("RATE_WINDOW", "3600")]);
    let status = |source: &'static str, forwarded_for: &'static str| {
        let server = &server;
        async move {
            get_from(
                source,
                server,
                "/index.php",
                &[("x-forwarded-for", forwarded_for)],
            )
            .await
            .status()
            .as_u16()
        }
    };
    let mut through_balancer = Vec::new();
    for client in ["203.0.113.1", "203.0.113.1", "203.0.113.1", "203.0.113.2"] {
        through_balancer.push(status(BALANCER, client).await);
    }
    assert_eq!(
        through_balancer,
        [200, 200, 429, 200],
        "each forwarded client has its own allowance"
    );
    // A stranger rotating spoofed addresses still spends one allowance: its own.
    let mut spoofed = Vec::new();
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        spoofed.push(status(STRANGER, client).await);
    }
    assert_eq!(spoofed, [200, 200, 429]);
    let refused: Vec<IpAddr> = server
        .wait_for_logs("access", 7)
        .iter()
        .filter(|line| line["data"]["status"] == 429)
        .map(|line| line["data"]["client_ip"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        refused,
        [
            "203.0.113.1".parse::<IpAddr>().unwrap(),
            STRANGER.parse().unwrap()
        ]
    );
    assert!(server.terminate().success());
}
