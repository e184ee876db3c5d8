//! The baseline file: magic, schema version, length and SHA-256 of a
//! MessagePack payload, so a newer, truncated or corrupt file is a clear
//! error and never a panic.
//!
//! Layout: `AGENTDRIFTBL` (12 bytes) · schema version (u32 LE) · payload
//! length (u64 LE) · SHA-256 of the payload (32 bytes) · payload
//! (MessagePack, named fields).

use super::train::SCHEMA_VERSION;
use super::types::Baseline;
use sha2::{Digest, Sha256};
use std::path::Path;

/// File magic.
pub const MAGIC: &[u8; 12] = b"AGENTDRIFTBL";
const HEADER: usize = 12 + 4 + 8 + 32;

/// Why a baseline file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a baseline file.
    #[error("{path}: not an agentdrift baseline (bad magic); train one with `agentdrift train`")]
    NotABaseline {
        /// File.
        path: String,
    },
    /// Written by a newer agentdrift.
    #[error("{path}: baseline schema version {found} is newer than this build reads ({supported}); upgrade agentdrift")]
    Newer {
        /// File.
        path: String,
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// Truncated or altered.
    #[error("{path}: baseline is corrupt ({what}); retrain or restore it")]
    Corrupt {
        /// File.
        path: String,
        /// What check failed.
        what: String,
    },
    /// Could not be encoded.
    #[error("cannot encode baseline: {0}")]
    Encode(String),
}

/// Encodes a baseline into file bytes.
pub fn to_bytes(b: &Baseline) -> Result<Vec<u8>, BaselineError> {
    let payload = rmp_serde::to_vec_named(b).map_err(|e| BaselineError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes file bytes; `path` names the file in errors.
pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Baseline, BaselineError> {
    let corrupt = |what: &str| BaselineError::Corrupt {
        path: path.to_string(),
        what: what.to_string(),
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BaselineError::NotABaseline { path: path.to_string() });
    }
    if bytes.len() < HEADER {
        return Err(corrupt("truncated header"));
    }
    let version = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if version > SCHEMA_VERSION {
        return Err(BaselineError::Newer {
            path: path.to_string(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        return Err(corrupt("schema version 0"));
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(corrupt(&format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        )));
    }
    if Sha256::digest(payload).as_slice() != &bytes[24..56] {
        return Err(corrupt("checksum mismatch"));
    }
    let b: Baseline = rmp_serde::from_slice(payload).map_err(|e| corrupt(&format!("undecodable payload: {e}")))?;
    b.validate()
        .map_err(|e| corrupt(&format!("inconsistent contents: {e}")))?;
    Ok(b)
}

/// Writes a baseline file (via a temporary file and rename, so a crash never
/// leaves half a baseline).
pub fn save(b: &Baseline, path: &Path) -> Result<(), BaselineError> {
    let io = |source| BaselineError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = to_bytes(b)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("adb.tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a baseline file.
pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
    let bytes = std::fs::read(path).map_err(|source| BaselineError::Io {
        path: path.display().to_string(),
        source,
    })?;
    from_bytes(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::types::{BaselineMeta, TrainConfig};

    fn tiny() -> Baseline {
        Baseline {
            meta: BaselineMeta {
                schema_version: SCHEMA_VERSION,
                agentdrift_version: "test".into(),
                created_unix_ms: 1,
                inputs: Vec::new(),
                sessions: 0,
                steps: 0,
                config: TrainConfig::default(),
                lexicon_version: "1".into(),
                lexicon_hash: "h".into(),
                taxonomy: None,
                grounding: None,
                warnings: Vec::new(),
                phase1_excluded: Vec::new(),
            },
            segments: Vec::new(),
        }
    }

    #[test]
    fn round_trips_and_rejects_newer_corrupt_and_foreign_files() {
        let bytes = to_bytes(&tiny()).unwrap();
        assert_eq!(from_bytes(&bytes, "f").unwrap(), tiny());
        let mut newer = bytes.clone();
        newer[12..16].copy_from_slice(&(SCHEMA_VERSION + 1).to_le_bytes());
        assert!(
            matches!(from_bytes(&newer, "f"), Err(BaselineError::Newer { found, .. }) if found == SCHEMA_VERSION + 1)
        );
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(from_bytes(&flipped, "f").unwrap_err().to_string().contains("checksum"));
        assert!(
            from_bytes(&bytes[..bytes.len() - 5], "f")
                .unwrap_err()
                .to_string()
                .contains("payload is")
        );
        assert!(
            from_bytes(&bytes[..20], "f")
                .unwrap_err()
                .to_string()
                .contains("truncated header")
        );
        assert!(matches!(
            from_bytes(b"{\"json\": 1}", "f"),
            Err(BaselineError::NotABaseline { .. })
        ));
        assert!(matches!(from_bytes(b"", "f"), Err(BaselineError::NotABaseline { .. })));
    }
}
