//! The `TRY_FILES` syntax: nginx's `try_files` directive, so a rule is copied from an nginx
//! config as it is.
//!
//! ```text
//! TRY_FILES='$uri $uri/ /index.php?$args'
//! ```
//!
//! Entries are separated by whitespace. Every entry but the last is a *candidate*, a path under
//! the document root: one ending in `/` names a directory, any other a file. The last entry is
//! the *fallback*: a URI to run or serve when no candidate exists (an internal redirect; a `?`
//! in it starts the query string PHP sees), or `=CODE` to answer with that status.
//!
//! Variables, as nginx spells them (also in the `${name}` form):
//!
//! | variable | value |
//! |---|---|
//! | `$uri`, `$document_uri` | the request's decoded path, e.g. `/blog/my post/` |
//! | `$args`, `$query_string` | the request's query string, without `?` |
//! | `$is_args` | `?` when the request has a query string, else empty |

use std::fmt;
use std::str::FromStr;

use http::StatusCode;

/// A parsed `TRY_FILES` rule. [`FromStr`] parses nginx's syntax; [`Display`](fmt::Display)
/// gives it back.
///
/// ```
/// use tokio_php::layer::try_files::TryFilesRule;
///
/// let rule: TryFilesRule = "$uri $uri/ /index.php?$args".parse()?;
/// assert_eq!(rule.to_string(), "$uri $uri/ /index.php?$args");
/// assert!("$uri /index.php?$host".parse::<TryFilesRule>().is_err());
/// # Ok::<(), tokio_php::layer::try_files::RuleError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryFilesRule {
    text: String,
    pub(super) candidates: Vec<Candidate>,
    pub(super) fallback: Fallback,
}

/// A path tried under the document root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    pub(super) template: Template,
    /// Written with a trailing `/`: only a directory matches.
    pub(super) directory: bool,
}

/// What happens when no candidate exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fallback {
    /// An internal redirect to this URI (path and optional query).
    Uri(Template),
    /// `=CODE`.
    Status(StatusCode),
}

/// Text with variables in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Uri,
    Args,
    IsArgs,
}

/// The values a template's variables expand to for one request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Vars<'a> {
    /// The decoded, normalised request path.
    pub(super) uri: &'a str,
    /// The raw query string.
    pub(super) args: &'a str,
}

/// Why a `TRY_FILES` value was refused, with the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No entries at all.
    #[error("is empty")]
    Empty,
    /// Only a fallback.
    #[error("needs at least one candidate before the fallback, e.g. '$uri /index.php?$args'")]
    NoCandidate,
    /// `=404` before the last entry.
    #[error("{entry:?}: a status code may only be the last entry")]
    StatusBeforeLast {
        /// The entry.
        entry: String,
    },
    /// A query string on a candidate.
    #[error("{entry:?}: only the last entry (the fallback) may carry a query string")]
    QueryBeforeLast {
        /// The entry.
        entry: String,
    },
    /// `=` followed by something other than a status from 200 to 599.
    #[error("{entry:?}: expected a status code from 200 to 599, e.g. =404")]
    BadStatus {
        /// The entry.
        entry: String,
    },
    /// nginx's `@name`.
    #[error("{entry:?}: named locations are nginx configuration; give the URI to run instead, e.g. /index.php?$args")]
    NamedLocation {
        /// The entry.
        entry: String,
    },
    /// A `$` with no name after it.
    #[error("{entry:?}: a '$' without a variable name")]
    MissingVariableName {
        /// The entry.
        entry: String,
    },
    /// A variable this server does not know.
    #[error("{entry:?}: unknown variable ${name} (known: {KNOWN_VARIABLES})")]
    UnknownVariable {
        /// The entry.
        entry: String,
        /// The variable's name, without `$`.
        name: String,
    },
    /// A path that does not start with `/` or `$uri`.
    #[error("{path:?}: a path must start with / or $uri")]
    NotRooted {
        /// The entry's path.
        path: String,
    },
    /// `..`, a backslash or NUL in a path.
    #[error("{path:?}: a path must stay inside the document root")]
    OutsideRoot {
        /// The entry's path.
        path: String,
    },
}

/// The variables a template may use, for error messages.
const KNOWN_VARIABLES: &str = "$uri, $document_uri, $args, $query_string, $is_args";

impl FromStr for TryFilesRule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, RuleError> {
        let entries: Vec<&str> = text.split_whitespace().collect();
        let Some((last, candidates)) = entries.split_last() else {
            return Err(RuleError::Empty);
        };
        if candidates.is_empty() {
            return Err(RuleError::NoCandidate);
        }
        Ok(TryFilesRule {
            text: entries.join(" "),
            candidates: candidates
                .iter()
                .map(|entry| parse_candidate(entry))
                .collect::<Result<_, _>>()?,
            fallback: parse_fallback(last)?,
        })
    }
}

impl fmt::Display for TryFilesRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for TryFilesRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl TryFilesRule {
    /// What the server does without a rule: `$uri $uri/ =404` — a file, a directory's index, or
    /// `404` (a path naming a `*.php` script runs it in every rule).
    pub fn files_only() -> TryFilesRule {
        "$uri $uri/ =404".parse().expect("a valid rule")
    }
}

fn parse_candidate(entry: &str) -> Result<Candidate, RuleError> {
    if entry.starts_with('=') {
        return Err(RuleError::StatusBeforeLast {
            entry: entry.to_string(),
        });
    }
    let template = Template::parse(entry)?;
    if entry.contains('?') {
        return Err(RuleError::QueryBeforeLast {
            entry: entry.to_string(),
        });
    }
    template.check_path(entry)?;
    Ok(Candidate {
        template,
        directory: entry.ends_with('/'),
    })
}

fn parse_fallback(entry: &str) -> Result<Fallback, RuleError> {
    if let Some(code) = entry.strip_prefix('=') {
        let status = code
            .parse::<u16>()
            .ok()
            .filter(|code| (200..=599).contains(code))
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or_else(|| RuleError::BadStatus {
                entry: entry.to_string(),
            })?;
        return Ok(Fallback::Status(status));
    }
    if entry.starts_with('@') {
        return Err(RuleError::NamedLocation {
            entry: entry.to_string(),
        });
    }
    let template = Template::parse(entry)?;
    let path = entry.split('?').next().unwrap_or_default();
    template.check_path(path)?;
    Ok(Fallback::Uri(template))
}

impl Template {
    fn parse(text: &str) -> Result<Template, RuleError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let (name, after) = variable_name(&rest[dollar + 1..]).ok_or_else(|| {
                RuleError::MissingVariableName {
                    entry: text.to_string(),
                }
            })?;
            let part = match name {
                "uri" | "document_uri" => Part::Uri,
                "args" | "query_string" => Part::Args,
                "is_args" => Part::IsArgs,
                other => {
                    return Err(RuleError::UnknownVariable {
                        entry: text.to_string(),
                        name: other.to_string(),
                    })
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = after;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// A path must start at the root (`/…` or `$uri…`) and its literal text must not climb out of
    /// it or name hidden files.
    fn check_path(&self, path: &str) -> Result<(), RuleError> {
        let rooted = match self.parts.first() {
            Some(Part::Uri) => true,
            Some(Part::Literal(text)) => text.starts_with('/'),
            _ => false,
        };
        if !rooted {
            return Err(RuleError::NotRooted {
                path: path.to_string(),
            });
        }
        let climbs = path
            .split('/')
            .any(|segment| segment == ".." || segment.starts_with("..$"));
        if climbs || path.contains('\\') || path.contains('\0') {
            return Err(RuleError::OutsideRoot {
                path: path.to_string(),
            });
        }
        Ok(())
    }

    /// The text with this request's values in place of the variables.
    pub(super) fn expand(&self, vars: Vars<'_>) -> String {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(literal) => text.push_str(literal),
                Part::Uri => text.push_str(vars.uri),
                Part::Args => text.push_str(vars.args),
                Part::IsArgs if !vars.args.is_empty() => text.push('?'),
                Part::IsArgs => {}
            }
        }
        text
    }

    /// Whether the text before any query string depends on the request's path: such a fallback
    /// cannot be checked at startup.
    pub(super) fn path_uses_uri(&self) -> bool {
        for part in &self.parts {
            match part {
                Part::Uri => return true,
                Part::Literal(text) if text.contains('?') => return false,
                Part::IsArgs => return false,
                _ => {}
            }
        }
        false
    }
}

/// Splits `name…` or `{name}…` off the text after a `$`.
fn variable_name(text: &str) -> Option<(&str, &str)> {
    if let Some(braced) = text.strip_prefix('{') {
        let end = braced.find('}')?;
        let name = &braced[..end];
        return (!name.is_empty()).then(|| (name, &braced[end + 1..]));
    }
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| (&text[..end], &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> TryFilesRule {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} is refused: {e}"))
    }

    fn refusal(text: &str) -> String {
        match text.parse::<TryFilesRule>() {
            Ok(rule) => panic!("{text:?} is accepted: {rule:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn vars<'a>(uri: &'a str, args: &'a str) -> Vars<'a> {
        Vars { uri, args }
    }

    #[test]
    fn nginx_rules_parse_as_written() {
        let wordpress = rule("$uri $uri/ /index.php?$args");
        assert_eq!(wordpress.candidates.len(), 2);
        assert!(!wordpress.candidates[0].directory);
        assert!(wordpress.candidates[1].directory);
        let Fallback::Uri(fallback) = &wordpress.fallback else {
            panic!("a URI fallback");
        };
        assert_eq!(
            fallback.expand(vars("/a b", "x=1&y=2")),
            "/index.php?x=1&y=2"
        );
        assert_eq!(
            rule("$uri $uri.html =404").fallback,
            Fallback::Status(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            rule("  $uri\t/index.php$is_args$query_string ").to_string(),
            "$uri /index.php$is_args$query_string",
            "whitespace is normalised"
        );
    }

    #[test]
    fn variables_expand_in_both_spellings() {
        let template = Template::parse("${uri}.html").unwrap();
        assert_eq!(template.expand(vars("/about", "")), "/about.html");
        let template = Template::parse("/index.php$is_args$args").unwrap();
        assert_eq!(template.expand(vars("/", "")), "/index.php");
        assert_eq!(template.expand(vars("/", "a=1")), "/index.php?a=1");
        let template = Template::parse("$document_uri/index.html").unwrap();
        assert_eq!(template.expand(vars("/docs", "")), "/docs/index.html");
    }

    #[test]
    fn only_fallbacks_built_from_the_path_are_request_dependent() {
        let dependent = |text: &str| Template::parse(text).unwrap().path_uses_uri();
        assert!(!dependent("/index.php?$args"));
        assert!(!dependent("/index.php$is_args$args"));
        assert!(!dependent("/index.php?route=$uri"));
        assert!(dependent("/index.php$uri"));
        assert!(dependent("$uri.html"));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!(refusal("").contains("empty"));
        assert!(refusal("/index.php").contains("at least one candidate"));
        assert!(refusal("$uri /index.php?$host").contains("unknown variable $host"));
        assert!(refusal("$uri /index.php?$").contains("without a variable name"));
        assert!(refusal("$uri ${uri /x").contains("without a variable name"));
        assert!(refusal("=404 $uri").contains("only be the last"));
        assert!(refusal("$uri =999").contains("200 to 599"));
        assert!(refusal("$uri =abc").contains("200 to 599"));
        assert!(refusal("$uri @php").contains("named locations"));
        assert!(refusal("$uri?x /index.php").contains("query string"));
        assert!(refusal("index.html /index.php").contains("must start with /"));
        assert!(refusal("$uri index.php").contains("must start with /"));
        assert!(refusal("$uri /../outside.php").contains("inside the document root"));
        assert!(refusal("$uri/.. /index.php").contains("inside the document root"));
        assert!(refusal("$uri /a\\b.php").contains("inside the document root"));
    }
}
