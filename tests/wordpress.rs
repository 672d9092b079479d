//! WordPress, a real application, served by the `tokio_php` binary behind a front controller
//! (`TRY_FILES="$uri $uri/ /index.php?$args"`, nginx's vocabulary) on a private MariaDB.
//!
//! Debian's own WordPress 6.1 and its default theme (twentytwentythree) are fetched with
//! `scripts/fetch-debian-app.sh` (`apt-get download` + `dpkg -x`, never installed) and copied
//! into a temporary document root with our own `wp-config.php`. The test then drives WordPress
//! over real HTTP as a browser and a visitor would, and so proves that:
//!
//! - the web installer runs and WordPress's own loopback request to the site (the pretty
//!   permalink probe) is answered while the installer's request is still running;
//! - login works: `$_POST`, `Set-Cookie`/`Cookie` and `302` redirects behave as under php-fpm;
//! - an admin form round trip with nonces and `_wp_http_referer` saves pretty permalinks
//!   (`/%postname%/`, without the `/index.php/` prefix WordPress adds when it thinks the server
//!   cannot rewrite URLs);
//! - the REST API accepts cookie + nonce authentication and a JSON body (`201 Created`);
//! - a logged-out visitor gets the post at its pretty URL, in the REST API and in the RSS feed,
//!   the front page with links free of `/index.php`, and WordPress's own themed `404` page for a
//!   URL nothing exists at — so unknown paths reach `/index.php` with `REQUEST_URI` intact while
//!   real files (`wp-login.php`, `wp-admin/*.php`) run themselves.
//!
//! MariaDB (`mariadb-server`) is a test peer that `scripts/install-deps.sh` installs; without it
//! the test fails saying so.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::browser::{body_text, content_type, form_body, scrape, CookieJar};
use common::mariadb::MariaDb;
use common::process::{binary, Server};
use common::run_bounded;
use common::Proto;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

const PACKAGES: [&str; 2] = ["wordpress", "wordpress-theme-twentytwentythree"];
const THEME: &str = "twentytwentythree";
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "tokio-php-admin-password";
const POST_TITLE: &str = "Hello from tokio_php";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordpress_installs_logs_in_publishes_and_serves_pretty_permalinks() {
    let started = Instant::now();
    let [wordpress, theme] = fetch_packages();
    let root = tempfile::Builder::new()
        .prefix("tokio_php-wordpress.")
        .tempdir()
        .unwrap();
    // MariaDB starts while the files are copied (the copy is I/O-bound); a scoped thread is
    // joined, and its server dropped, even when the copy fails.
    let db = std::thread::scope(|scope| {
        let db = scope.spawn(MariaDb::start);
        copy_wordpress(&wordpress, &theme, root.path());
        db.join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    configure(root.path(), &db);
    let prepared = started.elapsed();

    let server = Server::start(
        binary()
            .env("DOCUMENT_ROOT", root.path())
            .env("TRY_FILES", "$uri $uri/ /index.php?$args"),
    );
    let site = Site {
        addr: server.addr,
        server: &server,
    };
    let base = format!("http://{}", server.addr);
    let mut admin = Browser::new(&site);

    // Not installed yet: the front controller sends everyone to the installer.
    let response = admin.get("/").await;
    site.check(&response, StatusCode::FOUND, "", "GET / before installing");
    let target = location(&response);
    assert!(
        target.ends_with("/wp-admin/install.php"),
        "GET / before installing redirects to the installer, not to {target:?}"
    );

    // The installer.
    let response = admin.get("/wp-admin/install.php").await;
    site.check(
        &response,
        StatusCode::OK,
        "name=\"weblog_title\"",
        "GET /wp-admin/install.php",
    );
    let response = admin
        .post_form(
            "/wp-admin/install.php?step=2",
            &[
                ("weblog_title", "tokio_php WordPress"),
                ("user_name", ADMIN_USER),
                ("admin_password", ADMIN_PASSWORD),
                ("admin_password2", ADMIN_PASSWORD),
                ("pw_weak", "1"),
                ("admin_email", "admin@example.com"),
                ("blog_public", "0"),
                ("language", ""),
                ("Submit", "Install WordPress"),
            ],
        )
        .await;
    site.check(
        &response,
        StatusCode::OK,
        "WordPress has been installed",
        "POST /wp-admin/install.php?step=2",
    );
    let installed = started.elapsed();

    // The installer probed the first post's pretty URL over HTTP (a second request while its own
    // was running) and kept pretty permalinks because the answer came from WordPress.
    let stored = db.sql_as_root(&format!(
        "SELECT option_name, option_value FROM `{}`.wp_options \
         WHERE option_name IN ('siteurl', 'home', 'permalink_structure') ORDER BY option_name",
        db.database
    ));
    let options: BTreeMap<&str, &str> = stored
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .collect();
    assert_eq!(options.get("siteurl"), Some(&base.as_str()), "{stored}");
    assert_eq!(options.get("home"), Some(&base.as_str()), "{stored}");
    assert_eq!(
        options.get("permalink_structure"),
        Some(&"/%year%/%monthnum%/%day%/%postname%/"),
        "the installer's loopback probe of a pretty permalink succeeded: {stored}"
    );

    // Login: the test cookie first, as a browser gets it from the login page.
    let response = admin.get("/wp-login.php").await;
    site.check(
        &response,
        StatusCode::OK,
        "name=\"log\"",
        "GET /wp-login.php",
    );
    assert!(
        admin.cookies.contains("wordpress_test_cookie"),
        "the login page sets wordpress_test_cookie: {:?}",
        response.headers().get_all(header::SET_COOKIE)
    );
    let response = admin
        .post_form(
            "/wp-login.php",
            &[
                ("log", ADMIN_USER),
                ("pwd", ADMIN_PASSWORD),
                ("rememberme", "forever"),
                ("wp-submit", "Log In"),
                ("redirect_to", &format!("{base}/wp-admin/")),
                ("testcookie", "1"),
            ],
        )
        .await;
    site.check(&response, StatusCode::FOUND, "", "POST /wp-login.php");
    assert_eq!(location(&response), format!("{base}/wp-admin/"));
    assert!(
        admin
            .cookies
            .names()
            .any(|name| name.starts_with("wordpress_logged_in_")),
        "login sets the auth cookies; the jar has {:?}",
        admin.cookies.names().collect::<Vec<_>>()
    );

    // The dashboard: `/wp-admin` is sent to its slash, `/wp-admin/` runs the directory's
    // index.php through the `$uri/` candidate.
    let response = admin.get("/wp-admin").await;
    site.check(
        &response,
        StatusCode::MOVED_PERMANENTLY,
        "",
        "GET /wp-admin",
    );
    assert_eq!(location(&response), "/wp-admin/");
    let response = admin.get("/wp-admin/").await;
    site.check(&response, StatusCode::OK, "Dashboard", "GET /wp-admin/");

    // Pretty permalinks through the real admin form.
    let response = admin.get("/wp-admin/options-permalink.php").await;
    site.check(
        &response,
        StatusCode::OK,
        "permalink_structure",
        "GET /wp-admin/options-permalink.php",
    );
    let page = body_text(&response);
    let nonce = scrape(&page, r#"name="_wpnonce" value="([^"]+)""#, "_wpnonce");
    let referer = scrape(
        &page,
        r#"name="_wp_http_referer" value="([^"]+)""#,
        "_wp_http_referer",
    );
    // The "Post name" choice as the form offers it: with an `/index.php` prefix unless WordPress
    // believes the server rewrites URLs (our must-use plugin says it does).
    let post_name = scrape(
        &page,
        r#"id="permalink-input-post-name"[^>]*?value="([^"]*)""#,
        "the Post name choice",
    );
    assert_eq!(
        post_name, "/%postname%/",
        "the permalink form offers Post name without an /index.php prefix"
    );
    let response = admin
        .post_form(
            "/wp-admin/options-permalink.php",
            &[
                ("_wpnonce", &nonce),
                ("_wp_http_referer", &referer),
                ("selection", &post_name),
                // What the form's script copies from the chosen radio button.
                ("permalink_structure", &post_name),
                ("category_base", ""),
                ("tag_base", ""),
                ("submit", "Save Changes"),
            ],
        )
        .await;
    site.check(
        &response,
        StatusCode::FOUND,
        "",
        "POST /wp-admin/options-permalink.php",
    );
    let saved = location(&response);
    assert!(
        saved.contains("options-permalink.php?settings-updated=true"),
        "saving permalinks redirects back with settings-updated, not to {saved:?}"
    );
    let response = admin
        .get("/wp-admin/options-permalink.php?settings-updated=true")
        .await;
    site.check(
        &response,
        StatusCode::OK,
        "Permalink structure updated",
        "GET /wp-admin/options-permalink.php?settings-updated=true",
    );
    let structure = db
        .sql_as_root(&format!(
            "SELECT option_value FROM `{}`.wp_options WHERE option_name = 'permalink_structure'",
            db.database
        ))
        .trim()
        .to_string();
    assert_eq!(
        structure, "/%postname%/",
        "pretty permalinks without an /index.php prefix"
    );

    // A REST nonce for the logged-in user, then a post through the REST API.
    let response = admin
        .get("/wp-admin/admin-ajax.php?action=rest-nonce")
        .await;
    site.check(
        &response,
        StatusCode::OK,
        "",
        "GET /wp-admin/admin-ajax.php?action=rest-nonce",
    );
    let rest_nonce = body_text(&response).trim().to_string();
    assert!(
        !rest_nonce.is_empty() && rest_nonce.chars().all(|c| c.is_ascii_hexdigit()),
        "admin-ajax.php?action=rest-nonce answers a nonce, not {rest_nonce:?}"
    );
    let post = serde_json::json!({
        "title": POST_TITLE,
        "content": "<!-- wp:paragraph --><p>Served in-process by tokio_php.</p><!-- /wp:paragraph -->",
        "status": "publish",
    });
    let response = admin
        .request(
            Method::POST,
            "/wp-json/wp/v2/posts",
            &[
                ("content-type", "application/json"),
                ("x-wp-nonce", &rest_nonce),
            ],
            serde_json::to_vec(&post).unwrap(),
        )
        .await;
    site.check(
        &response,
        StatusCode::CREATED,
        "\"slug\"",
        "POST /wp-json/wp/v2/posts",
    );
    let created = common::json(&response);
    let slug = created["slug"].as_str().expect("a slug").to_string();
    assert_eq!(slug, "hello-from-tokio_php", "{created}");
    assert_eq!(created["status"], "publish", "{created}");
    assert_eq!(
        created["link"].as_str(),
        Some(format!("{base}/{slug}/").as_str()),
        "the post's link is a pretty permalink"
    );
    let published = started.elapsed();

    // A logged-out visitor.
    let mut visitor = Browser::new(&site);
    let response = visitor.get(&format!("/{slug}/")).await;
    site.check(
        &response,
        StatusCode::OK,
        POST_TITLE,
        &format!("GET /{slug}/"),
    );
    site.check(
        &response,
        StatusCode::OK,
        "Served in-process by tokio_php.",
        &format!("GET /{slug}/"),
    );

    let response = visitor.get("/wp-json/wp/v2/posts").await;
    site.check(
        &response,
        StatusCode::OK,
        POST_TITLE,
        "GET /wp-json/wp/v2/posts",
    );
    let posts = common::json(&response);
    assert!(
        posts
            .as_array()
            .is_some_and(|posts| posts.iter().any(|p| p["slug"] == slug.as_str())),
        "the REST API lists the post: {posts}"
    );

    let response = visitor.get("/wp-json/").await;
    site.check(&response, StatusCode::OK, "\"home\"", "GET /wp-json/");
    let index = common::json(&response);
    assert_eq!(index["url"].as_str(), Some(base.as_str()), "siteurl");
    assert_eq!(index["home"].as_str(), Some(base.as_str()), "home");

    let response = visitor.get("/feed/").await;
    site.check(&response, StatusCode::OK, "<rss", "GET /feed/");
    site.check(&response, StatusCode::OK, POST_TITLE, "GET /feed/");
    assert!(
        content_type(&response).starts_with("application/rss+xml"),
        "GET /feed/: Content-Type {:?}",
        content_type(&response)
    );

    let response = visitor.get("/").await;
    site.check(&response, StatusCode::OK, POST_TITLE, "GET /");
    let front = body_text(&response);
    assert!(
        front.contains(&format!("href=\"{base}/{slug}/\"")),
        "the front page links the post at its pretty URL; body starts: {}",
        body_start(&response)
    );
    assert!(
        !front.contains(&format!("{base}/index.php")),
        "no /index.php in the front page's links; body starts: {}",
        body_start(&response)
    );

    let response = visitor.get("/no-such-page-xyz/").await;
    site.check(
        &response,
        StatusCode::NOT_FOUND,
        "This page could not be found.",
        "GET /no-such-page-xyz/",
    );
    assert!(
        content_type(&response).starts_with("text/html"),
        "WordPress's own 404 page, not the server's: Content-Type {:?}",
        content_type(&response)
    );
    site.check(
        &response,
        StatusCode::NOT_FOUND,
        "wp-block-",
        "GET /no-such-page-xyz/ (the theme's markup)",
    );

    // A static file of the theme next to all that PHP.
    let response = visitor
        .get(&format!("/wp-content/themes/{THEME}/style.css"))
        .await;
    site.check(
        &response,
        StatusCode::OK,
        "Theme Name: Twenty Twenty-Three",
        "GET the theme's style.css",
    );

    let finished = started.elapsed();
    eprintln!(
        "wordpress: files and MariaDB ready after {prepared:?}, installed after {installed:?}, \
         post published after {published:?}, all checks done after {finished:?}"
    );
    drop(server);
    drop(db);
}

/// Runs scripts/fetch-debian-app.sh; returns the extracted trees in `PACKAGES` order.
fn fetch_packages() -> [PathBuf; 2] {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-debian-app.sh");
    // A first run downloads about 10 MB; later runs find the cache.
    let output = run_bounded(
        Command::new(&script).args(PACKAGES),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}",
        script.display(),
        PACKAGES.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let roots: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
    assert_eq!(
        roots.len(),
        PACKAGES.len(),
        "fetch-debian-app.sh prints one root per package: {stdout:?}"
    );
    [roots[0].clone(), roots[1].clone()]
}

/// The document root: WordPress core and the theme.
fn copy_wordpress(wordpress: &Path, theme: &Path, root: &Path) {
    let core = wordpress.join("usr/share/wordpress");
    assert!(
        core.join("wp-settings.php").is_file(),
        "{} has no WordPress in usr/share/wordpress",
        wordpress.display()
    );
    copy_tree(&core, root, wordpress);
    let theme_src = theme
        .join("usr/share/wordpress/wp-content/themes")
        .join(THEME);
    assert!(
        theme_src.join("style.css").is_file(),
        "{} has no {THEME} theme",
        theme.display()
    );
    copy_tree(
        &theme_src,
        &root.join("wp-content/themes").join(THEME),
        theme,
    );
    assert!(
        root.join("wp-includes/version.php").is_file() && root.join("index.php").is_file(),
        "WordPress core is in the document root"
    );
}

/// Our wp-config.php and a must-use plugin.
fn configure(root: &Path, db: &MariaDb) {
    // Debian's wp-config.php loads /etc/wordpress/config-<host>.php: ours replaces it.
    let socket = db.socket.to_str().unwrap();
    let salts: String = [
        "AUTH_KEY",
        "SECURE_AUTH_KEY",
        "LOGGED_IN_KEY",
        "NONCE_KEY",
        "AUTH_SALT",
        "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT",
        "NONCE_SALT",
    ]
    .iter()
    .map(|name| format!("define( '{name}', 'tokio_php test {name} fixed, not secret' );\n"))
    .collect();
    let config = format!(
        r#"<?php
// Written by tests/wordpress.rs.
define( 'DB_NAME', '{db_name}' );
define( 'DB_USER', '{db_user}' );
define( 'DB_PASSWORD', '{db_password}' );
define( 'DB_HOST', 'localhost:' . '{socket}' );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );

{salts}
$table_prefix = 'wp_';

define( 'WP_DEBUG', false );
define( 'DISABLE_WP_CRON', true );
define( 'WP_ENVIRONMENT_TYPE', 'local' );
// The test never reaches the internet (update checks, translations); requests to the site
// itself, like the installer's permalink probe, stay allowed.
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );

if ( ! defined( 'ABSPATH' ) ) {{
	define( 'ABSPATH', __DIR__ . '/' );
}}

require_once ABSPATH . 'wp-settings.php';
"#,
        db_name = db.database,
        db_user = db.user,
        db_password = db.password,
    );
    std::fs::write(root.join("wp-config.php"), config).unwrap();

    let mu_plugins = root.join("wp-content/mu-plugins");
    std::fs::create_dir_all(&mu_plugins).unwrap();
    std::fs::write(
        mu_plugins.join("tokio-php.php"),
        r#"<?php
/*
 * Plugin Name: tokio_php
 * Description: WordPress only believes Apache, nginx and IIS can rewrite URLs; tokio_php's
 *              TRY_FILES does, so pretty permalinks need no /index.php/ prefix.
 */
add_filter( 'got_url_rewrite', '__return_true' );
// No mail leaves a test (the installer mails the admin).
add_filter( 'pre_wp_mail', '__return_false' );
"#,
    )
    .unwrap();
}

/// Copies a package's tree. Symlinks are followed when their target is inside the extracted
/// package (copied as real files); the rest (into /etc, or into other packages such as
/// libjs-underscore and php-getid3) are dropped: none is needed to run WordPress.
fn copy_tree(src: &Path, dst: &Path, package_root: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&from, &to, package_root);
        } else if kind.is_file() {
            std::fs::copy(&from, &to).unwrap();
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).unwrap();
            if target.is_relative() {
                let resolved = normalize(&src.join(target));
                if resolved.starts_with(package_root) && resolved.is_file() {
                    std::fs::copy(&resolved, &to).unwrap();
                }
            }
        }
    }
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The server under test, for failure messages that include its error log.
struct Site<'a> {
    addr: SocketAddr,
    server: &'a Server,
}

impl Site<'_> {
    /// Asserts the status and that the body contains `needle`; the failure message shows the
    /// response and the server's error log lines.
    fn check(&self, response: &Response<Bytes>, status: StatusCode, needle: &str, what: &str) {
        let body = body_text(response);
        if response.status() == status && body.contains(needle) {
            return;
        }
        let errors: Vec<String> = self
            .server
            .wait_for_logs("error", 0)
            .iter()
            .map(|line| line.to_string())
            .collect();
        panic!(
            "{what}: expected {status} with {needle:?}, got {}\nheaders: {:?}\nbody starts: {}\n\
             server error log:\n{}",
            response.status(),
            response.headers(),
            body_start(response),
            errors.join("\n")
        );
    }
}

/// A client with a cookie jar, as a browser keeps one per site.
struct Browser {
    addr: SocketAddr,
    cookies: CookieJar,
}

impl Browser {
    fn new(site: &Site) -> Browser {
        Browser {
            addr: site.addr,
            cookies: CookieJar::default(),
        }
    }

    async fn get(&mut self, path: &str) -> Response<Bytes> {
        self.request(Method::GET, path, &[], Vec::new()).await
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Response<Bytes> {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            form_body(fields),
        )
        .await
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response<Bytes> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::USER_AGENT, "tokio_php-wordpress-test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(cookie) = self.cookies.header() {
            request = request.header(header::COOKIE, cookie);
        }
        let response = common::send(
            self.addr,
            Proto::Http1,
            request.body(Full::new(Bytes::from(body))).unwrap(),
        )
        .await;
        self.cookies.store(&response);
        response
    }
}

fn body_start(response: &Response<Bytes>) -> String {
    body_text(response).chars().take(1500).collect()
}

fn location(response: &Response<Bytes>) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}
