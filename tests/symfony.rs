//! Symfony 5.4, as Debian packages it, served by the `tokio_php` binary: the application in
//! tests/fixtures/symfony (MicroKernelTrait, Twig, forms with CSRF tokens and validation, PHP's
//! native sessions) driven over real HTTP in two modes:
//!
//! - **classic**: `public/index.php` boots the kernel (from its compiled cache) for every
//!   request, as under php-fpm;
//! - **worker**: `public/worker.php` (`WORKER_SCRIPT`) boots the kernel once per PHP thread and
//!   hands it request after request through `tokio_handle_request()`.
//!
//! Every scenario runs in both modes and proves the same things: routes with parameters,
//! Symfony's own error pages, a session cookie that carries a counter, a logged-in user kept
//! by a request-scoped service (`App\CurrentUser`) that never leaks to another client, forms
//! with CSRF tokens and validation errors (`422`), static state reset between requests, and a
//! JSON page. A last test sends one sequence of requests to both modes and expects the same
//! answers. The worker variants first check that the kernel really outlives a request, so they
//! cannot pass by running the classic front controller.
//!
//! Symfony comes from Debian's `php-symfony-*` and `php-twig` packages (loaded through their
//! autoload.php files under /usr/share/php), which `scripts/install-deps.sh` installs; without
//! them the tests fail saying so.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::browser::{body_text, content_type, form_body, scrape, CookieJar};
use common::process::{binary, Server};
use common::Proto;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

/// The Debian packages the application loads, each with the autoload.php it installs.
const PACKAGES: [(&str, &str); 6] = [
    (
        "php-symfony-framework-bundle",
        "Symfony/Bundle/FrameworkBundle/autoload.php",
    ),
    (
        "php-symfony-twig-bundle",
        "Symfony/Bundle/TwigBundle/autoload.php",
    ),
    ("php-twig", "Twig/autoload.php"),
    ("php-symfony-form", "Symfony/Component/Form/autoload.php"),
    (
        "php-symfony-security-csrf",
        "Symfony/Component/Security/Csrf/autoload.php",
    ),
    (
        "php-symfony-validator",
        "Symfony/Component/Validator/autoload.php",
    ),
];

const CSRF_ERROR: &str = "The CSRF token is invalid. Please try to resubmit the form.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `public/index.php` per request.
    Classic,
    /// `public/worker.php` once per PHP thread (`WORKER_SCRIPT`, `WORKER_MATCH=*`).
    Worker,
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/symfony")
}

/// Panics, naming the packages and the script that installs them, unless Debian's Symfony is
/// installed: a missing peer is a failure, never a skip.
fn require_symfony() {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, autoload)| !Path::new("/usr/share/php").join(autoload).is_file())
        .map(|(package, _)| *package)
        .collect();
    assert!(
        missing.is_empty(),
        "Symfony 5.4 is not installed (no autoload.php under /usr/share/php for {}): \
         scripts/install-deps.sh installs it (Debian packages {})",
        missing.join(", "),
        PACKAGES.map(|(package, _)| package).join(" "),
    );
}

/// The server running the application, with its own writable directory for Symfony's cache,
/// logs and PHP's session files.
struct App {
    server: Server,
    mode: Mode,
    var_dir: tempfile::TempDir,
}

impl App {
    async fn start(mode: Mode) -> App {
        require_symfony();
        let var_dir = tempfile::Builder::new()
            .prefix("tokio_php-symfony.")
            .tempdir()
            .unwrap();
        let sessions = var_dir.path().join("sessions");
        std::fs::create_dir(&sessions).unwrap();
        let mut command = binary();
        command
            .env("DOCUMENT_ROOT", fixture().join("public"))
            // INDEX_FILE rather than TRY_FILES='$uri $uri/ /index.php?$args': every URL that is
            // not a static file goes to index.php (query string included), and no other script
            // in public/ is reachable, so worker.php cannot be run as a page. It is the
            // Symfony recipe's `try_files $uri /index.php$is_args$args` with index.php internal.
            .env("INDEX_FILE", "index.php")
            .env("TOKIO_PHP_SYMFONY_VAR_DIR", var_dir.path())
            .env("PHP_INI_SESSION__SAVE_PATH", &sessions)
            // Two threads: in worker mode, successive requests land on both kernels.
            .env("PHP_WORKERS", "2");
        if mode == Mode::Worker {
            command
                .env("WORKER_SCRIPT", fixture().join("public/worker.php"))
                .env("WORKER_MATCH", "*");
        }
        let app = App {
            server: Server::start(&mut command),
            mode,
            var_dir,
        };
        app.check_kernel_lifetime().await;
        app
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn client(&self) -> Client<'_> {
        Client {
            app: self,
            cookies: CookieJar::default(),
        }
    }

    /// Classic: a kernel per request, so each has handled exactly one. Worker: two kernels
    /// (one per thread) serve four requests, so one of them answers having handled more.
    async fn check_kernel_lifetime(&self) {
        let mut client = self.client();
        let mut handled = Vec::new();
        for _ in 0..4 {
            let response = client.get("/kernel").await;
            self.check(&response, StatusCode::OK, "handled", "GET /kernel");
            handled.push(common::json(&response)["handled"].as_i64().unwrap());
        }
        match self.mode {
            Mode::Classic => assert_eq!(
                handled,
                [1, 1, 1, 1],
                "index.php boots a fresh kernel for every request"
            ),
            Mode::Worker => assert!(
                handled.iter().any(|&n| n > 1),
                "worker.php keeps its kernel, but every request met a fresh one ({handled:?}): \
                 is WORKER_SCRIPT in effect?"
            ),
        }
    }

    /// Asserts the status and that the body contains `needle`; the failure message shows the
    /// response, Symfony's log and the server's error log.
    fn check(&self, response: &Response<Bytes>, status: StatusCode, needle: &str, what: &str) {
        let body = body_text(response);
        if response.status() == status && body.contains(needle) {
            return;
        }
        let symfony_log =
            std::fs::read_to_string(self.var_dir.path().join("log/prod.log")).unwrap_or_default();
        let errors: Vec<String> = self
            .server
            .wait_for_logs("error", 0)
            .iter()
            .map(|line| line.to_string())
            .collect();
        panic!(
            "{:?} mode, {what}: expected {status} with {needle:?}, got {}\nheaders: {:?}\n\
             body starts: {}\nSymfony's log:\n{symfony_log}\nserver error log:\n{}",
            self.mode,
            response.status(),
            response.headers(),
            body.chars().take(2000).collect::<String>(),
            errors.join("\n")
        );
    }
}

/// A client with a cookie jar, as a browser keeps one per site.
struct Client<'a> {
    app: &'a App,
    cookies: CookieJar,
}

impl Client<'_> {
    async fn get(&mut self, path: &str) -> Response<Bytes> {
        self.request(Method::GET, path, Vec::new(), Proto::Http1)
            .await
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Response<Bytes> {
        self.request(Method::POST, path, form_body(fields), Proto::Http1)
            .await
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        proto: Proto,
    ) -> Response<Bytes> {
        let mut request = Request::builder().method(method.clone()).uri(path);
        if method == Method::POST {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if let Some(cookie) = self.cookies.header() {
            request = request.header(header::COOKIE, cookie);
        }
        let response = common::send(
            self.app.addr(),
            proto,
            request.body(Full::new(Bytes::from(body))).unwrap(),
        )
        .await;
        self.cookies.store(&response);
        response
    }

    /// `GET /whoami`: the current user's name, or "anonymous".
    async fn whoami(&mut self) -> String {
        let response = self.get("/whoami").await;
        self.app.check(&response, StatusCode::OK, "", "GET /whoami");
        body_text(&response).trim().to_string()
    }

    async fn login(&mut self, user: &str) {
        let response = self.post_form("/login", &[("user", user)]).await;
        self.app.check(
            &response,
            StatusCode::OK,
            &format!("logged in as {user}"),
            "POST /login",
        );
        assert!(
            self.cookies.contains("PHPSESSID"),
            "login sets the session cookie: {:?}",
            response.headers().get_all(header::SET_COOKIE)
        );
    }

    /// `GET /form`, returning the CSRF token of the form it renders.
    async fn form_token(&mut self) -> String {
        let response = self.get("/form").await;
        self.app.check(
            &response,
            StatusCode::OK,
            "name=\"contact[name]\"",
            "GET /form",
        );
        scrape(
            &body_text(&response),
            r#"name="contact\[_token\]" value="([^"]+)""#,
            "CSRF token",
        )
    }
}

/// The visit counter `/session` shows.
fn visits(response: &Response<Bytes>) -> u32 {
    scrape(
        &body_text(response),
        r#"id="visits">(\d+)<"#,
        "visit counter",
    )
    .parse()
    .unwrap()
}

// Each scenario is an async fn taking the mode; `both_modes!` makes a test of it per mode:
// `classic::hello_page_and_error_pages`, `worker::hello_page_and_error_pages`, …
macro_rules! both_modes {
    ($($scenario:ident),* $(,)?) => {
        mod classic {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Mode::Classic).await
                }
            )*
        }
        mod worker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Mode::Worker).await
                }
            )*
        }
    };
}

both_modes!(
    hello_page_and_error_pages,
    session_counter_is_per_client,
    logged_in_user_never_leaks_to_another_client,
    concurrent_clients_see_only_their_own_user,
    form_validates_and_checks_the_csrf_token,
    static_state_is_reset_for_every_request,
    json_page,
);

async fn hello_page_and_error_pages(mode: Mode) {
    let app = App::start(mode).await;
    let mut client = app.client();
    for proto in common::BOTH {
        let response = client
            .request(Method::GET, "/hello/world", Vec::new(), proto)
            .await;
        app.check(
            &response,
            StatusCode::OK,
            "<h1>Hello world</h1>",
            &format!("GET /hello/world over {proto:?}"),
        );
        assert_eq!(content_type(&response), "text/html; charset=UTF-8");
        assert!(body_text(&response).contains("<title>Hello world</title>"));
    }
    // The route parameter is decoded (UTF-8) and Twig escapes it.
    let response = client.get("/hello/J%C3%BCrgen").await;
    app.check(
        &response,
        StatusCode::OK,
        "<h1>Hello Jürgen</h1>",
        "GET /hello/Jürgen",
    );
    let response = client.get("/hello/%3Cb%3Ebold").await;
    app.check(
        &response,
        StatusCode::OK,
        "<h1>Hello &lt;b&gt;bold</h1>",
        "GET /hello/<b>bold",
    );
    // Symfony's own error pages (prod: no details), reached through index.php.
    let response = client.get("/no/such/page").await;
    app.check(
        &response,
        StatusCode::NOT_FOUND,
        "The server returned a \"404 Not Found\".",
        "GET /no/such/page",
    );
    let response = client.post_form("/hello/world", &[]).await;
    app.check(
        &response,
        StatusCode::METHOD_NOT_ALLOWED,
        "The server returned a \"405 Method Not Allowed\".",
        "POST /hello/world",
    );
    // index.php is the only script: worker.php cannot be run as a page.
    let response = client.get("/worker.php").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

async fn session_counter_is_per_client(mode: Mode) {
    let app = App::start(mode).await;
    let mut first = app.client();
    for expected in 1..=3 {
        let response = first.get("/session").await;
        app.check(&response, StatusCode::OK, "id=\"visits\"", "GET /session");
        assert_eq!(visits(&response), expected, "{mode:?}: the first client");
        if expected == 1 {
            // Symfony's own session cookie, with the attributes of framework.session.
            let cookie = response
                .headers()
                .get(header::SET_COOKIE)
                .expect("a session cookie")
                .to_str()
                .unwrap()
                .to_ascii_lowercase();
            assert!(cookie.starts_with("phpsessid="), "{cookie}");
            assert!(cookie.contains("; httponly"), "{cookie}");
            assert!(cookie.contains("; samesite=lax"), "{cookie}");
        }
    }
    // PHP's own file handler, in the directory PHP_INI_SESSION__SAVE_PATH names.
    let file = format!("sess_{}", first.cookies.value("PHPSESSID"));
    assert!(
        app.var_dir.path().join("sessions").join(&file).is_file(),
        "{file} in the session directory"
    );
    let mut second = app.client();
    let response = second.get("/session").await;
    assert_eq!(
        visits(&response),
        1,
        "{mode:?}: a new client, a new session"
    );
    assert_ne!(
        first.cookies.value("PHPSESSID"),
        second.cookies.value("PHPSESSID")
    );
    assert_eq!(visits(&first.get("/session").await), 4);
    assert_eq!(visits(&second.get("/session").await), 2);
}

async fn logged_in_user_never_leaks_to_another_client(mode: Mode) {
    let app = App::start(mode).await;
    let mut alice = app.client();
    let mut other = app.client();
    alice.login("alice").await;
    assert_eq!(other.whoami().await, "anonymous");
    assert_eq!(alice.whoami().await, "alice");
    // Back and forth, so that in worker mode each kernel serves one client right after the
    // other.
    for round in 0..6 {
        assert_eq!(other.whoami().await, "anonymous", "{mode:?}, round {round}");
        assert_eq!(alice.whoami().await, "alice", "{mode:?}, round {round}");
        assert_eq!(alice.whoami().await, "alice", "{mode:?}, round {round}");
        assert_eq!(other.whoami().await, "anonymous", "{mode:?}, round {round}");
    }
    let mut bob = other;
    bob.login("bob").await;
    for round in 0..6 {
        assert_eq!(alice.whoami().await, "alice", "{mode:?}, round {round}");
        assert_eq!(bob.whoami().await, "bob", "{mode:?}, round {round}");
    }
    assert_eq!(app.client().whoami().await, "anonymous");
}

async fn concurrent_clients_see_only_their_own_user(mode: Mode) {
    let app = std::sync::Arc::new(App::start(mode).await);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut client = app.client();
                let user = format!("user-{i}");
                // Half the clients log in, the others stay anonymous.
                let expected = if i % 2 == 0 {
                    client.login(&user).await;
                    user
                } else {
                    "anonymous".to_string()
                };
                for _ in 0..5 {
                    assert_eq!(client.whoami().await, expected, "{mode:?}");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}

async fn form_validates_and_checks_the_csrf_token(mode: Mode) {
    let app = App::start(mode).await;
    let mut client = app.client();
    let token = client.form_token().await;
    assert!(
        client.cookies.contains("PHPSESSID"),
        "the CSRF token lives in the session"
    );

    let response = client
        .post_form(
            "/form",
            &[
                ("contact[name]", "Alice"),
                ("contact[email]", "alice@example.com"),
                ("contact[_token]", &token),
            ],
        )
        .await;
    app.check(
        &response,
        StatusCode::OK,
        "Thanks, Alice &lt;alice@example.com&gt;",
        "POST /form (valid)",
    );

    let response = client
        .post_form(
            "/form",
            &[
                ("contact[name]", ""),
                ("contact[email]", "not-an-address"),
                ("contact[_token]", &token),
            ],
        )
        .await;
    app.check(
        &response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "This value should not be blank.",
        "POST /form (invalid)",
    );
    let page = body_text(&response);
    assert!(
        page.contains("This value is not a valid email address."),
        "{page}"
    );
    assert!(page.contains("value=\"not-an-address\""), "{page}");
    assert!(!page.contains(CSRF_ERROR), "{page}");
    assert!(!page.contains("Thanks"), "{page}");

    let valid = [
        ("contact[name]", "Alice"),
        ("contact[email]", "alice@example.com"),
    ];
    let without_token = client.post_form("/form", &valid).await;
    let mut fields = valid.to_vec();
    fields.push(("contact[_token]", "not-the-token"));
    let wrong_token = client.post_form("/form", &fields).await;
    // The right token from another session is wrong too.
    let mut fields = valid.to_vec();
    fields.push(("contact[_token]", &token));
    let other_session = app.client().post_form("/form", &fields).await;
    for (response, what) in [
        (without_token, "without a token"),
        (wrong_token, "with a wrong token"),
        (other_session, "with another session's token"),
    ] {
        app.check(
            &response,
            StatusCode::UNPROCESSABLE_ENTITY,
            CSRF_ERROR,
            &format!("POST /form {what}"),
        );
        assert!(!body_text(&response).contains("Thanks"));
    }
}

async fn static_state_is_reset_for_every_request(mode: Mode) {
    let app = App::start(mode).await;
    let mut client = app.client();
    for request in 0..10 {
        let response = client.get("/static").await;
        app.check(&response, StatusCode::OK, "static counter: ", "GET /static");
        assert_eq!(
            body_text(&response),
            "static counter: 1\n",
            "{mode:?}, request {request}: the previous request's count was reset"
        );
    }
}

async fn json_page(mode: Mode) {
    let app = App::start(mode).await;
    let response = app.client().get("/json").await;
    app.check(&response, StatusCode::OK, "symfony", "GET /json");
    assert_eq!(content_type(&response), "application/json");
    let json = common::json(&response);
    assert_eq!(json["framework"], "symfony");
    let version = json["version"].as_str().unwrap();
    assert!(version.starts_with("5.4."), "{json}");
    assert_eq!(json["message"], "Hello, World!");
}

/// One sequence of requests, sent to the classic front controller and to the worker: the
/// answers (status, content type and body) are the same. CSRF tokens and session cookies are
/// random, so tokens are blanked and cookies are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_answer_a_sequence_of_requests_alike() {
    let classic = App::start(Mode::Classic).await;
    let worker = App::start(Mode::Worker).await;
    let classic_answers = sequence(&classic).await;
    let worker_answers = sequence(&worker).await;
    assert_eq!(classic_answers.len(), worker_answers.len());
    for (classic, worker) in classic_answers.iter().zip(&worker_answers) {
        assert_eq!(classic, worker, "classic (left) and worker (right) differ");
    }
}

/// (request, status, content type, body with CSRF tokens blanked) for each request.
async fn sequence(app: &App) -> Vec<(String, u16, String, String)> {
    let tokens = regex::Regex::new(r#"name="contact\[_token\]" value="[^"]*""#).unwrap();
    let mut answers = Vec::new();
    let mut record = |what: String, response: Response<Bytes>| {
        let body = body_text(&response);
        let body = tokens.replace_all(&body, r#"name="contact[_token]" value="""#);
        answers.push((
            what,
            response.status().as_u16(),
            content_type(&response),
            body.into_owned(),
        ));
    };
    let mut a = app.client();
    let mut b = app.client();
    for path in [
        "/hello/world",
        "/hello/J%C3%BCrgen",
        "/no/such/page",
        "/json",
    ] {
        record(format!("GET {path}"), a.get(path).await);
    }
    record(
        "POST /hello/world".into(),
        a.post_form("/hello/world", &[]).await,
    );
    for _ in 0..3 {
        record("A: GET /session".into(), a.get("/session").await);
    }
    record("B: GET /session".into(), b.get("/session").await);
    record(
        "A: POST /login".into(),
        a.post_form("/login", &[("user", "alice")]).await,
    );
    for _ in 0..3 {
        record("B: GET /whoami".into(), b.get("/whoami").await);
        record("A: GET /whoami".into(), a.get("/whoami").await);
    }
    record(
        "B: POST /login".into(),
        b.post_form("/login", &[("user", "bob")]).await,
    );
    for _ in 0..3 {
        record("A: GET /whoami".into(), a.get("/whoami").await);
        record("B: GET /whoami".into(), b.get("/whoami").await);
    }
    let form = a.get("/form").await;
    let token = scrape(
        &body_text(&form),
        r#"name="contact\[_token\]" value="([^"]+)""#,
        "CSRF token",
    );
    record("A: GET /form".into(), form);
    for (what, name, email, token) in [
        ("valid", "Alice", "alice@example.com", token.as_str()),
        ("invalid", "", "not-an-address", token.as_str()),
        ("wrong token", "Alice", "alice@example.com", "not-the-token"),
    ] {
        let response = a
            .post_form(
                "/form",
                &[
                    ("contact[name]", name),
                    ("contact[email]", email),
                    ("contact[_token]", token),
                ],
            )
            .await;
        record(format!("A: POST /form ({what})"), response);
    }
    for _ in 0..3 {
        record("GET /static".into(), b.get("/static").await);
    }
    answers
}
