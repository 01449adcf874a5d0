//! Per-file problems grouped by cause: a cause many files share (a node
//! that died during a `put -r`) is printed once with a count, not once per
//! file; `-v` prints every file.

/// Problems of many files, in the order their causes first came.
pub struct Causes {
    /// `error` or `warning`.
    kind: &'static str,
    /// Each cause with the files that had it.
    causes: Vec<(String, Vec<String>)>,
}

impl Causes {
    /// An empty set of `kind` (`error`, `warning`) lines.
    pub fn new(kind: &'static str) -> Causes {
        Causes {
            kind,
            causes: Vec::new(),
        }
    }

    /// File `name` had `message`, which may start with `name: `.
    pub fn add(&mut self, name: &str, message: &str) {
        let text = crate::output::tidy(message);
        let cause = text
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(": "))
            .unwrap_or(&text)
            .to_string();
        match self.causes.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, names)) => names.push(name.to_string()),
            None => self.causes.push((cause, vec![name.to_string()])),
        }
    }

    /// The lines to print: one per file with `verbose` or when a cause
    /// has one file, else one per cause with its count.
    pub fn lines(&self, verbose: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (cause, names) in &self.causes {
            if verbose || names.len() == 1 {
                out.extend(names.iter().map(|n| format!("{}: {n}: {cause}", self.kind)));
            } else {
                out.push(format!(
                    "{}: {} files: {cause} (-v lists them)",
                    self.kind,
                    names.len()
                ));
            }
        }
        out
    }

    /// Prints [`Causes::lines`] to standard error.
    pub fn print(&self, verbose: bool) {
        for line in self.lines(verbose) {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_cause_with_a_count_and_every_file_with_verbose() {
        let mut c = Causes::new("error");
        for n in ["a", "b", "c"] {
            c.add(n, &format!("{n}: not stored: DFS2 stopped answering"));
        }
        c.add("d", "d: cannot read d");
        assert_eq!(
            c.lines(false),
            [
                "error: 3 files: not stored: DFS2 stopped answering (-v lists them)",
                "error: d: cannot read d",
            ]
        );
        let all = c.lines(true);
        assert_eq!(all.len(), 4);
        assert_eq!(all[1], "error: b: not stored: DFS2 stopped answering");
        // A message that does not start with the name keeps all of it.
        let mut w = Causes::new("warning");
        w.add("x", "DFS3 was not usable");
        assert_eq!(w.lines(false), ["warning: x: DFS3 was not usable"]);
    }
}
