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
        other => eprintln!("error: {}", tidy(&other.to_string())),
    }
    1
}

/// An error and its causes, each cause printed once: a cause whose text
/// the message before it already contains is left out.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    tidy(&out)
}

/// A message as people should see it: each `(a; b; a)` reason list with
/// every reason once, no empty `()`, and no name said twice in a row at
/// the start (`NAME: NAME: ...`).
pub fn tidy(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('(') {
        let Some(len) = rest[open..].find(')') else {
            break;
        };
        let inner = &rest[open + 1..open + len];
        let mut seen: Vec<&str> = Vec::new();
        for reason in inner.split("; ").map(str::trim) {
            if !reason.is_empty() && !seen.contains(&reason) {
                seen.push(reason);
            }
        }
        let head = &rest[..open];
        if seen.is_empty() {
            out.push_str(head.trim_end());
        } else {
            out.push_str(head);
            out.push('(');
            out.push_str(&seen.join("; "));
            out.push(')');
        }
        rest = &rest[open + len + 1..];
    }
    out.push_str(rest);
    // `NAME: NAME: why` -> `NAME: why`.
    if let Some(colon) = out.find(": ") {
        let first = out[..colon + 2].to_string();
        while out[colon + 2..].starts_with(&first) {
            out.replace_range(colon + 2..colon + 2 + first.len(), "");
        }
    }
    out
}

/// Prints warnings.
pub fn warn_all<'a>(warnings: impl IntoIterator<Item = &'a String>) {
    for w in warnings {
        eprintln!("warning: {}", tidy(w));
    }
}

#[cfg(test)]
mod tests {
    use super::tidy;

    #[test]
    fn reasons_once_and_never_empty() {
        assert_eq!(
            tidy("a.txt not stored (DFS1: timed out; DFS1: timed out); nothing was changed"),
            "a.txt not stored (DFS1: timed out); nothing was changed"
        );
        assert_eq!(
            tidy("x/y: x/y: cannot be read from the nodes holding its parts ()"),
            "x/y: cannot be read from the nodes holding its parts"
        );
        assert_eq!(tidy("plain (DFS1: a; DFS2: b)"), "plain (DFS1: a; DFS2: b)");
    }
}
