//! The `agentdrift` command line: argument definitions and dispatch. Each
//! subcommand lives in its own module and returns an exit code.

pub mod demo;
pub mod design;
pub mod eval;
pub mod http;
pub mod inject;
pub mod inspect;
pub mod replay;
pub mod serve;
pub mod train;

use crate::ingest::{Format, ReadOptions, files};
use crate::model::PriceTable;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Catch LLM agents that quietly go wrong.
#[derive(Debug, Parser)]
#[command(name = "agentdrift", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Input options shared by commands that read recorded sessions.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Force the input format instead of detecting it from extension/content.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Fail on the first bad record instead of reporting all and going on.
    #[arg(long)]
    pub strict: bool,
    /// Price table (TOML) used to compute costs where a source gives tokens only.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Span/resource attribute that holds the task type in OTLP input (repeatable; first match wins).
    #[arg(long = "task-type-attribute", value_name = "KEY")]
    pub task_type_attributes: Vec<String>,
}

impl InputArgs {
    /// The price table: `--prices`, else the built-in one.
    pub fn prices(&self) -> anyhow::Result<PriceTable> {
        Ok(match &self.prices {
            Some(p) => PriceTable::load(p)?,
            None => PriceTable::default(),
        })
    }

    /// Reads `paths` with these options and the price table, printing bad
    /// records (file:line) to stderr; the caller decides the exit code.
    pub fn load(&self, paths: &[PathBuf], prices: &PriceTable) -> anyhow::Result<files::Loaded> {
        let loaded = files::load(paths, self.format, &self.read_options(), prices, self.strict)?;
        if !loaded.errors.is_empty() {
            report_record_errors(&loaded.errors, 20);
        }
        Ok(loaded)
    }

    /// Reader options.
    pub fn read_options(&self) -> ReadOptions {
        let mut o = ReadOptions::default();
        if !self.task_type_attributes.is_empty() {
            o.task_type_attributes = self.task_type_attributes.clone();
        }
        o
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summarise recorded sessions per (agent, task_type) segment.
    Inspect {
        /// Files or directories (NDJSON, MessagePack, OTLP protobuf/JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Choose a control chart by in-control ARL (or evaluate a limit) and print its ARL per shift.
    Design {
        /// The chart.
        #[command(subcommand)]
        chart: design::DesignChart,
    },
    /// Learn a baseline from a reference run.
    Train(train::TrainArgs),
    /// Inspect or compare baseline files.
    Baseline {
        /// What to do.
        #[command(subcommand)]
        action: BaselineAction,
    },
    /// Score recorded sessions offline with the service's scorer.
    Replay(replay::ReplayArgs),
    /// Run the scoring service: ingest live steps, score them, serve drift reports.
    Serve(serve::ServeArgs),
    /// Make a drifted copy of recorded sessions (loop, tool-swap, verbosity, tokens, tone, errors, success, latency).
    Inject(inject::InjectArgs),
    /// Split recorded sessions into a reference part and a held-out part (seeded, by session).
    Split(inject::SplitArgs),
    /// Measure false alarms on in-control sessions and detection delays on drifted ones.
    Eval(eval::EvalArgs),
    /// Train on shipped sessions, start the service, stream normal then drifted sessions, print the events.
    Demo(demo::DemoArgs),
    /// Make an API token: prints the secret once and the `[auth]` entry (its hash) for agentdrift.toml.
    Token {
        /// Who will hold it (shown in logs).
        #[arg(long)]
        name: String,
        /// Scopes, comma-separated: ingest, read, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
}

impl Command {
    /// Whether it runs the service (which must outlive clients that hang up).
    pub fn serves(&self) -> bool {
        matches!(self, Command::Serve(_) | Command::Demo(_))
    }
}

/// `agentdrift baseline …`.
#[derive(Debug, Subcommand)]
pub enum BaselineAction {
    /// Summarise a baseline: per segment sessions, top transitions, feature medians and limits.
    Show {
        /// Baseline file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare two baselines: what moved, with test statistics and p-values, ranked.
    Diff(train::DiffArgs),
}

/// Prints bad records (at most `limit`) and a count to stderr.
pub fn report_record_errors(errors: &[(String, crate::ingest::RecordError)], limit: usize) {
    for (file, e) in errors.iter().take(limit) {
        match &e.location {
            crate::ingest::Location::Line(n) => eprintln!("{file}:{n}: {}", strip_location(e)),
            _ => eprintln!("{file}: {e}"),
        }
    }
    if errors.len() > limit {
        eprintln!("… and {} more bad records", errors.len() - limit);
    }
}

fn strip_location(e: &crate::ingest::RecordError) -> String {
    match &e.field {
        Some(f) => format!("field `{f}`: {}", e.message),
        None => e.message.clone(),
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect { files, json, input } => {
            let prices = input.prices()?;
            let loaded = input.load(&files, &prices)?;
            let bad = !loaded.errors.is_empty();
            let report = inspect::report(loaded, &prices);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", inspect::render(&report));
            }
            if bad {
                eprintln!(
                    "error: {} bad records (see above); use --strict to stop at the first",
                    report.errors.len()
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Train(a) => train::run_train(a),
        Command::Baseline { action } => match action {
            BaselineAction::Show { file, json } => train::run_show(&file, json),
            BaselineAction::Diff(a) => train::run_diff(a),
        },
        Command::Replay(a) => replay::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Inject(a) => inject::run_inject(a),
        Command::Split(a) => inject::run_split(a),
        Command::Eval(a) => eval::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Token { name, scopes } => {
            let scopes = scopes
                .iter()
                .map(|s| {
                    crate::config::Scope::parse(s)
                        .ok_or_else(|| anyhow::anyhow!("--scopes: unknown scope `{s}` (ingest, read, admin)"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut raw = [0u8; 24];
            rand::Rng::fill(&mut rand::rng(), &mut raw[..]);
            let secret = format!("adt_{}", hex::encode(raw));
            let names: Vec<String> = scopes.iter().map(|s| format!("\"{}\"", s.as_str())).collect();
            println!("token (shown once; give it to the client as `Authorization: Bearer <token>`):");
            println!("{secret}");
            println!();
            println!("agentdrift.toml:");
            println!("[[auth.tokens]]");
            println!("name = \"{name}\"");
            println!("sha256 = \"{}\"", crate::auth::hash_secret(&secret));
            println!("scopes = [{}]", names.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Command::Design { chart } => {
            let (doc, as_json) = design::design(&chart)?;
            if as_json {
                println!("{}", serde_json::to_string(&doc)?);
            } else {
                print!("{}", design::render(&doc));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
