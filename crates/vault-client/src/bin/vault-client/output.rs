//! What the user sees: progress bars on a terminal, errors, warnings.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vault_client::ops::{OpError, Progress};
use vault_client::vault::{OpenError, AUTH_FAILED_MESSAGE};

/// Transfers smaller than this get no bar.
const BAR_MIN_BYTES: u64 = 8 << 20;

/// A progress bar, hidden until [`Bar::show`] and never drawn off a
/// terminal, for JSON output, or for small transfers.
pub struct Bar {
    bar: ProgressBar,
    visible: bool,
}

impl Progress for Bar {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn set_total(&self, bytes: u64) {
        self.bar.set_length(bytes);
    }
}

impl Bar {
    /// A bar for `total` bytes labelled `label`.
    pub fn new(total: u64, label: &str, json: bool) -> Arc<Bar> {
        let visible = !json && total >= BAR_MIN_BYTES && std::io::stderr().is_terminal();
        Self::make(total, label, visible)
    }

    /// A bar whose total comes later ([`Progress::set_total`]).
    pub fn unknown(label: &str, json: bool) -> Arc<Bar> {
        Self::make(0, label, !json && std::io::stderr().is_terminal())
    }

    fn make(total: u64, label: &str, visible: bool) -> Arc<Bar> {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Arc::new(Bar { bar, visible })
    }

    /// Starts drawing (work counted before is kept).
    pub fn show(&self) {
        if self.visible {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Prints an operation's error (the classic message for a bad password);
/// returns the exit status.
pub fn report_error(e: &OpError) -> i32 {
    match e {
        OpError::Open(OpenError::AuthFailed) => eprintln!("{AUTH_FAILED_MESSAGE}"),
        OpError::Exists(path) => eprintln!(
            "error: {} already exists (use --force to overwrite)",
            path.display()
        ),
        other => eprintln!("error: {other}"),
    }
    1
}

/// Prints warnings.
pub fn warn_all<'a>(warnings: impl IntoIterator<Item = &'a String>) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}
