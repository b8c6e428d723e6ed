//! The token check: with a token configured, a request must present it as
//! `Authorization: Bearer TOKEN` or as the query parameter `token`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub(crate) async fn require(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else { return next.run(req).await };
    let ok = bearer(req.headers().get(header::AUTHORIZATION))
        .or_else(|| query_param(req.uri().query().unwrap_or(""), "token"))
        .is_some_and(|p| same(p.as_bytes(), token.as_bytes()));
    if ok { next.run(req).await } else { unauthorized(req.uri().path()) }
}

fn unauthorized(path: &str) -> Response {
    let body = if path.starts_with("/api") || path == "/metrics" {
        serde_json::json!({"error": "this dashboard needs its token: send `Authorization: Bearer TOKEN` or add ?token=TOKEN"})
            .to_string()
    } else {
        "401: this dashboard needs its token. Open it as http://HOST:PORT/?token=TOKEN (the coordinator's --http-token).\n"
            .to_string()
    };
    let mut r = (StatusCode::UNAUTHORIZED, body).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"embtune\""));
    let ct =
        if path.starts_with("/api") || path == "/metrics" { "application/json" } else { "text/plain; charset=utf-8" };
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// The credentials of an `Authorization: Bearer ...` header.
fn bearer(h: Option<&HeaderValue>) -> Option<String> {
    let v = h?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string())
}

/// The percent-decoded value of query parameter `name`.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| percent_decode(v))
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved characters, for a query value.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_header_and_query() {
        assert_eq!(bearer(Some(&HeaderValue::from_static("Bearer abc"))), Some("abc".into()));
        assert_eq!(bearer(Some(&HeaderValue::from_static("bearer  abc "))), Some("abc".into()));
        assert_eq!(bearer(Some(&HeaderValue::from_static("Basic abc"))), None);
        assert_eq!(query_param("a=1&token=s%20e+c%2Fr", "token"), Some("s e c/r".into()));
        assert_eq!(query_param("tokens=1", "token"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode(&percent_encode("a b/c?&=é")), "a b/c?&=é");
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
