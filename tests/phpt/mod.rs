//! A runner for php-src's `.phpt` tests over HTTP: each test's script is served by a real
//! tokio_php and requested the way its sections say (`--GET--`, `--POST--`, `--POST_RAW--`,
//! `--PUT--`, `--COOKIE--`, `--INI--`), and the body and headers are compared with `--EXPECT--`,
//! `--EXPECTF--`, `--EXPECTREGEX--` and `--EXPECTHEADERS--` as php-src's run-tests.php does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One parsed `.phpt` file.
#[derive(Debug, Default)]
pub struct Phpt {
    pub name: String,
    /// Section bodies as raw bytes: some tests are deliberately not UTF-8.
    pub sections: HashMap<String, Vec<u8>>,
}

/// What happened to a test.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Failed, but the test itself says it is expected to (`--XFAIL--`).
    ExpectedFail,
    Skip(String),
}

impl Phpt {
    pub fn parse(path: &Path) -> Phpt {
        let raw = std::fs::read(path).unwrap();
        let mut sections = HashMap::new();
        let mut current: Option<String> = None;
        for line in raw.split_inclusive(|&b| b == b'\n') {
            let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
            let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
            let is_header = trimmed.len() > 4
                && trimmed.starts_with(b"--")
                && trimmed.ends_with(b"--")
                && trimmed[2..trimmed.len() - 2]
                    .iter()
                    .all(|&c| c.is_ascii_uppercase() || c == b'_');
            if is_header {
                let name = String::from_utf8_lossy(&trimmed[2..trimmed.len() - 2]).into_owned();
                sections.insert(name.clone(), Vec::new());
                current = Some(name);
            } else if let Some(name) = &current {
                sections.get_mut(name).unwrap().extend_from_slice(line);
            }
        }
        Phpt {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            sections,
        }
    }

    pub fn section(&self, name: &str) -> Option<&[u8]> {
        self.sections.get(name).map(Vec::as_slice)
    }

    fn text(&self, name: &str) -> Option<String> {
        self.section(name)
            .map(|b| String::from_utf8_lossy(b).replace("\r\n", "\n"))
    }

    /// Why this test cannot run over HTTP at all, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        for (section, why) in [
            ("ARGS", "passes command-line arguments (CLI only)"),
            ("STDIN", "feeds standard input (CLI only)"),
            ("ENV", "sets the process environment"),
            ("FILE_EXTERNAL", "runs an external file"),
            ("REDIRECTTEST", "redirects to another test suite"),
            ("CAPTURE_STDIO", "captures the CLI's standard streams"),
        ] {
            if self.sections.contains_key(section) {
                return Some(format!("--{section}-- {why}"));
            }
        }
        let Some(file) = self.text("FILE") else {
            return Some("has no --FILE-- section".into());
        };
        if file.contains("TEST_PHP_EXECUTABLE") || file.contains("TEST_PHP_CGI_EXECUTABLE") {
            return Some("runs a PHP binary itself (TEST_PHP_EXECUTABLE)".into());
        }
        if file.contains("php_cli_server.inc") {
            return Some("drives PHP's built-in CLI server".into());
        }
        if let Some(ini) = self.text("INI") {
            if ini.lines().any(|l| {
                l.trim_start().starts_with("extension")
                    || l.trim_start().starts_with("zend_extension")
            }) {
                return Some("--INI-- loads an extension".into());
            }
        }
        None
    }

    /// `--INI--` directives (values in php.ini syntax, as written), with `{PWD}` replaced by the
    /// test's directory.
    pub fn ini(&self, pwd: &Path) -> Vec<(String, String)> {
        self.text("INI")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once('=')?;
                let value = value.trim().replace("{PWD}", &pwd.to_string_lossy());
                Some((name.trim().to_string(), value))
            })
            .collect()
    }

    /// Method, query, content type and body the test asks for.
    pub fn request(&self) -> PhptRequest {
        let query = self
            .text("GET")
            .map(|q| q.trim().to_string())
            .unwrap_or_default();
        let cookie = self.section("COOKIE").map(|c| c.trim_ascii().to_vec());
        let mut request = PhptRequest {
            method: "GET".into(),
            query,
            cookie,
            content_type: None,
            body: Vec::new(),
        };
        if let Some(raw) = self.section("POST_RAW").or(self.section("PUT")) {
            request.method = if self.sections.contains_key("PUT") {
                "PUT"
            } else {
                "POST"
            }
            .into();
            let (content_type, body) = split_raw_body(raw);
            request.content_type = content_type;
            request.body = body;
        } else if let Some(post) = self.section("POST") {
            request.method = "POST".into();
            request.content_type = Some("application/x-www-form-urlencoded".into());
            request.body = post.trim_ascii().to_vec();
        }
        request
    }
}

/// run-tests.php's reading of `--POST_RAW--`/`--PUT--`: a `Content-Type:` line, then the body
/// (trimmed, lines joined with `\n`).
fn split_raw_body(raw: &[u8]) -> (Option<String>, Vec<u8>) {
    let mut content_type = None;
    let mut body = Vec::new();
    let mut started = false;
    for line in raw.trim_ascii().split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if content_type.is_none()
            && line.len() > 13
            && line[..13].eq_ignore_ascii_case(b"content-type:")
        {
            content_type = Some(String::from_utf8_lossy(&line[13..]).trim().to_string());
            continue;
        }
        if started {
            body.push(b'\n');
        }
        started = true;
        body.extend_from_slice(line);
    }
    (content_type, body)
}

#[derive(Debug)]
pub struct PhptRequest {
    pub method: String,
    pub query: String,
    pub cookie: Option<Vec<u8>>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The ini settings run-tests.php gives every test.
pub const RUN_TESTS_INI: &[(&str, &str)] = &[
    ("output_handler", ""),
    ("open_basedir", ""),
    ("disable_functions", ""),
    ("output_buffering", "Off"),
    ("error_reporting", "32767"),
    ("display_errors", "1"),
    ("display_startup_errors", "1"),
    ("log_errors", "0"),
    ("html_errors", "0"),
    ("report_memleaks", "1"),
    ("docref_root", ""),
    ("docref_ext", ".html"),
    ("error_prepend_string", ""),
    ("error_append_string", ""),
    ("auto_prepend_file", ""),
    ("auto_append_file", ""),
    ("ignore_repeated_errors", "0"),
    ("precision", "14"),
    ("serialize_precision", "-1"),
    ("memory_limit", "128M"),
    ("zend.assertions", "1"),
    ("zend.exception_ignore_args", "0"),
    ("zend.exception_string_param_max_len", "15"),
    ("short_open_tag", "0"),
    ("variables_order", "EGPCS"),
    ("request_order", ""),
];

/// Compares a test's output with what it expects, as run-tests.php does.
pub fn check(test: &Phpt, output: &[u8], headers: &http::HeaderMap) -> Result<(), String> {
    let output = normalize(output);
    if let Some(expected) = test.text("EXPECTHEADERS") {
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or(format!("bad EXPECTHEADERS line {line:?}"))?;
            let found: Vec<_> = headers
                .get_all(name.trim())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if !found.iter().any(|v| v.trim() == value.trim()) {
                return Err(format!(
                    "header {}: expected {:?}, got {found:?}",
                    name.trim(),
                    value.trim()
                ));
            }
        }
    }
    if let Some(expected) = test.section("EXPECT") {
        let expected = normalize(expected);
        return if output == expected {
            Ok(())
        } else {
            Err(diff(&expected, &output))
        };
    }
    let (expected, pattern) = if let Some(expected) = test.section("EXPECTF") {
        let expected = normalize(expected);
        let pattern = expectf_to_regex(&expected);
        (expected, pattern)
    } else if let Some(expected) = test.section("EXPECTREGEX") {
        let expected = normalize(expected);
        let pattern = String::from_utf8_lossy(&expected).into_owned();
        (expected, pattern)
    } else {
        return Err("no --EXPECT-- section".into());
    };
    let regex = regex::bytes::Regex::new(&format!("(?s-u)^{pattern}$"))
        .map_err(|e| format!("bad pattern: {e}"))?;
    if regex.is_match(&output) {
        Ok(())
    } else {
        Err(diff(&expected, &output))
    }
}

/// CRLF → LF, then trimmed, as run-tests.php compares.
fn normalize(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out.trim_ascii().to_vec()
}

fn diff(expected: &[u8], output: &[u8]) -> String {
    format!(
        "expected:\n{}\n--- got:\n{}",
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(output)
    )
}

/// run-tests.php's `%` placeholders as a byte regular expression (`(?-u)`).
pub fn expectf_to_regex(expected: &[u8]) -> String {
    let mut regex = String::new();
    let mut rest = expected;
    while let Some(start) = find(rest, b"%r") {
        regex.push_str(&placeholders(&rest[..start]));
        let after = &rest[start + 2..];
        match find(after, b"%r") {
            Some(end) => {
                regex.push('(');
                regex.push_str(&String::from_utf8_lossy(&after[..end]));
                regex.push(')');
                rest = &after[end + 2..];
            }
            None => {
                regex.push_str(&placeholders(&rest[start..]));
                rest = &[];
            }
        }
    }
    regex.push_str(&placeholders(rest));
    regex
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn placeholders(text: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        let next = text.get(i + 1).copied();
        let replacement = if c == b'%' {
            match next {
                Some(b'e') => Some("/"),
                Some(b's') => Some("[^\\r\\n]+"),
                Some(b'S') => Some("[^\\r\\n]*"),
                Some(b'a') => Some(".+"),
                Some(b'A') => Some(".*"),
                Some(b'w') => Some("\\s*"),
                Some(b'i') => Some("[+-]?\\d+"),
                Some(b'd') => Some("\\d+"),
                Some(b'x') => Some("[0-9a-fA-F]+"),
                Some(b'f') => Some("[+-]?\\.?\\d+\\.?\\d*(?:[Ee][+-]?\\d+)?"),
                Some(b'c') => Some("."),
                Some(b'0') => Some("\\x00"),
                _ => None,
            }
        } else {
            None
        };
        match replacement {
            Some(pattern) => {
                out.push_str(pattern);
                i += 2;
            }
            None => {
                if c.is_ascii() {
                    out.push_str(&regex::escape(&(c as char).to_string()));
                } else {
                    out.push_str(&format!("\\x{c:02x}"));
                }
                i += 1;
            }
        }
    }
    out
}

/// A directory of PHP's own sources (`tests/basic`, …), unpacked by `scripts/build-php.sh
/// --source` — already there after the local PHP build, fetched now when PHP came from
/// `PHP_CONFIG`. Fails, saying why, when they cannot be had.
pub fn php_source_tests(dir: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-php.sh");
    let output = std::process::Command::new(&script)
        .arg("--source")
        .output()
        .unwrap_or_else(|e| panic!("{} --source: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "PHP's sources (for php-src's own tests) could not be fetched by {} --source \
         (it needs Debian's php8.2 source package through apt): {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let path = Path::new(stdout.lines().last().unwrap_or_default().trim()).join(dir);
    assert!(path.is_dir(), "{} is not in PHP's sources", path.display());
    path
}
