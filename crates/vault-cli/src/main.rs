//! `vault-client`: the command line. Parses arguments, sets up logging and
//! the runtime, and runs one command (or the interactive prompt) through
//! the `vault_client` library.
//!
//! # Layout
//!
//! - `args`: the clap definitions and help text.
//! - `password`: where passwords come from; the legacy local MD5 check.
//! - `commands`: opening the vault and running one command, output for
//!   people and for `--json`.
//! - `output`: progress bars, errors and warnings.
//! - `causes`: per-file problems grouped by cause.
//! - `prompt`: the classic interactive prompt.

#![forbid(unsafe_code)]

mod args;
mod causes;
mod commands;
mod output;
mod password;
mod prompt;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // s3s logs every S3 error answer (a 404 included) as an
                // error: the gateway reports its own trouble itself.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,s3s=off")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let status = runtime.block_on(commands::run(cli)).unwrap_or_else(|e| {
        eprintln!("error: {}", output::chain(&e));
        1
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    std::process::exit(status);
}
