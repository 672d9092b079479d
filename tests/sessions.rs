//! Native PHP file sessions through the real binary, configured with PHP_INI_* variables: a login
//! flow, session_regenerate_id(), cookie parameters, one session's requests serialised by its
//! file lock, and no session crossing between many concurrent clients.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::process::{binary, Server};
use common::{json, Proto};
use http::{header, Request, Response};
use http_body_util::Full;

fn start(save_path: &Path) -> Server {
    Server::start(
        binary()
            .env("PHP_WORKERS", "2")
            .env("PHP_INI_SESSION__SAVE_PATH", save_path)
            .env("PHP_INI_SESSION__COOKIE_HTTPONLY", "1")
            .env("PHP_INI_SESSION__COOKIE_SAMESITE", "Lax"),
    )
}

async fn visit(server: &Server, query: &str, session: Option<&str>) -> Response<Bytes> {
    let mut request = Request::get(format!("/session.php?{query}"));
    if let Some(id) = session {
        request = request.header(header::COOKIE, format!("PHPSESSID={id}"));
    }
    common::send(
        server.addr,
        Proto::Http1,
        request.body(Full::default()).unwrap(),
    )
    .await
}

fn set_cookie(response: &Response<Bytes>) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("PHPSESSID="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_survives_across_requests_and_id_regeneration() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());

    let login = visit(&server, "action=login&user=alice", None).await;
    let cookie = set_cookie(&login).expect("a session cookie");
    assert!(cookie.contains("path=/"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly"),
        "PHP_INI_SESSION__COOKIE_HTTPONLY applies: {cookie}"
    );
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let id = json(&login)["id"].as_str().unwrap().to_string();
    assert_eq!(json(&login)["save_path"], dir.path().to_str().unwrap());
    assert!(
        dir.path().join(format!("sess_{id}")).exists(),
        "a session file in the configured path"
    );

    let whoami = visit(&server, "action=whoami", Some(&id)).await;
    assert_eq!(json(&whoami)["user"], "alice");

    let regenerated = visit(&server, "action=regenerate", Some(&id)).await;
    let new_id = json(&regenerated)["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    assert_eq!(json(&regenerated)["old_id"], id.as_str());
    assert!(set_cookie(&regenerated)
        .unwrap()
        .starts_with(&format!("PHPSESSID={new_id}")));
    assert_eq!(
        json(&visit(&server, "action=whoami", Some(&new_id)).await)["user"],
        "alice"
    );
    assert_eq!(
        json(&visit(&server, "action=whoami", Some(&id)).await)["user"],
        serde_json::Value::Null,
        "the old id is gone"
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_one_session_are_serialised() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let id = json(&visit(&server, "action=login&user=bob", None).await)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = server.addr;
    let requests: Vec<_> = (0..2)
        .map(|_| {
            let id = id.clone();
            tokio::spawn(async move {
                let request = Request::get("/session.php?action=increment&ms=400")
                    .header(header::COOKIE, format!("PHPSESSID={id}"))
                    .body(Full::default())
                    .unwrap();
                json(&common::send(addr, Proto::Http1, request).await)
            })
        })
        .collect();
    let mut runs = Vec::new();
    for request in requests {
        runs.push(request.await.unwrap());
    }
    let mut counts: Vec<_> = runs.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    counts.sort();
    assert_eq!(
        counts,
        [1, 2],
        "no lost update: the second saw the first's write"
    );
    runs.sort_by(|a, b| {
        a["start"]
            .as_f64()
            .partial_cmp(&b["start"].as_f64())
            .unwrap()
    });
    // The second script could only open the session once the first closed it.
    assert!(
        runs[1]["end"].as_f64().unwrap() - runs[0]["end"].as_f64().unwrap() >= 0.35,
        "{runs:?}"
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_never_cross_between_concurrent_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.addr;
    let clients: Vec<_> = (0..24)
        .map(|i| {
            tokio::spawn(async move {
                let user = format!("user-{i}");
                let get = |query: String, id: Option<String>| async move {
                    let mut request = Request::get(format!("/session.php?{query}"));
                    if let Some(id) = id {
                        request = request.header(header::COOKIE, format!("PHPSESSID={id}"));
                    }
                    json(
                        &common::send(addr, Proto::Http1, request.body(Full::default()).unwrap())
                            .await,
                    )
                };
                let login = get(format!("action=login&user={user}"), None).await;
                let id = login["id"].as_str().unwrap().to_string();
                for _ in 0..3 {
                    let me = get("action=whoami".into(), Some(id.clone())).await;
                    assert_eq!(
                        me["user"],
                        user.as_str(),
                        "client {i} sees only its own session"
                    );
                    assert_eq!(me["id"], id.as_str());
                }
                id
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for client in clients {
        assert!(
            ids.insert(client.await.unwrap()),
            "every client got its own session id"
        );
    }
    assert!(server.terminate().success());
}
