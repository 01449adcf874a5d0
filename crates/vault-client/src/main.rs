//! `vault-client`: parses arguments and runs [`vault_client::cli::run`].

use clap::Parser;

fn main() {
    let cli = vault_client::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let status = runtime
        .block_on(vault_client::cli::run(cli))
        .unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            1
        });
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    std::process::exit(status);
}
