//! The `agentdrift` binary: parse the command line, run, map errors to exit codes.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = agentdrift::cli::Cli::parse();
    // Commands that print and exit end quietly when their reader goes away
    // (`agentdrift baseline show … | head`), as Unix tools do, instead of
    // panicking on the broken pipe. The service keeps ignoring SIGPIPE: a
    // client that hangs up must not stop it.
    if !cli.command.serves() {
        // SAFETY: called before any thread is started; restores the default disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match agentdrift::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
