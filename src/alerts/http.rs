//! The HTTP(S) client sinks post with: hyper over rustls, Mozilla's roots
//! plus a sink's own CA file, a deadline per attempt.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// Why a delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file cannot be read or holds no certificate.
    #[error("ca_file {path}: {message}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// TLS settings were refused.
    #[error("TLS: {0}")]
    Tls(String),
    /// The request could not be built.
    #[error("bad request: {0}")]
    Request(String),
    /// No answer: connection refused, reset, TLS failure.
    #[error("cannot reach {url}: {message}")]
    Unreachable {
        /// The receiver (redacted).
        url: String,
        /// Why.
        message: String,
    },
    /// No answer within the deadline.
    #[error("{url} did not answer within {secs} s")]
    Timeout {
        /// The receiver (redacted).
        url: String,
        /// The deadline.
        secs: u64,
    },
    /// An answer other than 2xx.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The receiver (redacted).
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
}

/// A sink's HTTP client.
#[derive(Clone)]
pub struct Client {
    inner: Hyper<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Client {
    /// A client trusting Mozilla's roots and, when given, the certificates of a PEM file.
    pub fn new(ca_file: Option<&str>, timeout: Duration) -> Result<Client, ClientError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let bad = |message: String| ClientError::CaFile {
                path: path.to_string(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client {
            inner: Hyper::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    /// POSTs a JSON body; Ok only for a 2xx answer within the deadline.
    pub async fn post_json(&self, url: &str, headers: &[(String, String)], body: Vec<u8>) -> Result<(), ClientError> {
        let shown = super::redact(url);
        let mut req = hyper::Request::post(url).header(hyper::header::CONTENT_TYPE, "application/json");
        req = req.header(
            hyper::header::USER_AGENT,
            concat!("agentdrift/", env!("CARGO_PKG_VERSION")),
        );
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let attempt = async {
            let resp = self.inner.request(req).await.map_err(|e| ClientError::Unreachable {
                url: shown.clone(),
                message: chain(&e),
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                Err(ClientError::Status {
                    url: shown.clone(),
                    status: status.as_u16(),
                    body: text,
                })
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                url: shown,
                secs: self.timeout.as_secs(),
            }),
        }
    }
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
