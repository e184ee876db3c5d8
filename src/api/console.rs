//! `GET /`: the built-in console, a page and two assets embedded in the
//! binary at build time (no CDN, nothing to install). They hold no data:
//! the page reads the API with the visitor's token, so they are served
//! without one.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The page.
const INDEX: &str = include_str!("console/index.html");
/// Its script.
const SCRIPT: &str = include_str!("console/console.js");
/// Its style sheet.
const STYLE: &str = include_str!("console/console.css");

/// Paths of the console's files (served without a token).
pub const PATHS: [&str; 3] = ["/", "/console/console.js", "/console/console.css"];

/// Same-origin only: the page may load nothing from elsewhere.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /console/console.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /console/console.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
