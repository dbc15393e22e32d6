//! [`Token`]: the API token and the check of a request's `Authorization: Bearer …` header.
//!
//! Both sides are hashed with SHA-256 first, so the comparison always covers 32 bytes whatever
//! the lengths, and the digests are compared in constant time (`subtle`): how long the check
//! takes says nothing about how much of a guess was right.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

use crate::routeros::conn::Password;

/// How a request's credentials compare to the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The right token.
    Allowed,
    /// No `Authorization: Bearer` header (401).
    Missing,
    /// A bearer token that is not the right one (403).
    Wrong,
}

/// The API token, kept as its SHA-256 digest.
#[derive(Clone)]
pub(crate) struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

impl Token {
    /// The token from API_TOKEN or API_TOKEN_FILE.
    pub(crate) fn new(token: &Password) -> Token {
        Token {
            digest: sha256(token.expose().as_bytes()),
        }
    }

    /// Checks the `Authorization` header of a request.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Verdict {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Verdict::Missing;
        };
        let value = value.as_bytes();
        // RFC 6750 §2.1: "Bearer" and the token, the scheme name in any case.
        let Some(presented) = value
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case(b"bearer "))
            .map(|_| value[7..].trim_ascii())
        else {
            return Verdict::Missing;
        };
        if bool::from(sha256(presented).ct_eq(&self.digest)) {
            Verdict::Allowed
        } else {
            Verdict::Wrong
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn missing_wrong_and_right_tokens() {
        let token = Token::new(&Password::new("s3cret-token"));
        assert_eq!(token.check(&HeaderMap::new()), Verdict::Missing);
        assert_eq!(token.check(&with("Basic czNjcmV0")), Verdict::Missing);
        assert_eq!(token.check(&with("Bearer s3cret-toke")), Verdict::Wrong);
        assert_eq!(token.check(&with("Bearer s3cret-token-")), Verdict::Wrong);
        assert_eq!(token.check(&with("Bearer s3cret-token")), Verdict::Allowed);
        assert_eq!(
            token.check(&with("bearer  s3cret-token ")),
            Verdict::Allowed
        );
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
