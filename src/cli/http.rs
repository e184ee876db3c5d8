//! The demo's HTTP client: a few requests to its own loopback service, on
//! the hyper the server already uses (reqwest and its URL/IDNA stack would
//! double the HTTP code a release build compiles, for nothing at run time).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A plain-HTTP/1.1 client for `http://` URLs.
#[derive(Clone)]
pub struct Client(Hyper<HttpConnector, Full<Bytes>>);

/// An answer: its status and its whole body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, read to its end.
    pub body: Bytes,
}

impl Answer {
    /// The body as text (lossy), for error messages and `/metrics`.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, saying which request it was when it is not.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| anyhow::anyhow!("{what}: not the JSON expected: {e}"))
    }
}

impl Default for Client {
    fn default() -> Client {
        Client(Hyper::builder(TokioExecutor::new()).build_http())
    }
}

impl Client {
    /// `GET url`.
    pub async fn get(&self, url: &str) -> anyhow::Result<Answer> {
        self.send(hyper::Request::get(url).body(Full::default())?, url).await
    }

    /// `POST url` with a body of the given media type.
    pub async fn post(&self, url: &str, content_type: &str, body: String) -> anyhow::Result<Answer> {
        let req = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))?;
        self.send(req, url).await
    }

    async fn send(&self, req: hyper::Request<Full<Bytes>>, url: &str) -> anyhow::Result<Answer> {
        let resp = self.0.request(req).await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer { status, body })
    }
}
