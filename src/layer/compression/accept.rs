//! `Accept-Encoding` (RFC 9110 §12.5.3): which of our encodings a client takes, and whether it
//! still takes `identity`.

use http::{header, HeaderMap};

use super::encoder::Encoding;

/// The q-values a request's `Accept-Encoding` gives our encodings, `*` and `identity`.
///
/// Without the header a client accepts only `identity` (we do not guess, as RFC 9110 allows
/// but nginx does not either). Malformed q-values make their entry count as absent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AcceptEncoding {
    /// Indexed like [`Encoding::PREFERENCE`].
    explicit: [Option<f32>; 3],
    any: Option<f32>,
    identity: Option<f32>,
}

impl AcceptEncoding {
    /// Reads every `Accept-Encoding` header of a request.
    pub fn from_headers(headers: &HeaderMap) -> AcceptEncoding {
        let mut accepted = AcceptEncoding::default();
        let entries = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for entry in entries {
            let mut params = entry.split(';');
            let coding = params.next().unwrap_or("").trim();
            let Some(q) = quality(params) else { continue };
            if coding == "*" {
                accepted.any = Some(q);
            } else if coding.eq_ignore_ascii_case("identity") {
                accepted.identity = Some(q);
            } else if let Some(i) = Encoding::PREFERENCE.iter().position(|e| {
                coding.eq_ignore_ascii_case(e.token())
                    || (*e == Encoding::Gzip && coding.eq_ignore_ascii_case("x-gzip"))
            }) {
                accepted.explicit[i] = Some(q);
            }
        }
        accepted
    }

    /// The q-value of `encoding`: its own, else `*`'s, else 0.
    pub fn quality(&self, encoding: Encoding) -> f32 {
        let i = Encoding::PREFERENCE
            .iter()
            .position(|e| *e == encoding)
            .expect("every encoding is in PREFERENCE");
        self.explicit[i].or(self.any).unwrap_or(0.0)
    }

    /// The encoding to use: the highest q-value above 0, ties going to the earlier one in
    /// [`Encoding::PREFERENCE`].
    pub fn preferred(&self) -> Option<Encoding> {
        let mut best: Option<(Encoding, f32)> = None;
        for encoding in Encoding::PREFERENCE {
            let q = self.quality(encoding);
            if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((encoding, q));
            }
        }
        best.map(|(encoding, _)| encoding)
    }

    /// `identity;q=0`, or `*;q=0` without an `identity` entry.
    pub fn refuses_identity(&self) -> bool {
        self.identity.or(self.any) == Some(0.0)
    }
}

/// The `q` parameter (default 1), `None` when it is not a number in 0..=1.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<f32> {
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            return value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q));
        }
    }
    Some(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> AcceptEncoding {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
        AcceptEncoding::from_headers(&headers)
    }

    #[test]
    fn browsers_get_zstd_first() {
        assert_eq!(
            parse("gzip, deflate, br, zstd").preferred(),
            Some(Encoding::Zstd)
        );
        assert_eq!(
            parse("gzip, deflate, br").preferred(),
            Some(Encoding::Brotli)
        );
        assert_eq!(parse("gzip, deflate").preferred(), Some(Encoding::Gzip));
        assert_eq!(parse("x-gzip").preferred(), Some(Encoding::Gzip));
        assert_eq!(parse("deflate").preferred(), None);
    }

    #[test]
    fn q_values_decide_before_our_preference() {
        assert_eq!(
            parse("zstd;q=0.5, gzip;q=1.0, br;q=0.8").preferred(),
            Some(Encoding::Gzip)
        );
        assert_eq!(parse("br;q=0, gzip").preferred(), Some(Encoding::Gzip));
        assert_eq!(
            parse("BR;Q=0.9, GZIP;q=0.1").preferred(),
            Some(Encoding::Brotli)
        );
        assert_eq!(parse("*").preferred(), Some(Encoding::Zstd));
        assert_eq!(
            parse("*;q=0.5, zstd;q=0").preferred(),
            Some(Encoding::Brotli)
        );
    }

    #[test]
    fn no_header_means_identity_only() {
        let accepted = AcceptEncoding::from_headers(&HeaderMap::new());
        assert_eq!(accepted.preferred(), None);
        assert!(!accepted.refuses_identity());
    }

    #[test]
    fn identity_can_be_refused() {
        assert!(parse("identity;q=0").refuses_identity());
        assert!(parse("*;q=0").refuses_identity());
        assert!(!parse("*;q=0, identity").refuses_identity());
        assert!(!parse("gzip").refuses_identity());
    }

    #[test]
    fn malformed_entries_are_ignored() {
        assert_eq!(parse("br;q=2, gzip;q=abc").preferred(), None);
        assert_eq!(
            parse(" ; , gzip ;q= 0.3 ").preferred(),
            Some(Encoding::Gzip)
        );
    }
}
