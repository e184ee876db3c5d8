//! Reading input files (training, eval, inspect): expand directories, detect formats,
//! read in parallel, attach file names to record errors, fill computed costs.

use super::{self as ingest, Format, InputFile, ReadOptions, RecordError};
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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let mut sinks: Vec<Keep> = (0..threads).map(|_| Keep::default()).collect();
    let read = stream(paths, format, opts, prices, strict, &mut sinks)?;
    let mut steps: Vec<(u64, Step)> = sinks.into_iter().flat_map(|k| k.0).collect();
    steps.sort_by_key(|x| x.0);
    Ok(Loaded {
        steps: steps.into_iter().map(|x| x.1).collect(),
        errors: read.errors,
        ignored: read.ignored,
        files: read.files,
        costs_computed: read.costs_computed,
    })
}

/// A sink that keeps every step with its order key.
#[derive(Default)]
struct Keep(Vec<(u64, Step)>);

impl StepSink for Keep {
    fn push(&mut self, step: Step, order: u64) {
        self.0.push((order, step));
    }
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
    /// Steps whose cost was computed from the price table.
    pub costs_computed: usize,
}

/// Order key of a record: file index in the high bits, the line's byte
/// offset (NDJSON) or the record's index below.
pub fn order_key(file: usize, record: usize) -> u64 {
    ((file as u64) << 40) | record as u64
}

/// Bytes read at a time by each NDJSON reader (a longer line grows its buffer).
const READ_BLOCK: usize = 8 << 20;

/// Reads every input and pushes its valid steps into the sinks. NDJSON is
/// cut at line boundaries into a few byte ranges per sink, which the sinks'
/// threads take in turn and read in blocks while another thread hashes the
/// file, so memory stays bounded by the blocks, not the file size; other
/// formats are read whole and go to the first sink.
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
        let io = |source: std::io::Error| InputError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut head = vec![0u8; len.min(4096) as usize];
        read_full_at(&file, &mut head, 0).map_err(io)?;
        let fmt = format.unwrap_or_else(|| Format::detect(path, &head));
        let name = path.display().to_string();
        let (sha, read, ignored) = if fmt == Format::Ndjson {
            let (sha, read) = stream_ndjson(&file, len, fi, prices, sinks).map_err(io)?;
            (sha, read, 0)
        } else {
            let bytes = std::fs::read(path).map_err(io)?;
            let r = ingest::read(fmt, &bytes, opts);
            let mut read = RangeRead {
                steps: r.steps.len() as u64,
                ..RangeRead::default()
            };
            for (i, mut step) in r.steps.into_iter().enumerate() {
                read.costs_computed += usize::from(prices.fill_cost(&mut step));
                sinks[0].push(step, order_key(fi, i));
            }
            read.errors = r.errors;
            (hex::encode(Sha256::digest(&bytes)), read, r.ignored)
        };
        let (errors, steps) = (read.errors, read.steps);
        out.costs_computed += read.costs_computed;
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

/// Fills `buf` from `offset` (short only at the end of the file); returns the bytes read.
fn read_full_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Byte offsets cutting a file into up to `n` ranges that end at line ends.
fn line_cuts(file: &std::fs::File, len: u64, n: usize) -> std::io::Result<Vec<u64>> {
    let mut cuts = vec![0u64];
    let mut window = vec![0u8; 64 << 10];
    for k in 1..n as u64 {
        // The cut goes after the first newline at or after the nominal point - 1.
        let mut pos = (len * k / n as u64).max(*cuts.last().unwrap_or(&0)).saturating_sub(1);
        let mut at = len;
        while pos < len {
            let got = read_full_at(file, &mut window, pos)?;
            if got == 0 {
                break;
            }
            if let Some(i) = window[..got].iter().position(|&b| b == b'\n') {
                at = pos + i as u64 + 1;
                break;
            }
            pos += got as u64;
        }
        if at > *cuts.last().unwrap_or(&0) && at < len {
            cuts.push(at);
        }
    }
    cuts.push(len);
    Ok(cuts)
}

/// Streams one NDJSON file into the sinks (see [`stream`]): its sha256 and
/// what was read (bad records with their line numbers in the file).
fn stream_ndjson<S: StepSink>(
    file: &std::fs::File,
    len: u64,
    fi: usize,
    prices: &PriceTable,
    sinks: &mut [S],
) -> std::io::Result<(String, RangeRead)> {
    // More ranges than threads, taken in turn, so threads finish together
    // (a session cut by a range boundary is completed by the sink's merge).
    let n = if len < (1 << 20) { 1 } else { sinks.len() * 4 };
    let cuts = line_cuts(file, len, n)?;
    let ranges = cuts.len() - 1;
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(|| -> std::io::Result<String> {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut pos = 0u64;
            while pos < len {
                let got = read_full_at(file, &mut buf, pos)?;
                if got == 0 {
                    break;
                }
                h.update(&buf[..got]);
                pos += got as u64;
            }
            Ok(hex::encode(h.finalize()))
        });
        let handles: Vec<_> = sinks
            .iter_mut()
            .take(ranges)
            .map(|sink| {
                let (cuts, next) = (&cuts, &next);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let r = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if r >= ranges {
                            return Ok(done);
                        }
                        done.push((r, parse_range(file, cuts[r], cuts[r + 1], fi, prices, sink)?));
                    }
                })
            })
            .collect();
        let mut parts: Vec<(usize, RangeRead)> = Vec::new();
        for h in handles {
            let done: std::io::Result<Vec<(usize, RangeRead)>> = h.join().expect("parser threads do not panic");
            parts.extend(done?);
        }
        parts.sort_by_key(|p| p.0);
        let mut all = RangeRead::default();
        for (_, part) in parts {
            all.errors.extend(part.errors.into_iter().map(|mut e| {
                if let ingest::Location::Line(l) = &mut e.location {
                    *l += all.lines;
                }
                e
            }));
            all.steps += part.steps;
            all.lines += part.lines;
            all.costs_computed += part.costs_computed;
        }
        let sha = hasher.join().expect("hashing does not panic")?;
        Ok((sha, all))
    })
}

/// What one range (or file) gave.
#[derive(Default)]
struct RangeRead {
    /// Bad records, lines counted from the range start.
    errors: Vec<RecordError>,
    /// Steps pushed.
    steps: u64,
    /// Lines seen.
    lines: usize,
    /// Steps whose cost the price table filled in.
    costs_computed: usize,
}

/// Parses the lines of `file[start..end]` block by block: (bad records with
/// line numbers counted from the range start, steps pushed, lines seen).
fn parse_range<S: StepSink>(
    file: &std::fs::File,
    start: u64,
    end: u64,
    fi: usize,
    prices: &PriceTable,
    sink: &mut S,
) -> std::io::Result<RangeRead> {
    let mut read = RangeRead::default();
    let mut buf: Vec<u8> = vec![0u8; READ_BLOCK.min((end - start) as usize + 1)];
    // buf[..filled] holds unparsed bytes starting at file offset `base`.
    let (mut base, mut filled, mut pos) = (start, 0usize, start);
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0); // a line longer than the buffer
        }
        let want = ((end - pos) as usize).min(buf.len() - filled);
        let got = read_full_at(file, &mut buf[filled..filled + want], pos)?;
        pos += got as u64;
        filled += got;
        let at_end = pos >= end || got == 0;
        // Complete lines: up to the last newline, or everything at the end.
        let upto = if at_end {
            filled
        } else {
            match memchr::memrchr(b'\n', &buf[..filled]) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        let mut records = ingest::native::NdjsonRecords::new(&buf[..upto]);
        for (line_no, off, line) in records.by_ref() {
            match ingest::native::parse_json_step(line) {
                Ok(mut step) => {
                    read.costs_computed += usize::from(prices.fill_cost(&mut step));
                    sink.push(step, order_key(fi, (base + off as u64) as usize));
                    read.steps += 1;
                }
                Err((field, message)) => read.errors.push(RecordError {
                    location: ingest::Location::Line(read.lines + line_no),
                    field,
                    message,
                }),
            }
        }
        read.lines += records.lines();
        buf.copy_within(upto..filled, 0);
        filled -= upto;
        base += upto as u64;
        if at_end {
            break;
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_ranges_give_every_step_once_in_order_with_true_line_numbers() {
        let mut text = String::new();
        for i in 0..30_000 {
            match i {
                20_000 => text.push_str("{broken\n"),
                25_000 => text.push_str("\r\n"),
                _ => text.push_str(&format!(
                    "{{\"session_id\":\"s{}\",\"seq\":{},\"ts\":1,\"kind\":\"llm\",\"agent\":\"a\",\"text\":\"{}\"}}\r\n",
                    i / 10,
                    i % 10,
                    "padding ".repeat(1 + i % 7)
                )),
            }
        }
        assert!(text.len() > 2 << 20, "several ranges");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps.jsonl");
        std::fs::write(&path, &text).unwrap();
        let mut sinks: Vec<Keep> = (0..3).map(|_| Keep::default()).collect();
        let out = stream(
            std::slice::from_ref(&path),
            None,
            &ReadOptions::default(),
            &PriceTable::default(),
            false,
            &mut sinks,
        )
        .unwrap();
        let serial = ingest::native::read_ndjson(text.as_bytes());
        assert_eq!(out.steps as usize, serial.steps.len());
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].1.location, ingest::Location::Line(20_001));
        assert_eq!(out.files[0].sha256, hex::encode(Sha256::digest(text.as_bytes())));
        let mut all: Vec<(u64, Step)> = sinks.into_iter().flat_map(|k| k.0).collect();
        assert!(all.iter().all(|(_, s)| s.text.is_some()));
        all.sort_by_key(|x| x.0);
        let got: Vec<Step> = all.into_iter().map(|x| x.1).collect();
        assert_eq!(got, serial.steps, "every step once, in input order");
        let loaded = load(&[path], None, &ReadOptions::default(), &PriceTable::default(), false).unwrap();
        assert_eq!(loaded.steps, serial.steps, "load keeps input order");
        assert_eq!(loaded.errors.len(), 1);
    }
}
