//! Where one request goes: nginx's `try_files` and `index` semantics over a [`DocumentRoot`],
//! with php-fpm's location for `*.php` paths in front of them.

use std::io;
use std::path::PathBuf;

use http::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::rule::{Candidate, Fallback, TryFilesRule, Vars};
use crate::http::{
    decode_segments, join_url_path, split_segments, DocumentRoot, Resolution, Script, INDEX_SCRIPT,
};

/// Files a directory is served by, in order (nginx's `index index.php index.html`):
/// [`INDEX_SCRIPT`], then this page.
const INDEX_PAGE: &str = "index.html";

/// What decides where requests go.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// Candidates and a fallback (`TRY_FILES`; without one, [`TryFilesRule::files_only`]).
    Rule(TryFilesRule),
    /// `INDEX_FILE`: static files, else this script; no other script is reachable.
    FrontController(Script),
}

/// Where one request goes.
#[derive(Debug, PartialEq)]
pub(crate) enum Route {
    /// Run this script.
    Script(Script),
    /// Serve this file (its real path).
    Static(PathBuf),
    /// `301` to this location: a directory asked for without its trailing slash.
    Redirect(String),
    /// Answer with this status.
    Status(StatusCode),
}

/// Characters escaped when a decoded path goes back into a `Location` header.
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Routes the request with this (percent-encoded) path and raw query string.
pub(crate) fn route(root: &DocumentRoot, mode: &Mode, path: &str, query: &str) -> Route {
    let Some(segments) = decode_segments(path) else {
        return Route::Status(StatusCode::FORBIDDEN);
    };
    if is_hidden(&segments) || segments.last().is_some_and(|name| looks_like_source(name)) {
        return Route::Status(StatusCode::NOT_FOUND);
    }
    match mode {
        Mode::FrontController(front) => front_controller(root, front, &segments, path),
        // A path naming a script runs it, whatever the rule: nginx's `location ~ \.php(/|$)`
        // with `fastcgi_split_path_info` takes such requests before `location /`.
        Mode::Rule(_) if names_script(&segments) => script_at(root, &segments, None),
        Mode::Rule(rule) => {
            let uri = normalised_uri(path, &segments);
            let vars = Vars {
                uri: &uri,
                args: query,
            };
            rule.candidates
                .iter()
                .find_map(|candidate| try_candidate(root, candidate, vars, path))
                .unwrap_or_else(|| fallback(root, &rule.fallback, vars))
        }
    }
}

/// Checks at startup that a rule's fallback can be served: a fixed fallback must exist inside
/// the root (one built from `$uri` can only be checked per request).
pub(super) fn check_fallback(root: &DocumentRoot, rule: &TryFilesRule) -> io::Result<()> {
    let Fallback::Uri(template) = &rule.fallback else {
        return Ok(());
    };
    if template.path_uses_uri() {
        return Ok(());
    }
    let expanded = template.expand(Vars { uri: "/", args: "" });
    let path = expanded.split('?').next().unwrap_or_default();
    let refused = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{path} {why}"));
    let Some(segments) = split_segments(path).filter(|s| !is_hidden(s)) else {
        return Err(refused("is not a path inside the document root"));
    };
    match fallback_target(root, &segments, path, "") {
        Route::Script(_) | Route::Static(_) => Ok(()),
        _ if root.path().join(segments.join("/")).symlink_metadata().is_ok() => Err(refused(
            "cannot be served: it leads outside the document root, or is a directory without index.php or index.html",
        )),
        _ => Err(refused("does not exist in the document root")),
    }
}

fn front_controller(
    root: &DocumentRoot,
    front: &Script,
    segments: &[String],
    request_path: &str,
) -> Route {
    let path = join_url_path(segments);
    let direct = path == front.script_name
        || path
            .strip_prefix(front.script_name.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
    if direct {
        return Route::Status(StatusCode::NOT_FOUND);
    }
    // `file/` names no file (nginx's `$uri` test fails with ENOTDIR), so the script runs.
    let names_file = !request_path.ends_with('/');
    if names_file && !names_script(segments) {
        if let Some(file) = existing_file(root, segments) {
            return Route::Static(file);
        }
    }
    Route::Script(front.clone())
}

/// The script a `*.php` path names, with the rest of the path as `PATH_INFO`.
fn script_at(root: &DocumentRoot, segments: &[String], query: Option<&str>) -> Route {
    match root.resolve_segments(segments) {
        Resolution::Script(script) => Route::Script(Script {
            query_string: query.map(str::to_string),
            ..script
        }),
        Resolution::NotFound => Route::Status(StatusCode::NOT_FOUND),
        Resolution::Forbidden => Route::Status(StatusCode::FORBIDDEN),
    }
}

fn try_candidate(
    root: &DocumentRoot,
    candidate: &Candidate,
    vars: Vars<'_>,
    request_path: &str,
) -> Option<Route> {
    let expanded = candidate.template.expand(vars);
    let segments = split_segments(&expanded).filter(|s| !is_hidden(s))?;
    let (real, meta) = root.confined(&segments)?;
    if !candidate.directory {
        // `$uri` never names a directory, and a file asked for as `file/` does not exist.
        return (meta.is_file() && !expanded.ends_with('/'))
            .then(|| file_route(root, &segments, real, None));
    }
    if !meta.is_dir() {
        return None;
    }
    // nginx strips the candidate's own slash; what remains must end in `/` to be an index
    // request, or the client is sent to the slashed URL first.
    let dir_uri = &expanded[..expanded.len() - 1];
    if !dir_uri.ends_with('/') {
        return Some(Route::Redirect(slashed_location(
            dir_uri,
            vars,
            request_path,
        )));
    }
    Some(directory_index(root, &segments, None))
}

/// The fallback's internal redirect (or status).
fn fallback(root: &DocumentRoot, fallback: &Fallback, vars: Vars<'_>) -> Route {
    let template = match fallback {
        Fallback::Status(status) => return Route::Status(*status),
        Fallback::Uri(template) => template,
    };
    let expanded = template.expand(vars);
    // As nginx: the fallback's query string replaces the request's (none if it has no `?`).
    let (path, args) = expanded.split_once('?').unwrap_or((&expanded, ""));
    match split_segments(path).filter(|s| !is_hidden(s)) {
        Some(segments) => fallback_target(root, &segments, path, args),
        None => Route::Status(StatusCode::NOT_FOUND),
    }
}

fn fallback_target(root: &DocumentRoot, segments: &[String], path: &str, args: &str) -> Route {
    if names_script(segments) {
        return script_at(root, segments, Some(args));
    }
    match root.confined(segments) {
        Some((real, meta)) if meta.is_file() => file_route(root, segments, real, Some(args)),
        Some((_, meta)) if meta.is_dir() && path.ends_with('/') => {
            directory_index(root, segments, Some(args))
        }
        _ => Route::Status(StatusCode::NOT_FOUND),
    }
}

/// A directory's `index.php` (run), else its `index.html` (served), else `403` as nginx.
fn directory_index(root: &DocumentRoot, dir: &[String], query: Option<&str>) -> Route {
    let with = |name: &str| {
        let mut segments = dir.to_vec();
        segments.push(name.to_string());
        segments
    };
    let script = with(INDEX_SCRIPT);
    if let Some((real, meta)) = root.confined(&script) {
        if meta.is_file() {
            return file_route(root, &script, real, query);
        }
    }
    match existing_file(root, &with(INDEX_PAGE)) {
        Some(page) => Route::Static(page),
        None => Route::Status(StatusCode::FORBIDDEN),
    }
}

/// A found file: a script runs, anything else is served. A script keeps the path it was found
/// at, as nginx's `$document_root$fastcgi_script_name` gives `SCRIPT_FILENAME`.
fn file_route(
    root: &DocumentRoot,
    segments: &[String],
    real: PathBuf,
    query: Option<&str>,
) -> Route {
    if !segments.last().is_some_and(|name| name.ends_with(".php")) {
        return Route::Static(real);
    }
    Route::Script(Script {
        script_name: join_url_path(segments),
        filename: root.path().join(segments.join("/")),
        path_info: String::new(),
        query_string: query.map(str::to_string),
    })
}

fn existing_file(root: &DocumentRoot, segments: &[String]) -> Option<PathBuf> {
    root.confined(segments)
        .filter(|(_, meta)| meta.is_file())
        .map(|(real, _)| real)
}

/// nginx's `$uri`: the decoded path with `.` segments and repeated slashes removed, keeping a
/// trailing slash.
fn normalised_uri(raw_path: &str, segments: &[String]) -> String {
    let mut uri = join_url_path(segments);
    let trailing_slash = raw_path.ends_with('/') || raw_path.to_ascii_lowercase().ends_with("%2f");
    if trailing_slash && !segments.is_empty() {
        uri.push('/');
    }
    uri
}

/// Where a directory asked for without its slash is found: the request's own spelling when the
/// candidate was `$uri/`, otherwise the candidate's path, escaped. The query string is kept.
fn slashed_location(dir_uri: &str, vars: Vars<'_>, request_path: &str) -> String {
    let mut location = if dir_uri == vars.uri {
        request_path.to_string()
    } else {
        utf8_percent_encode(dir_uri, PATH_ESCAPES).to_string()
    };
    // `//host/` would be protocol-relative: a redirect to another site.
    while location.starts_with("//") {
        location.remove(0);
    }
    location.push('/');
    if !vars.args.is_empty() {
        location.push('?');
        location.push_str(vars.args);
    }
    location
}

/// Dot-segments (`/.env`, `/.git/config`, `/app/.htaccess`) are never served or run; only
/// `/.well-known/` is public.
pub(crate) fn is_hidden(segments: &[String]) -> bool {
    segments
        .iter()
        .enumerate()
        .any(|(i, s)| s.starts_with('.') && !(i == 0 && s == ".well-known"))
}

/// Names that hold PHP source or an editor's or deploy's copy of it (`x.php.bak`, `x.php~`,
/// `.x.php.swp`, `config.inc`, `page.phtml`): never served as files, whatever the rule, since
/// they would disclose code and credentials. php-fpm setups deny them with an nginx `location`.
pub(crate) fn looks_like_source(name: &str) -> bool {
    const SOURCE_AND_BACKUP_EXTENSIONS: [&str; 21] = [
        "bak", "backup", "old", "orig", "save", "sav", "swp", "swo", "swn", "tmp", "rej", "inc",
        "phtml", "phps", "php3", "php4", "php5", "php7", "php8", "pht", "phar",
    ];
    let lower = name.to_ascii_lowercase();
    let extension = lower.rsplit_once('.').map_or("", |(_, ext)| ext);
    lower.ends_with('~')
        || (lower.starts_with('#') && lower.ends_with('#'))
        || lower.contains(".php.")
        || SOURCE_AND_BACKUP_EXTENSIONS.contains(&extension)
}

fn names_script(segments: &[String]) -> bool {
    segments.iter().any(|s| s.ends_with(".php"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document root with scripts, static files and directories of every kind.
    fn fixture() -> (tempfile::TempDir, DocumentRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        for sub in ["css", "app", "docs", "empty", ".git", ".well-known", "blog"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for file in [
            "index.php",
            "other.php",
            "about.html",
            "css/site.css",
            "app/index.php",
            "docs/index.html",
            ".env",
            ".git/config",
            ".well-known/security.txt",
            "other.php.bak",
            "other.php~",
            "#other.php#",
            ".other.php.swp",
            "app/config.INC",
            "page.phtml",
            "other.php.save",
            "other.php.orig",
        ] {
            std::fs::write(root.join(file), "x").unwrap();
        }
        std::fs::write(dir.path().join("secret.txt"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
        let root = DocumentRoot::new(&root).unwrap();
        (dir, root)
    }

    fn rule_mode(text: &str) -> Mode {
        Mode::Rule(text.parse().unwrap())
    }

    fn script(route: Route) -> Script {
        match route {
            Route::Script(script) => script,
            other => panic!("expected a script, got {other:?}"),
        }
    }

    fn static_name(route: Route) -> String {
        match route {
            Route::Static(path) => path.file_name().unwrap().to_string_lossy().into_owned(),
            other => panic!("expected a static file, got {other:?}"),
        }
    }

    #[test]
    fn the_wordpress_rule_routes_as_nginx() {
        let (_dir, root) = fixture();
        let mode = rule_mode("$uri $uri/ /index.php?$args");
        let go = |path: &str, query: &str| route(&root, &mode, path, query);

        let front = script(go("/", "a=1"));
        assert_eq!(front.script_name, "/index.php", "/ runs the root index");
        assert_eq!(front.path_info, "");
        assert_eq!(
            front.query_string, None,
            "an index keeps the request's query"
        );

        let rewritten = script(go("/some/route", "x=1&y=2"));
        assert_eq!(rewritten.script_name, "/index.php");
        assert_eq!(rewritten.path_info, "", "no PATH_INFO on a rewrite");
        assert_eq!(rewritten.query_string.as_deref(), Some("x=1&y=2"));

        assert_eq!(script(go("/other.php", "")).script_name, "/other.php");
        assert_eq!(script(go("/index.php", "")).script_name, "/index.php");
        let with_info = script(go("/other.php/extra/path", ""));
        assert_eq!(
            (with_info.script_name.as_str(), with_info.path_info.as_str()),
            ("/other.php", "/extra/path")
        );
        assert_eq!(go("/missing.php", ""), Route::Status(StatusCode::NOT_FOUND));

        assert_eq!(static_name(go("/css/site.css", "")), "site.css");
        let index = script(go("/app/", ""));
        assert_eq!(index.script_name, "/app/index.php");
        assert_eq!(index.filename, root.path().join("app/index.php"));
        assert_eq!(static_name(go("/docs/", "")), "index.html");
        assert_eq!(go("/app", "k=v"), Route::Redirect("/app/?k=v".into()));
        assert_eq!(go("/empty/", ""), Route::Status(StatusCode::FORBIDDEN));
        assert_eq!(
            script(go("/css/missing.css", "")).script_name,
            "/index.php",
            "a missing file goes to the front controller"
        );
    }

    #[test]
    fn without_a_rule_files_directories_and_scripts_are_served_and_the_rest_is_404() {
        let (_dir, root) = fixture();
        let mode = Mode::Rule(TryFilesRule::files_only());
        let go = |path: &str| route(&root, &mode, path, "");
        assert_eq!(script(go("/")).script_name, "/index.php");
        assert_eq!(script(go("/app/")).script_name, "/app/index.php");
        assert_eq!(go("/app"), Route::Redirect("/app/".into()));
        assert_eq!(script(go("/other.php")).script_name, "/other.php");
        assert_eq!(static_name(go("/about.html")), "about.html");
        assert_eq!(go("/some/route"), Route::Status(StatusCode::NOT_FOUND));
    }

    #[test]
    fn suffixes_codes_and_queries_in_the_fallback() {
        let (_dir, root) = fixture();
        let pretty = rule_mode("$uri $uri.html $uri/ =410");
        assert_eq!(
            static_name(route(&root, &pretty, "/about", "")),
            "about.html"
        );
        assert_eq!(
            route(&root, &pretty, "/nothing", ""),
            Route::Status(StatusCode::GONE)
        );
        let bare = rule_mode("$uri /index.php");
        assert_eq!(
            script(route(&root, &bare, "/x", "a=1"))
                .query_string
                .as_deref(),
            Some(""),
            "nginx drops the query string when the fallback has none"
        );
        let routed = rule_mode("$uri /index.php?route=$uri&$args");
        assert_eq!(
            script(route(&root, &routed, "/a%20b", "p=2"))
                .query_string
                .as_deref(),
            Some("route=/a b&p=2")
        );
        let path_info = rule_mode("$uri /index.php$uri");
        let s = script(route(&root, &path_info, "/blog/post", ""));
        assert_eq!(
            (s.script_name.as_str(), s.path_info.as_str()),
            ("/index.php", "/blog/post")
        );
    }

    #[test]
    fn hidden_and_escaping_paths_are_refused_in_every_candidate() {
        let (_dir, root) = fixture();
        let mode = rule_mode("$uri $uri/ /index.php?$args");
        for hidden in ["/.env", "/.git/config", "/css/.htaccess", "/%2egit/config"] {
            assert_eq!(
                route(&root, &mode, hidden, ""),
                Route::Status(StatusCode::NOT_FOUND),
                "{hidden}"
            );
        }
        assert_eq!(
            static_name(route(&root, &mode, "/.well-known/security.txt", "")),
            "security.txt"
        );
        for escape in ["/../secret.txt", "/%2e%2e/secret.txt", "/a\\b"] {
            assert_eq!(
                route(&root, &mode, escape, ""),
                Route::Status(StatusCode::FORBIDDEN),
                "{escape}"
            );
        }
        assert_eq!(
            script(route(&root, &mode, "/leak.txt", "")).script_name,
            "/index.php",
            "a symlink out of the root is not a candidate"
        );
        let dotted = rule_mode("$uri $uri.html /index.php");
        assert_eq!(
            script(route(&root, &dotted, "/", "")).script_name,
            "/index.php",
            "`/.html` is hidden, not tried"
        );
    }

    #[test]
    fn a_front_controller_takes_everything_but_static_files() {
        let (_dir, root) = fixture();
        let mode = Mode::FrontController(root.front_controller("index.php").unwrap());
        assert_eq!(
            static_name(route(&root, &mode, "/css/site.css", "")),
            "site.css"
        );
        for path in ["/", "/blog/42", "/other.php", "/missing.css", "/app/"] {
            let s = script(route(&root, &mode, path, "q=1"));
            assert_eq!(s.script_name, "/index.php", "{path}");
            assert_eq!(
                s.path_info, "",
                "{path}: nginx gives no PATH_INFO on a rewrite"
            );
            assert_eq!(s.query_string, None, "{path}: the request's query string");
        }
        for direct in ["/index.php", "/index.php/x"] {
            assert_eq!(
                route(&root, &mode, direct, ""),
                Route::Status(StatusCode::NOT_FOUND),
                "no direct access to the front controller: {direct}"
            );
        }
        assert_eq!(
            route(&root, &mode, "/.env", ""),
            Route::Status(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn sources_and_backups_are_never_served() {
        let (_dir, root) = fixture();
        let modes = [
            rule_mode("$uri $uri/ /index.php?$args"),
            rule_mode("$uri $uri/ =404"),
            Mode::FrontController(root.front_controller("index.php").unwrap()),
        ];
        for mode in &modes {
            for path in [
                "/other.php.bak",
                "/other.php.bak/",
                "/other.php~",
                "/%23other.php%23",
                "/.other.php.swp",
                "/app/config.INC",
                "/page.phtml",
                "/other.php.save",
                "/other.php.orig",
            ] {
                assert_eq!(
                    route(&root, mode, path, ""),
                    Route::Status(StatusCode::NOT_FOUND),
                    "{path} in {mode:?}"
                );
            }
        }
        for name in [
            "site.css",
            "index.html",
            "report.pdf",
            "php.png",
            "inc.js",
            "a.phpx",
        ] {
            assert!(!looks_like_source(name), "{name}");
        }
    }

    #[test]
    fn a_directory_redirect_never_leaves_the_site() {
        let (_dir, root) = fixture();
        let mode = rule_mode("$uri $uri/ =404");
        for path in ["//css", "///css", "//css?x=1"] {
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            match route(&root, &mode, path, query) {
                Route::Redirect(location) => {
                    assert!(location.starts_with("/css/"), "{path}: {location}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_file_asked_for_with_a_trailing_slash_is_not_served() {
        let (_dir, root) = fixture();
        let front = Mode::FrontController(root.front_controller("index.php").unwrap());
        assert_eq!(
            script(route(&root, &front, "/css/site.css/", "")).script_name,
            "/index.php"
        );
        let files_only = rule_mode("$uri $uri/ =404");
        assert_eq!(
            route(&root, &files_only, "/css/site.css/", ""),
            Route::Status(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn fallbacks_are_checked_at_startup() {
        let (_dir, root) = fixture();
        let check = |text: &str| check_fallback(&root, &text.parse().unwrap());
        assert!(check("$uri /index.php?$args").is_ok());
        assert!(check("$uri /docs/").is_ok(), "a directory with an index");
        assert!(check("$uri /about.html").is_ok());
        assert!(check("$uri =404").is_ok());
        assert!(check("$uri /index.php$uri").is_ok(), "request-dependent");
        let missing = check("$uri /missing.php?$args").unwrap_err().to_string();
        assert!(missing.contains("/missing.php does not exist"), "{missing}");
        assert!(
            check("$uri /empty/").is_err(),
            "a directory without an index"
        );
        assert!(
            check("$uri /leak.txt").is_err(),
            "a symlink out of the root"
        );
        assert!(check("$uri /.env").is_err());
    }
}
