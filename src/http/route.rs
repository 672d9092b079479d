//! Maps a request path to a PHP script under the document root, as nginx's
//! `fastcgi_split_path_info ^(.+\.php)(/.*)$` + `index index.php` would, refusing anything that
//! could reach outside the root.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode;

/// The name tried in directories.
pub(crate) const INDEX_SCRIPT: &str = "index.php";

/// A canonical document root.
#[derive(Debug, Clone)]
pub struct DocumentRoot {
    root: PathBuf,
}

/// Where a request path leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A PHP script to run.
    Script(Script),
    /// Nothing to run at this path.
    NotFound,
    /// The path tries to leave the root or is malformed (`..`, NUL, backslash, symlink escape).
    Forbidden,
}

/// A resolved primary script. Put one in the request extensions to make
/// [`PhpService`](super::PhpService) run it instead of resolving the URL (what
/// [`TryFilesLayer`](crate::layer::TryFilesLayer) does for a front controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// `SCRIPT_NAME`: the decoded URL path of the script, e.g. `/blog/index.php`.
    pub script_name: String,
    /// `SCRIPT_FILENAME`: the script's absolute path on disk.
    pub filename: PathBuf,
    /// `PATH_INFO`: the decoded rest of the path after the script, e.g. `/posts/1` (may be empty).
    pub path_info: String,
    /// `QUERY_STRING` when a rewrite replaced the request's own, as nginx's
    /// `try_files … /index.php?$args` does (`None`: the request URI's query string).
    pub query_string: Option<String>,
}

impl DocumentRoot {
    /// Canonicalises `root`; it must be an existing directory.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DocumentRoot { root })
    }

    /// The canonical path of the root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The script at `relative` (e.g. `index.php`) as a front controller: every request runs it,
    /// with the request's decoded path as `PATH_INFO`. Fails if it is not a file inside the root.
    pub fn front_controller(&self, relative: &str) -> io::Result<Script> {
        let segments = decode_segments(&format!("/{}", relative.trim_start_matches('/')))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{relative:?} is not a path inside the document root"),
                )
            })?;
        let filename = self.root.join(segments.join("/"));
        let real = filename.canonicalize()?;
        if !real.starts_with(&self.root) || !real.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a file inside the document root",
                    filename.display()
                ),
            ));
        }
        Ok(Script {
            script_name: join_url_path(&segments),
            filename,
            path_info: String::new(),
            query_string: None,
        })
    }

    /// A worker script (worker mode) at `path`, absolute or relative to the root. Inside the
    /// root it is named as a front controller would be (`SCRIPT_NAME=/worker.php`); outside
    /// it, by its file name.
    pub fn worker_script(&self, path: impl AsRef<Path>) -> io::Result<Script> {
        let filename = self.root.join(path).canonicalize()?;
        if !filename.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file", filename.display()),
            ));
        }
        if let Ok(relative) = filename.strip_prefix(&self.root) {
            return self.front_controller(&relative.to_string_lossy());
        }
        let name = filename.file_name().unwrap_or_default().to_string_lossy();
        Ok(Script {
            script_name: format!("/{name}"),
            filename,
            path_info: String::new(),
            query_string: None,
        })
    }

    /// Resolves the (still percent-encoded) path of a request URI.
    pub fn resolve(&self, uri_path: &str) -> Resolution {
        match decode_segments(uri_path) {
            Some(segments) => self.resolve_segments(&segments),
            None => Resolution::Forbidden,
        }
    }

    /// Resolves a path already split into decoded segments (see [`decode_segments`]).
    pub(crate) fn resolve_segments(&self, segments: &[String]) -> Resolution {
        match self.find_script(segments) {
            Some(found) => self.confine(segments, found),
            None => Resolution::NotFound,
        }
    }

    /// The real path and metadata of what `segments` name, if it exists and its real path
    /// (symlinks followed) is inside the root.
    pub(crate) fn confined(&self, segments: &[String]) -> Option<(PathBuf, std::fs::Metadata)> {
        let real = self.root.join(segments.join("/")).canonicalize().ok()?;
        if !real.starts_with(&self.root) {
            return None;
        }
        let meta = std::fs::metadata(&real).ok()?;
        Some((real, meta))
    }

    /// Walks the segments under the root with `lstat` and finds the first `*.php` segment that is
    /// a file, or the directory index for the whole path. Without symlinks on the way the file is
    /// inside the root by construction (the root is canonical, the segments hold no `.`/`..`), so
    /// only a walk through a symlink costs a `realpath` later.
    fn find_script(&self, segments: &[String]) -> Option<Found> {
        let mut path = self.root.clone();
        let mut via_symlink = false;
        for (i, segment) in segments.iter().enumerate() {
            path.push(segment);
            let meta = metadata_noting_symlinks(&path, &mut via_symlink)?;
            if segment.ends_with(".php") && meta.is_file() {
                return Some(Found {
                    script_len: i + 1,
                    filename: path,
                    via_symlink,
                });
            }
            if !meta.is_dir() {
                return None; // a file that is not a script, with or without more path after it
            }
        }
        let index = path.join(INDEX_SCRIPT);
        metadata_noting_symlinks(&index, &mut via_symlink)?
            .is_file()
            .then_some(Found {
                script_len: segments.len(),
                filename: index,
                via_symlink,
            })
    }

    /// Builds the script if its real path (symlinks followed) is still inside the root.
    fn confine(&self, segments: &[String], found: Found) -> Resolution {
        let Found {
            script_len,
            filename,
            via_symlink,
        } = found;
        if via_symlink {
            let Ok(real) = filename.canonicalize() else {
                return Resolution::NotFound;
            };
            if !real.starts_with(&self.root) {
                return Resolution::Forbidden;
            }
        }
        let mut script_name = join_url_path(&segments[..script_len]);
        if filename.file_name() == Some(OsStr::new(INDEX_SCRIPT))
            && script_len == segments.len()
            && !script_name.ends_with(".php")
        {
            script_name = format!("{}/{INDEX_SCRIPT}", script_name.trim_end_matches('/'));
        }
        let path_info = if script_len < segments.len() {
            join_url_path(&segments[script_len..])
        } else {
            String::new()
        };
        Resolution::Script(Script {
            script_name,
            filename,
            path_info,
            query_string: None,
        })
    }
}

/// A script found under the root.
struct Found {
    /// How many URL segments name the script (the rest is `PATH_INFO`).
    script_len: usize,
    filename: PathBuf,
    /// Whether the walk passed a symlink, so the real path must be checked against the root.
    via_symlink: bool,
}

/// `stat` of `path`, by `lstat` first so symlinks are noticed; `None` if it does not exist.
fn metadata_noting_symlinks(path: &Path, via_symlink: &mut bool) -> Option<std::fs::Metadata> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        *via_symlink = true;
        return std::fs::metadata(path).ok();
    }
    Some(meta)
}

/// Percent-decodes the path and splits it into segments, dropping empty and `.` segments.
/// `None` for anything that could step outside the root or confuse the filesystem.
pub(crate) fn decode_segments(uri_path: &str) -> Option<Vec<String>> {
    let decoded = percent_decode(uri_path.as_bytes()).collect::<Vec<u8>>();
    split_segments(&String::from_utf8(decoded).ok()?)
}

/// Splits an already decoded path (`/a/b/`) into segments as [`decode_segments`] does, with the
/// same refusals.
pub(crate) fn split_segments(decoded: &str) -> Option<Vec<String>> {
    if !decoded.starts_with('/') || decoded.contains(['\0', '\\']) {
        return None;
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s => segments.push(s.to_string()),
        }
    }
    Some(segments)
}

/// `/a/b` from `["a", "b"]`; `/` from none.
pub(crate) fn join_url_path(segments: &[String]) -> String {
    let mut path = String::new();
    for segment in segments {
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// The script's path as a C string for PHP.
pub(crate) fn filename_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, DocumentRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("blog")).unwrap();
        std::fs::create_dir_all(root.join("assets")).unwrap();
        std::fs::write(root.join("index.php"), "<?php").unwrap();
        std::fs::write(root.join("info.php"), "<?php").unwrap();
        std::fs::write(root.join("blog/index.php"), "<?php").unwrap();
        std::fs::write(root.join("assets/app.css"), "body{}").unwrap();
        std::fs::write(dir.path().join("secret.php"), "<?php").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.php"), root.join("escape.php")).unwrap();
        let doc_root = DocumentRoot::new(&root).unwrap();
        (dir, doc_root)
    }

    fn script(doc_root: &DocumentRoot, path: &str) -> Script {
        match doc_root.resolve(path) {
            Resolution::Script(s) => s,
            other => panic!("{path}: expected a script, got {other:?}"),
        }
    }

    #[test]
    fn directories_run_their_index() {
        let (_dir, root) = fixture();
        let s = script(&root, "/");
        assert_eq!(s.script_name, "/index.php");
        assert_eq!(s.filename, root.path().join("index.php"));
        assert_eq!(script(&root, "/blog/").script_name, "/blog/index.php");
        assert_eq!(script(&root, "/blog").script_name, "/blog/index.php");
    }

    #[test]
    fn path_info_follows_the_script() {
        let (_dir, root) = fixture();
        let s = script(&root, "/info.php/a/b%20c");
        assert_eq!(s.script_name, "/info.php");
        assert_eq!(s.path_info, "/a/b c");
        assert_eq!(script(&root, "/blog/index.php").path_info, "");
    }

    #[test]
    fn non_scripts_and_missing_files_are_not_found() {
        let (_dir, root) = fixture();
        assert_eq!(root.resolve("/assets/app.css"), Resolution::NotFound);
        assert_eq!(root.resolve("/missing.php"), Resolution::NotFound);
        assert_eq!(root.resolve("/assets/"), Resolution::NotFound);
    }

    #[test]
    fn symlinks_are_followed_only_inside_the_root() {
        let (dir, root) = fixture();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/x.php"), "<?php").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(root.path().join("info.php"), root.path().join("alias.php"))
            .unwrap();
        assert_eq!(
            root.resolve("/linked/x.php"),
            Resolution::Forbidden,
            "a symlinked directory out of the root"
        );
        assert_eq!(
            script(&root, "/alias.php").script_name,
            "/alias.php",
            "a symlink within the root"
        );
    }

    #[test]
    fn traversal_is_forbidden_in_every_spelling() {
        let (_dir, root) = fixture();
        for path in [
            "/../secret.php",
            "/blog/../../secret.php",
            "/%2e%2e/secret.php",
            "/%2E%2E/secret.php",
            "/..%2fsecret.php",
            "/info.php%00.txt",
            "/..%5csecret.php",
            "/a\\b.php",
            "relative.php",
            "/escape.php",
        ] {
            assert_eq!(root.resolve(path), Resolution::Forbidden, "{path}");
        }
    }
}
