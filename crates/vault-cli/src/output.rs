//! What the user sees: progress bars on a terminal, errors, warnings.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vault_client::ops::{OpError, Phase, Progress};
use vault_client::vault::{OpenError, AUTH_FAILED_MESSAGE};

/// Transfers smaller than this get no bar.
const BAR_MIN_BYTES: u64 = 8 << 20;

/// Names longer than this (in characters) are shortened on a bar, keeping
/// their end.
const NAME_MAX: usize = 32;

/// The bar's line: `big200.bin  sending [=====>   ] 80 MiB/200 MiB ...`.
const TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}";

/// A progress bar, hidden until [`Bar::show`] and never drawn off a
/// terminal, for JSON output, or for small transfers.
///
/// It counts file bytes once and names the file. A PUT of one file shows
/// its MD5 pass as a phase of the same bar: `NAME  hashing` counts the
/// file's bytes read, then the bar starts again from zero as
/// `NAME  sending` and counts the bytes sent; the total is the file's size
/// in both. A PUT of several files counts each file's bytes once, as they
/// are stored, against the total of their sizes; the line names the large
/// file being sent (`NAME  sending`) or hashed (`NAME  hashing 40%`), or
/// says `N files` while small files go in batches.
pub struct Bar {
    bar: ProgressBar,
    visible: bool,
    /// One file: its MD5 pass is drawn on the bar. Several: only named.
    one_file: bool,
    /// The size of each file by vault name (a PUT of several files).
    sizes: HashMap<String, u64>,
    now: Mutex<Now>,
}

/// What a PUT of several files is doing.
#[derive(Default)]
struct Now {
    /// The file being sent and the bytes of it still to come.
    sending: Option<(String, u64)>,
    /// The file being hashed, its bytes read, and its size.
    hashing: Option<(String, u64, u64)>,
}

impl Progress for Bar {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.one_file {
            return;
        }
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, left)) = &mut now.sending {
            *left = left.saturating_sub(bytes);
            if *left == 0 {
                now.sending = None;
            }
        }
    }

    fn set_total(&self, bytes: u64) {
        self.bar.set_length(bytes);
    }

    fn phase(&self, phase: Phase<'_>) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        match phase {
            Phase::Hashing(name) if self.one_file => {
                self.bar.set_position(0);
                self.bar
                    .set_message(format!("{}  hashing", short_name(name)));
            }
            Phase::Uploading(name) if self.one_file => {
                // Position, rate and ETA start again: the bar now counts
                // the bytes sent.
                self.bar.reset();
                self.bar
                    .set_message(format!("{}  sending", short_name(name)));
            }
            Phase::Hashing(name) => {
                let size = self.sizes.get(name).copied().unwrap_or(0);
                now.hashing = Some((name.to_string(), 0, size));
                if now.sending.is_none() {
                    self.bar
                        .set_message(format!("{}  hashing", short_name(name)));
                }
            }
            Phase::Uploading(name) => {
                if now.hashing.as_ref().is_some_and(|(h, ..)| h == name) {
                    now.hashing = None;
                }
                let size = self.sizes.get(name).copied().unwrap_or(u64::MAX);
                now.sending = Some((name.to_string(), size));
                self.bar
                    .set_message(format!("{}  sending", short_name(name)));
            }
            _ => {}
        }
    }

    fn hashed(&self, bytes: u64) {
        if self.one_file {
            self.bar.inc(bytes);
            return;
        }
        // Several files: the bar counts bytes stored; the MD5 pass shows in
        // the message only, while no file is being sent.
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        let idle = now.sending.is_none();
        if let Some((name, read, size)) = &mut now.hashing {
            *read = read.saturating_add(bytes);
            if idle && *size > 0 {
                let percent = (*read).min(*size) * 100 / *size;
                self.bar
                    .set_message(format!("{}  hashing {percent}%", short_name(name)));
            }
        }
    }
}

impl Bar {
    /// A bar for `total` bytes labelled `label` (a file's name is
    /// shortened to its end).
    pub fn new(total: u64, label: &str, json: bool) -> Arc<Bar> {
        let visible = !json && total >= BAR_MIN_BYTES && std::io::stderr().is_terminal();
        Self::make(total, &short_name(label), visible, true, HashMap::new())
    }

    /// A bar for storing `files` (vault name and size): its total is the
    /// sum of their sizes, each counted once; it is labelled with the
    /// file's name, or `N files`.
    pub fn put(files: &[(String, u64)], json: bool) -> Arc<Bar> {
        let total = files.iter().map(|(_, size)| size).sum();
        let visible = !json && total >= BAR_MIN_BYTES && std::io::stderr().is_terminal();
        let (label, one_file) = match files {
            [(name, _)] => (short_name(name), true),
            _ => (format!("{} files", files.len()), false),
        };
        let sizes = files.iter().cloned().collect();
        Self::make(total, &label, visible, one_file, sizes)
    }

    /// A bar for storing `count` files of `total` bytes in all, labelled
    /// `N files`; `named` gives the size of the files sent alone (the
    /// others are not named on the bar), so that the bar's line can follow
    /// them. Several files: for one, see [`Bar::put`].
    pub fn put_sized(count: usize, total: u64, named: Vec<(String, u64)>, json: bool) -> Arc<Bar> {
        let visible = !json && total >= BAR_MIN_BYTES && std::io::stderr().is_terminal();
        let label = format!("{count} files");
        Self::make(total, &label, visible, false, named.into_iter().collect())
    }

    /// Runs `f` (which prints) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// A bar whose total comes later ([`Progress::set_total`]).
    pub fn unknown(label: &str, json: bool) -> Arc<Bar> {
        Self::make(
            0,
            label,
            !json && std::io::stderr().is_terminal(),
            true,
            HashMap::new(),
        )
    }

    fn make(
        total: u64,
        label: &str,
        visible: bool,
        one_file: bool,
        sizes: HashMap<String, u64>,
    ) -> Arc<Bar> {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(TEMPLATE)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Arc::new(Bar {
            bar,
            visible,
            one_file,
            sizes,
            now: Mutex::new(Now::default()),
        })
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

/// `name` as a bar shows it: at most [`NAME_MAX`] characters, a long name
/// keeping its end (`…` and the last characters).
pub fn short_name(name: &str) -> String {
    let count = name.chars().count();
    if count <= NAME_MAX {
        return name.to_string();
    }
    let tail: String = name.chars().skip(count - (NAME_MAX - 1)).collect();
    format!("…{tail}")
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
    use super::{short_name, Bar, Phase, Progress, NAME_MAX};
    use indicatif::{ProgressDrawTarget, TermLike};
    use std::sync::{Arc, Mutex};

    /// A terminal that keeps what was drawn, line by line.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        /// The last line drawn (increments are drawn at most so often: a
        /// tick draws the bar as it is now).
        fn line(&self, bar: &Bar) -> String {
            bar.bar.tick();
            let lines = self.0.lock().unwrap();
            lines
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .cloned()
                .unwrap_or_default()
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            200
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn drawn(bar: &Bar) -> Screen {
        let screen = Screen::default();
        bar.bar
            .set_draw_target(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        screen
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_put_bar_names_the_file_and_counts_its_bytes_once() {
        let bar = Bar::put(&[("big200.bin".to_string(), 200 * MIB)], false);
        let screen = drawn(&bar);
        bar.phase(Phase::Hashing("big200.bin"));
        for _ in 0..80 {
            bar.hashed(MIB);
        }
        let line = screen.line(&bar);
        assert!(line.starts_with("big200.bin  hashing ["), "{line}");
        assert!(line.contains("80.00 MiB/200.00 MiB"), "{line}");
        for _ in 0..120 {
            bar.hashed(MIB);
        }
        bar.phase(Phase::Uploading("big200.bin"));
        for _ in 0..40 {
            bar.advance(MIB);
        }
        let line = screen.line(&bar);
        assert!(line.starts_with("big200.bin  sending ["), "{line}");
        assert!(line.contains("40.00 MiB/200.00 MiB"), "{line}");
        for _ in 0..160 {
            bar.advance(MIB);
        }
        let line = screen.line(&bar);
        assert!(line.contains("200.00 MiB/200.00 MiB"), "{line}");
        assert!(!line.contains("400"), "{line}");
    }

    #[test]
    fn a_bar_for_several_files_counts_their_bytes_once() {
        let files = [
            ("a.bin".to_string(), 100 * MIB),
            ("b.bin".to_string(), 50 * MIB),
            ("c.txt".to_string(), 10),
        ];
        let bar = Bar::put(&files, false);
        let screen = drawn(&bar);
        bar.advance(10);
        assert!(
            screen.line(&bar).starts_with("3 files ["),
            "{}",
            screen.line(&bar)
        );
        bar.phase(Phase::Hashing("a.bin"));
        for _ in 0..50 {
            bar.hashed(MIB);
        }
        // The MD5 pass is named, not counted as file bytes.
        let line = screen.line(&bar);
        assert!(line.starts_with("a.bin  hashing 50% ["), "{line}");
        assert!(line.contains("10 B/150.00 MiB"), "{line}");
        bar.phase(Phase::Uploading("a.bin"));
        bar.phase(Phase::Hashing("b.bin"));
        bar.hashed(MIB);
        for _ in 0..100 {
            bar.advance(MIB);
        }
        // b.bin's MD5 pass did not hide the file being sent.
        assert!(screen.line(&bar).starts_with("a.bin  sending ["));
        bar.phase(Phase::Uploading("b.bin"));
        for _ in 0..50 {
            bar.advance(MIB);
        }
        let line = screen.line(&bar);
        assert!(line.starts_with("b.bin  sending ["), "{line}");
        assert!(line.contains("150.00 MiB/150.00 MiB"), "{line}");
    }

    #[test]
    fn long_names_keep_their_end() {
        assert_eq!(short_name("big200.bin"), "big200.bin");
        let long = format!("{}/the-end.bin", "a".repeat(60));
        let short = short_name(&long);
        assert_eq!(short.chars().count(), NAME_MAX);
        assert!(short.starts_with('…') && short.ends_with("aaaa/the-end.bin"));
        // Never split a character.
        let wide = "é".repeat(50);
        assert_eq!(short_name(&wide).chars().count(), NAME_MAX);
        // GET's bar shortens the same way.
        let bar = Bar::new(MIB, &long, false);
        let screen = drawn(&bar);
        bar.advance(1);
        assert!(screen.line(&bar).starts_with(&format!("{short} [")));
    }

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
