//! `WORKER_MATCH`: which requests worker mode serves, by URL path.

use std::fmt;
use std::str::FromStr;

/// Which requests a worker-mode pool serves (`WORKER_MATCH`), by their URL path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerMatch {
    /// Every request (`*`).
    All,
    /// Paths under this prefix: `/api` takes `/api` and `/api/…`, not `/apis`.
    Prefix(String),
}

/// A `WORKER_MATCH` that is neither `*` nor a path.
#[derive(Debug, thiserror::Error)]
#[error("expected * or a path prefix such as /api, got {0:?}")]
pub struct InvalidWorkerMatch(String);

impl FromStr for WorkerMatch {
    type Err = InvalidWorkerMatch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim_end_matches('/') {
            "*" | "" if s.starts_with(['*', '/']) => Ok(WorkerMatch::All),
            prefix if prefix.starts_with('/') && !prefix.contains(['?', '#', '*']) => {
                Ok(WorkerMatch::Prefix(prefix.to_string()))
            }
            _ => Err(InvalidWorkerMatch(s.to_string())),
        }
    }
}

impl fmt::Display for WorkerMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerMatch::All => f.write_str("*"),
            WorkerMatch::Prefix(prefix) => f.write_str(prefix),
        }
    }
}

impl WorkerMatch {
    /// Whether a request for `path` (as received, still percent-encoded) goes to the workers.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            WorkerMatch::All => true,
            WorkerMatch::Prefix(prefix) => path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_or_the_root_takes_every_path() {
        for all in ["*", "/"] {
            let matching: WorkerMatch = all.parse().unwrap();
            assert_eq!(matching, WorkerMatch::All);
            assert!(matching.matches("/anything?x"));
        }
    }

    #[test]
    fn a_prefix_takes_its_own_path_and_those_below_it() {
        let matching: WorkerMatch = "/api/".parse().unwrap();
        assert_eq!(matching, WorkerMatch::Prefix("/api".into()));
        assert_eq!(matching.to_string(), "/api");
        assert!(matching.matches("/api"));
        assert!(matching.matches("/api/users/1"));
        assert!(!matching.matches("/apis"));
        assert!(!matching.matches("/"));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in ["", "api", "/api?x", "**", "/a*"] {
            assert!(bad.parse::<WorkerMatch>().is_err(), "{bad:?}");
        }
    }
}
