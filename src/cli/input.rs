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

/// Receives parsed steps, one sink per worker thread, so large inputs are
/// consumed as they are parsed instead of being held in memory.
pub trait StepSink: Send {
    /// A valid step and its input order (file index and line or record).
    fn push(&mut self, step: Step, order: u64);
}

/// What [`stream`] read.
#[derive(Debug, Default)]
pub struct Streamed {
    /// Per-file summary.
    pub files: Vec<InputFile>,
    /// Bad records, with their file.
    pub errors: Vec<(String, RecordError)>,
    /// Valid records that are not steps.
    pub ignored: usize,
    /// Valid steps pushed.
    pub steps: u64,
}

/// Order key of a record: file index in the high bits, line or record below.
pub fn order_key(file: usize, record: usize) -> u64 {
    ((file as u64) << 40) | record as u64
}

/// Reads every input and pushes its valid steps into the sinks: NDJSON is
/// cut at line boundaries into one chunk per sink and parsed in parallel
/// (hashing the file at the same time); other formats go to the first sink.
pub fn stream<S: StepSink>(
    paths: &[PathBuf],
    format: Option<Format>,
    opts: &ReadOptions,
    prices: &PriceTable,
    strict: bool,
    sinks: &mut [S],
) -> Result<Streamed, InputError> {
    assert!(!sinks.is_empty(), "at least one sink");
    let files = expand(paths)?;
    let mut out = Streamed::default();
    for (fi, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|source| InputError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let fmt = format.unwrap_or_else(|| Format::detect(path, &bytes));
        let name = path.display().to_string();
        let (sha, errors, ignored, steps) = std::thread::scope(|scope| {
            let hasher = scope.spawn(|| hex::encode(Sha256::digest(&bytes)));
            let (errors, ignored, steps) = if fmt == Format::Ndjson {
                let chunks = line_chunks(&bytes, if bytes.len() < (1 << 20) { 1 } else { sinks.len() });
                let results: Vec<(Vec<RecordError>, u64)> = std::thread::scope(|s| {
                    let handles: Vec<_> = chunks
                        .iter()
                        .zip(sinks.iter_mut())
                        .map(|(&(chunk, first_line), sink)| {
                            s.spawn(move || {
                                let mut errors = Vec::new();
                                let mut n = 0u64;
                                for (i, raw) in chunk.split(|&b| b == b'\n').enumerate() {
                                    let line = raw.strip_suffix(b"\r").unwrap_or(raw);
                                    if line.iter().all(u8::is_ascii_whitespace) {
                                        continue;
                                    }
                                    let lineno = first_line + i + 1;
                                    match ingest::native::parse_json_step(line) {
                                        Ok(mut step) => {
                                            prices.fill_cost(&mut step);
                                            sink.push(step, order_key(fi, lineno));
                                            n += 1;
                                        }
                                        Err((field, message)) => errors.push(RecordError {
                                            location: ingest::Location::Line(lineno),
                                            field,
                                            message,
                                        }),
                                    }
                                }
                                (errors, n)
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("parser threads do not panic"))
                        .collect()
                });
                let mut errors = Vec::new();
                let mut n = 0;
                for (e, k) in results {
                    errors.extend(e);
                    n += k;
                }
                (errors, 0, n)
            } else {
                let r = ingest::read(fmt, &bytes, opts);
                let n = r.steps.len() as u64;
                for (i, mut step) in r.steps.into_iter().enumerate() {
                    prices.fill_cost(&mut step);
                    sinks[0].push(step, order_key(fi, i));
                }
                (r.errors, r.ignored, n)
            };
            (hasher.join().expect("hashing does not panic"), errors, ignored, steps)
        });
        if strict && let Some(e) = errors.first() {
            return Err(InputError::Strict {
                path: name,
                error: e.clone(),
            });
        }
        out.files.push(InputFile {
            path: name.clone(),
            format: fmt.as_str().to_string(),
            sha256: sha,
            steps: steps as usize,
            errors: errors.len(),
        });
        out.ignored += ignored;
        out.steps += steps;
        out.errors.extend(errors.into_iter().map(|e| (name.clone(), e)));
    }
    Ok(out)
}

/// Cuts NDJSON into up to `n` chunks at line boundaries: (chunk, lines before it).
fn line_chunks(bytes: &[u8], n: usize) -> Vec<(&[u8], usize)> {
    let mut cuts = vec![0usize];
    for k in 1..n {
        let mut at = bytes.len() * k / n;
        while at < bytes.len() && bytes[at - 1] != b'\n' {
            at += 1;
        }
        if at > *cuts.last().unwrap_or(&0) && at < bytes.len() {
            cuts.push(at);
        }
    }
    cuts.push(bytes.len());
    let mut lines_before = 0;
    cuts.windows(2)
        .map(|w| {
            let chunk = &bytes[w[0]..w[1]];
            let here = lines_before;
            lines_before += chunk.iter().filter(|&&b| b == b'\n').count();
            (chunk, here)
        })
        .collect()
}

/// NDJSON parsed on every core: the file is cut at line boundaries and the
/// chunks' line numbers re-based, so errors still name the right line.
fn read_ndjson_parallel(bytes: &[u8]) -> ingest::ReadOutput {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads <= 1 || bytes.len() < (1 << 20) {
        return ingest::native::read_ndjson(bytes);
    }
    let chunks = line_chunks(bytes, threads);
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
