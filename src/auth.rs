//! Bearer tokens with scopes. Tokens are kept as SHA-256 hashes (the
//! config file never holds a secret) and compared in constant time: a
//! request's token is hashed and checked against every stored hash without
//! stopping at the first match or mismatch.
//!
//! Scopes: `ingest` (posting steps, spans, logs and outcomes), `read`
//! (reports, events, sessions, the console, `/metrics` unless it is
//! configured open), `admin` (everything). `/healthz` and `/readyz` are open.

use sha2::{Digest, Sha256};

pub use crate::config::{Scope, TokenConfig, parse_env_tokens};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this endpoint needs a token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The token is not one of the configured ones.
    #[error("the token is not valid")]
    Invalid,
    /// The token lacks the scope.
    #[error("token `{name}` lacks the `{}` scope", needed.as_str())]
    Forbidden {
        /// The token's name.
        name: String,
        /// The scope the endpoint needs.
        needed: Scope,
    },
}

/// Why an auth configuration is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("auth token `{name}`: {message}")]
pub struct AuthConfigError {
    /// The token's name.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
}

/// The tokens the service accepts (none configured: no auth).
#[derive(Default)]
pub struct Auth {
    tokens: Vec<Token>,
}

/// Hex SHA-256 of a secret, as stored in the configuration.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Auth {
    /// Builds the checker from configured tokens and plaintext secrets
    /// (from the environment: `(name, scopes, secret)`), hashing the latter.
    pub fn new(configured: &[TokenConfig], plain: &[(String, Vec<Scope>, String)]) -> Result<Auth, AuthConfigError> {
        let mut tokens = Vec::new();
        for t in configured {
            let bytes = hex::decode(t.sha256.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| AuthConfigError {
                    name: t.name.clone(),
                    message: "`sha256` must be 64 hex digits (the output of `agentdrift token`)".into(),
                })?;
            if t.scopes.is_empty() {
                return Err(AuthConfigError {
                    name: t.name.clone(),
                    message: "give it at least one scope (ingest, read, admin)".into(),
                });
            }
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&bytes);
            tokens.push(Token {
                name: t.name.clone(),
                hash,
                scopes: t.scopes.clone(),
            });
        }
        for (name, scopes, secret) in plain {
            if secret.len() < 16 {
                return Err(AuthConfigError {
                    name: name.clone(),
                    message: "the secret must be at least 16 characters".into(),
                });
            }
            tokens.push(Token {
                name: name.clone(),
                hash: Sha256::digest(secret.as_bytes()).into(),
                scopes: scopes.clone(),
            });
        }
        Ok(Auth { tokens })
    }

    /// Whether any token is configured (else every request passes).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks an `Authorization` header value for a scope; returns the token's name.
    pub fn check(&self, header: Option<&str>, needed: Scope) -> Result<Option<&str>, AuthError> {
        if !self.enabled() {
            return Ok(None);
        }
        let secret = header
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Missing)?;
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        // Constant time over every token: no early exit on the first byte or match.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            let diff = t.hash.iter().zip(&presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(t);
            }
        }
        let t = found.ok_or(AuthError::Invalid)?;
        if t.scopes.contains(&needed) || t.scopes.contains(&Scope::Admin) {
            Ok(Some(&t.name))
        } else {
            Err(AuthError::Forbidden {
                name: t.name.clone(),
                needed,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            &[TokenConfig {
                name: "collector".into(),
                sha256: hash_secret("ingest-secret-0123456789"),
                scopes: vec![Scope::Ingest],
            }],
            &parse_env_tokens("ops=read:read-secret-0123456789; root=admin:admin-secret-0123456789").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn scopes_are_enforced_and_admin_does_everything() {
        let a = auth();
        assert_eq!(
            a.check(Some("Bearer ingest-secret-0123456789"), Scope::Ingest),
            Ok(Some("collector"))
        );
        assert_eq!(
            a.check(Some("bearer ingest-secret-0123456789"), Scope::Read),
            Err(AuthError::Forbidden {
                name: "collector".into(),
                needed: Scope::Read
            })
        );
        assert_eq!(
            a.check(Some("Bearer read-secret-0123456789"), Scope::Read),
            Ok(Some("ops"))
        );
        assert_eq!(
            a.check(Some("Bearer admin-secret-0123456789"), Scope::Ingest),
            Ok(Some("root"))
        );
        assert_eq!(a.check(Some("Bearer nope"), Scope::Read), Err(AuthError::Invalid));
        assert_eq!(a.check(None, Scope::Read), Err(AuthError::Missing));
        assert_eq!(a.check(Some("Basic abc"), Scope::Read), Err(AuthError::Missing));
        assert!(Auth::default().check(None, Scope::Admin).is_ok(), "no tokens: no auth");
    }

    #[test]
    fn bad_configuration_is_named() {
        let e = Auth::new(
            &[TokenConfig {
                name: "x".into(),
                sha256: "abc".into(),
                scopes: vec![Scope::Read],
            }],
            &[],
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("`x`") && e.to_string().contains("sha256"), "{e}");
        assert!(
            parse_env_tokens("a=reed:xxxxxxxxxxxxxxxxxxxx")
                .unwrap_err()
                .contains("reed")
        );
        assert!(Auth::new(&[], &parse_env_tokens("a=read:short").unwrap()).is_err());
        assert_eq!(hash_secret("abc").len(), 64);
    }
}
