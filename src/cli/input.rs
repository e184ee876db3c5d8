//! Reading input files for the CLI: expand directories, detect formats,
//! read in parallel, attach file names to record errors, fill computed costs.

use crate::ingest::{self, Format, InputFile, ReadOptions, RecordError};
use crate::model::{PriceTable, Step};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Why input could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A path does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No input files were found.
    #[error("no input files found in {0}")]
    Empty(String),
    /// `--strict` and a record is bad.
    #[error("{path}: {error}")]
    Strict {
        /// The file.
        path: String,
        /// The first bad record.
        error: RecordError,
    },
}

/// Everything read from the inputs.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Good steps, file by file, in input order.
    pub steps: Vec<Step>,
    /// Bad records, with their file.
    pub errors: Vec<(String, RecordError)>,
    /// Valid records that carry no step (foreign OTLP spans).
    pub ignored: usize,
    /// Per-file summary.
    pub files: Vec<InputFile>,
    /// Steps whose cost was computed from the price table.
    pub costs_computed: usize,
}

const EXTENSIONS: [&str; 9] = ["jsonl", "ndjson", "json", "msgpack", "mpk", "mp", "pb", "binpb", "otlp"];

/// Expands directories (recursively, known extensions, sorted) and keeps files as given.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| InputError::Io {
            path: p.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            if found.is_empty() {
                return Err(InputError::Empty(p.display().to_string()));
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(InputError::Empty("the arguments".into()));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let rd = std::fs::read_dir(dir).map_err(|source| InputError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| InputError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every input. With `strict`, the first bad record is an error.
pub fn load(
    paths: &[PathBuf],
    format: Option<Format>,
    opts: &ReadOptions,
    prices: &PriceTable,
    strict: bool,
) -> Result<Loaded, InputError> {
    let files = expand(paths)?;
    let mut loaded = Loaded::default();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|source| InputError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let fmt = format.unwrap_or_else(|| Format::detect(&path, &bytes));
        let out = if fmt == Format::Ndjson {
            read_ndjson_parallel(&bytes)
        } else {
            ingest::read(fmt, &bytes, opts)
        };
        let name = path.display().to_string();
        if strict && let Some(e) = out.errors.first() {
            return Err(InputError::Strict {
                path: name,
                error: e.clone(),
            });
        }
        loaded.files.push(InputFile {
            path: name.clone(),
            format: fmt.as_str().to_string(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            steps: out.steps.len(),
            errors: out.errors.len(),
        });
        loaded.ignored += out.ignored;
        loaded.errors.extend(out.errors.into_iter().map(|e| (name.clone(), e)));
        let mut steps = out.steps;
        for s in &mut steps {
            if prices.fill_cost(s) {
                loaded.costs_computed += 1;
            }
        }
        loaded.steps.extend(steps);
    }
    Ok(loaded)
}

/// NDJSON parsed on every core: the file is cut at line boundaries and the
/// chunks' line numbers re-based, so errors still name the right line.
fn read_ndjson_parallel(bytes: &[u8]) -> ingest::ReadOutput {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads <= 1 || bytes.len() < (1 << 20) {
        return ingest::native::read_ndjson(bytes);
    }
    let mut cuts = vec![0usize];
    for k in 1..threads {
        let mut at = bytes.len() * k / threads;
        while at < bytes.len() && bytes[at - 1] != b'\n' {
            at += 1;
        }
        if at > *cuts.last().unwrap_or(&0) && at < bytes.len() {
            cuts.push(at);
        }
    }
    cuts.push(bytes.len());
    let chunks: Vec<(&[u8], usize)> = cuts
        .windows(2)
        .map(|w| {
            (
                &bytes[w[0]..w[1]],
                bytes[..w[0]].iter().filter(|&&b| b == b'\n').count(),
            )
        })
        .collect();
    let parts: Vec<ingest::ReadOutput> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|&(chunk, _)| s.spawn(move || ingest::native::read_ndjson(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader threads do not panic"))
            .collect()
    });
    let mut out = ingest::ReadOutput::default();
    for (mut part, (_, line_offset)) in parts.into_iter().zip(chunks) {
        out.steps.append(&mut part.steps);
        out.errors.extend(part.errors.into_iter().map(|mut e| {
            if let ingest::Location::Line(n) = &mut e.location {
                *n += line_offset;
            }
            e
        }));
        out.ignored += part.ignored;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_ndjson_matches_serial_and_keeps_line_numbers() {
        let mut text = String::new();
        for i in 0..30_000 {
            if i == 20_000 {
                text.push_str("{broken\n");
            } else {
                text.push_str(&format!(
                    "{{\"session_id\":\"s{}\",\"seq\":{},\"ts\":1,\"kind\":\"llm\",\"agent\":\"a\",\"text\":\"padding padding padding\"}}\n",
                    i / 10,
                    i % 10
                ));
            }
        }
        let serial = ingest::native::read_ndjson(text.as_bytes());
        let par = read_ndjson_parallel(text.as_bytes());
        assert_eq!(serial.steps, par.steps);
        assert_eq!(serial.errors, par.errors);
        assert_eq!(par.errors[0].location, ingest::Location::Line(20_001));
    }
}
