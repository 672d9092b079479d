//! What the tests that act as a browser share: a cookie jar, form bodies, and reading pages.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, Response};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// Cookies as a browser keeps them for one site.
#[derive(Debug, Default)]
pub struct CookieJar {
    cookies: BTreeMap<String, String>,
}

impl CookieJar {
    /// The `Cookie` header to send, if there is any cookie.
    pub fn header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Keeps the response's `Set-Cookie`s, and forgets those it expires (applications clear a
    /// cookie with a date in the past, which PHP sends as `Max-Age=0`).
    pub fn store(&mut self, response: &Response<Bytes>) {
        for set_cookie in response.headers().get_all(header::SET_COOKIE) {
            let mut attributes = set_cookie.to_str().unwrap().split(';');
            let Some((name, value)) = attributes.next().and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            let expired = attributes.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || a.starts_with("max-age=-")
            });
            if expired {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.cookies.contains_key(name)
    }

    /// The names of the cookies held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.cookies.keys().map(String::as_str)
    }

    /// The value of cookie `name`; panics if there is none.
    pub fn value(&self, name: &str) -> &str {
        self.cookies
            .get(name)
            .unwrap_or_else(|| panic!("no cookie {name} in {:?}", self.cookies))
    }
}

/// An `application/x-www-form-urlencoded` body.
pub fn form_body(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(name, NON_ALPHANUMERIC),
                utf8_percent_encode(value, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// The body as text, invalid UTF-8 replaced.
pub fn body_text(response: &Response<Bytes>) -> String {
    String::from_utf8_lossy(response.body()).into_owned()
}

pub fn content_type(response: &Response<Bytes>) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The first capture of `pattern` in `page`; panics naming the field.
pub fn scrape(page: &str, pattern: &str, field: &str) -> String {
    regex::Regex::new(pattern)
        .unwrap()
        .captures(page)
        .unwrap_or_else(|| {
            panic!(
                "no {field} in the page; it starts: {}",
                page.chars().take(1500).collect::<String>()
            )
        })[1]
        .to_string()
}
