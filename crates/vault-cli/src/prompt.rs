//! The classic interactive prompt, one command per line, keywords in any
//! case, with or without a leading dash:
//!
//! ```text
//! PUT [-r] [-v] FILE...        store files (-r: folders, unchanged files skipped)
//! GET [-r] [-f] NAME [PATH]    fetch a file or, with -r, a folder (-f replaces)
//! LIST [PREFIX]                list the files (under a folder)
//! DELETE [-r] NAME             delete a file or, with -r, a folder
//! EXIT                         leave (also QUIT, Ctrl-D, or the end of input)
//! ```
//!
//! Names are vault paths (`photos/2024/a.jpg`); a name with spaces goes in
//! double quotes. At a terminal the line can be edited, and the up arrow
//! recalls earlier commands (kept in memory for the session only, never
//! written to a file: a classic command holds a password). ROTATE runs
//! from the command line only, and the prompt says so.
//!
//! The forms of the classic Python client, which repeated the credentials
//! on every command, work too, in their classic spelling only: with the
//! leading dash and no quoted word, `-put FILE USER PASS`,
//! `-get FILE USER PASS`, `-list USER PASS`, `-delete FILE USER PASS`. The
//! credentials must be the ones this session logged in with (the user name
//! in any case); a wrong pair prints the classic
//! `Invalid Username/Password. Please try again.` and the prompt goes on.
//! Without the dash no word is ever taken for credentials: `PUT A B C`
//! stores three files, and `GET "my file" x y` (a word too many for
//! `GET NAME PATH`) is an error that shows the usage.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use subtle::ConstantTimeEq;
use vault_client::config::ClientConfig;
use vault_client::vault::{Vault, AUTH_FAILED_MESSAGE};
use zeroize::Zeroizing;

use crate::args::Command;
use crate::commands::run_command;

const PROMPT_HELP: &str = "commands: PUT [-r] [--degraded] FILE..., GET [-r] [-f] NAME [PATH], \
LIST [PREFIX], DELETE [-r] NAME, STATUS, CHECK [--verify] [PREFIX], \
REPAIR [--verify] [--rebalance] [--grace DURATION] [PREFIX], EXIT; quote names with spaces (\"my file.txt\") \
(classic forms: -put FILE USER PASS, -get FILE USER PASS, -list USER PASS)";

/// Who the session is: what the classic forms' credentials are checked
/// against.
pub struct Identity {
    /// The user name from dfc.conf.
    pub user: String,
    /// The password the vault was opened with.
    pub password: Zeroizing<String>,
}

impl Identity {
    fn matches(&self, user: &str, password: &str) -> bool {
        // Both checks always run; the password in constant time.
        let pw_ok: bool = self.password.as_bytes().ct_eq(password.as_bytes()).into();
        self.user.eq_ignore_ascii_case(user) & pw_ok
    }
}

/// What one prompt line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Run(Command),
    /// A classic form with credentials: run the command if they match.
    WithCredentials {
        command: Command,
        user: String,
        password: String,
    },
    Help,
    /// A command that runs from the command line only.
    CommandLineOnly(&'static str),
    Exit,
    Empty,
    Unknown,
}

/// What ROTATE at the prompt answers.
const ROTATE_HINT: &str = "rotate runs from the command line: vault-client -c dfc.conf rotate";

/// Splits a line into words: whitespace separates them, double quotes
/// group (`GET "my file.txt"`); `None` for an unclosed quote. The flag
/// tells whether any quote was used.
fn words(line: &str) -> Option<(Vec<String>, bool)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut in_quotes, mut started, mut quoted) = (false, false, false);
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                started = true;
                quoted = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if in_quotes {
        return None;
    }
    if started {
        out.push(word);
    }
    Some((out, quoted))
}

/// Parses one line. Only the classic spelling (a leading dash, no quoted
/// word) carries credentials.
fn parse(line: &str) -> Line {
    let Some((all, quoted)) = words(line) else {
        return Line::Unknown;
    };
    let Some((first, rest)) = all.split_first() else {
        return Line::Empty;
    };
    let dashed = first.starts_with('-');
    let classic = dashed && !quoted;
    let keyword = first.trim_start_matches('-').to_ascii_uppercase();
    let flag = |names: &[&str]| rest.iter().any(|w| names.contains(&w.as_str()));
    let recursive = flag(&["-r", "--recursive"]);
    let force = flag(&["-f", "--force"]);
    let verbose = flag(&["-v", "--verbose"]);
    let checksum = flag(&["--checksum"]);
    let degraded = flag(&["--degraded"]);
    let verify = flag(&["--verify"]);
    let rebalance = flag(&["--rebalance"]);
    // `--grace DURATION` takes the word after it.
    let grace_at = rest.iter().position(|w| w == "--grace");
    let grace = match grace_at.map(|i| rest.get(i + 1)) {
        None => None,
        Some(Some(text)) => match crate::args::parse_duration(text) {
            Ok(d) => Some(d),
            Err(_) => return Line::Unknown,
        },
        Some(None) => return Line::Unknown,
    };
    let args: Vec<&str> = rest
        .iter()
        .enumerate()
        .filter(|(i, _)| grace_at.is_none_or(|g| *i != g && *i != g + 1))
        .map(|(_, w)| w.as_str())
        .filter(|w| {
            !matches!(
                *w,
                "-r" | "--recursive"
                    | "-f"
                    | "--force"
                    | "-v"
                    | "--verbose"
                    | "--checksum"
                    | "--degraded"
                    | "--verify"
                    | "--rebalance"
            )
        })
        .collect();
    let plain = !recursive
        && !force
        && !verbose
        && !checksum
        && !degraded
        && !verify
        && !rebalance
        && grace.is_none();
    // Only `--verify` (and for REPAIR `--grace`) may go with CHECK/REPAIR.
    let health = !recursive && !force && !verbose && !checksum && !degraded && !dashed;
    let creds = |command: Command, user: &str, password: &str| Line::WithCredentials {
        command,
        user: user.to_string(),
        password: password.to_string(),
    };
    let get = |name: &str, output: Option<&str>, recursive: bool, force: bool| Command::Get {
        recursive,
        name: name.to_string(),
        output: output.map(PathBuf::from),
        force,
        verbose,
    };
    let put = |files: &[&str]| Command::Put {
        recursive,
        checksum,
        verbose,
        degraded,
        files: files.iter().map(PathBuf::from).collect(),
    };
    match (keyword.as_str(), args.as_slice()) {
        ("EXIT" | "QUIT", _) => Line::Exit,
        ("HELP" | "?", _) => Line::Help,
        ("ROTATE", _) => Line::CommandLineOnly(ROTATE_HINT),
        ("PUT", [file, user, password]) if plain && classic => creds(put(&[file]), user, password),
        ("PUT", files) if !files.is_empty() && !dashed => Line::Run(put(files)),
        ("GET", [name, user, password]) if plain && classic => {
            creds(get(name, None, false, false), user, password)
        }
        ("GET", [name]) if !dashed => Line::Run(get(name, None, recursive, force)),
        ("GET", [name, path]) if !dashed => Line::Run(get(name, Some(path), recursive, force)),
        ("LIST" | "LS", []) if plain => Line::Run(Command::List { prefix: None }),
        ("LIST" | "LS", [prefix]) if plain && !dashed => Line::Run(Command::List {
            prefix: Some(prefix.to_string()),
        }),
        ("LIST" | "LS", [user, password]) if plain && classic => {
            creds(Command::List { prefix: None }, user, password)
        }
        ("DELETE" | "DEL" | "RM", [name]) if !force && !verbose && !checksum => {
            Line::Run(Command::Delete {
                recursive,
                name: name.to_string(),
            })
        }
        ("STATUS", []) if plain && !dashed => Line::Run(Command::Status),
        ("CHECK", [] | [_]) if health && grace.is_none() => Line::Run(Command::Check {
            verify,
            verbose: false,
            prefix: args.first().map(|p| p.to_string()),
        }),
        ("REPAIR", [] | [_]) if health => Line::Run(Command::Repair {
            verify,
            rebalance,
            verbose: false,
            grace: grace.unwrap_or(crate::args::DEFAULT_GRACE),
            prefix: args.first().map(|p| p.to_string()),
        }),
        ("DELETE" | "DEL" | "RM", [name, user, password]) if plain && classic => creds(
            Command::Delete {
                recursive: false,
                name: name.to_string(),
            },
            user,
            password,
        ),
        _ => Line::Unknown,
    }
}

/// Where prompt lines come from: a line editor with history at a
/// terminal, plain lines from anything else (a pipe, a file).
enum Input {
    Terminal(rustyline::DefaultEditor),
    Lines(tokio::sync::mpsc::Receiver<String>),
}

impl Input {
    fn open() -> Input {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            // History in memory only: nothing is ever saved to a file.
            let config = rustyline::Config::builder()
                .auto_add_history(false)
                .max_history_size(1000)
                .map(|b| b.build());
            if let Ok(Ok(editor)) = config.map(rustyline::DefaultEditor::with_config) {
                return Input::Terminal(editor);
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(1);
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        Input::Lines(rx)
    }

    /// The next line; `None` at the end of input (Ctrl-D).
    async fn next(&mut self) -> Option<String> {
        match self {
            Input::Lines(rx) => rx.recv().await,
            Input::Terminal(editor) => loop {
                use rustyline::error::ReadlineError;
                match tokio::task::block_in_place(|| editor.readline("vault> ")) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Some(line);
                    }
                    // Ctrl-C drops the line, as a shell does.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(_) => {
                        // Ctrl-D: leave the terminal on a fresh line.
                        println!();
                        return None;
                    }
                }
            },
        }
    }
}

/// Reads commands until EXIT or the end of input; returns the status of
/// the last command.
pub async fn interactive(vault: &Vault, cfg: &ClientConfig, me: &Identity) -> i32 {
    let mut input = Input::open();
    if matches!(input, Input::Terminal(_)) {
        println!("{PROMPT_HELP}");
    }
    let mut status = 0;
    loop {
        let Some(line) = input.next().await else {
            break;
        };
        let command = match parse(&line) {
            Line::Exit => break,
            Line::Empty => continue,
            Line::Help => {
                println!("{PROMPT_HELP}");
                continue;
            }
            Line::CommandLineOnly(hint) => {
                eprintln!("{hint}");
                status = 1;
                continue;
            }
            Line::Unknown => {
                // Only the first word: the rest may hold a password.
                let word = line.split_whitespace().next().unwrap_or_default();
                eprintln!("unknown command or wrong arguments: {word}\n{PROMPT_HELP}");
                status = 1;
                continue;
            }
            Line::Run(c) => c,
            Line::WithCredentials {
                command,
                user,
                password,
            } => {
                let password = Zeroizing::new(password);
                if !me.matches(&user, &password) {
                    eprintln!("{AUTH_FAILED_MESSAGE}");
                    status = 1;
                    continue;
                }
                command
            }
        };
        status = match command {
            Command::Status => crate::commands::status(vault, cfg, false).await,
            command => run_command(vault, command, false, false, None).await,
        };
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Line {
        parse(line)
    }

    fn creds(command: Command, user: &str, password: &str) -> Line {
        Line::WithCredentials {
            command,
            user: user.into(),
            password: password.into(),
        }
    }

    fn put(files: &[&str]) -> Command {
        Command::Put {
            recursive: false,
            checksum: false,
            verbose: false,
            degraded: false,
            files: files.iter().map(PathBuf::from).collect(),
        }
    }

    fn get(name: &str, output: Option<&str>, force: bool) -> Command {
        Command::Get {
            recursive: false,
            name: name.into(),
            output: output.map(PathBuf::from),
            force,
            verbose: false,
        }
    }

    #[test]
    fn classic_forms_with_credentials() {
        assert_eq!(
            p("-put a.txt Alice pw"),
            creds(put(&["a.txt"]), "Alice", "pw")
        );
        assert_eq!(p("-PUT a.txt bob pw"), creds(put(&["a.txt"]), "bob", "pw"));
        assert_eq!(
            p("-get a.txt alice pw"),
            creds(get("a.txt", None, false), "alice", "pw")
        );
        assert_eq!(
            p("-list alice pw"),
            creds(Command::List { prefix: None }, "alice", "pw")
        );
        assert_eq!(
            p("-delete a.txt alice pw"),
            creds(
                Command::Delete {
                    recursive: false,
                    name: "a.txt".into()
                },
                "alice",
                "pw"
            )
        );
    }

    /// Issue 16: only the classic spelling (dash, no quotes) carries
    /// credentials; a quoted name is never swallowed.
    #[test]
    fn credentials_only_in_the_classic_spelling() {
        // Without the dash, three words are three files.
        assert_eq!(
            p("Put a.txt ALICE pw"),
            Line::Run(put(&["a.txt", "ALICE", "pw"]))
        );
        assert_eq!(
            p("put a.txt bob pw"),
            Line::Run(put(&["a.txt", "bob", "pw"]))
        );
        // GET NAME PATH with a word too many: an error with the usage.
        assert_eq!(p("GET \"big200.bin\" x y"), Line::Unknown);
        assert_eq!(p("get a.txt alice pw"), Line::Unknown);
        assert_eq!(p("GET \"big file.bin\" x y"), Line::Unknown);
        assert_eq!(
            p("GET \"big file.bin\" x"),
            Line::Run(get("big file.bin", Some("x"), false))
        );
        // Two words for LIST are not a prefix either.
        assert_eq!(p("LIST alice pw"), Line::Unknown);
        assert_eq!(p("delete a.txt alice pw"), Line::Unknown);
        // A quoted word makes even the dashed form a plain one.
        assert_eq!(p("-get \"a.txt\" alice pw"), Line::Unknown);
        assert_eq!(p("-put a.txt \"alice\" pw"), Line::Unknown);
        assert_eq!(p("-list alice \"pw\""), Line::Unknown);
    }

    #[test]
    fn rotate_runs_from_the_command_line() {
        assert_eq!(p("rotate"), Line::CommandLineOnly(ROTATE_HINT));
        assert_eq!(p("-ROTATE"), Line::CommandLineOnly(ROTATE_HINT));
        assert!(ROTATE_HINT.contains("vault-client -c dfc.conf rotate"));
    }

    #[test]
    fn plain_forms() {
        assert_eq!(p("PUT a b"), Line::Run(put(&["a", "b"])));
        assert_eq!(p("get a.txt"), Line::Run(get("a.txt", None, false)));
        assert_eq!(
            p("GET a.txt out.txt"),
            Line::Run(get("a.txt", Some("out.txt"), false))
        );
        assert_eq!(
            p("GET a.txt out.txt -f"),
            Line::Run(get("a.txt", Some("out.txt"), true))
        );
        assert_eq!(p("get --force a.txt"), Line::Run(get("a.txt", None, true)));
        assert_eq!(p("list"), Line::Run(Command::List { prefix: None }));
        assert_eq!(
            p("list photos/2024"),
            Line::Run(Command::List {
                prefix: Some("photos/2024".into())
            })
        );
        assert_eq!(
            p("put -r photos"),
            Line::Run(Command::Put {
                recursive: true,
                checksum: false,
                verbose: false,
                degraded: false,
                files: vec![PathBuf::from("photos")]
            })
        );
        assert_eq!(
            p("GET -r photos out -f"),
            Line::Run(Command::Get {
                recursive: true,
                name: "photos".into(),
                output: Some(PathBuf::from("out")),
                force: true,
                verbose: false
            })
        );
        assert_eq!(
            p("get \"my file.txt\" \"a b/c\""),
            Line::Run(get("my file.txt", Some("a b/c"), false))
        );
        assert_eq!(
            p("delete -r photos"),
            Line::Run(Command::Delete {
                recursive: true,
                name: "photos".into()
            })
        );
        assert_eq!(p("get \"unclosed"), Line::Unknown);
        assert_eq!(p("  "), Line::Empty);
        assert_eq!(p("exit"), Line::Exit);
        assert_eq!(p("-quit"), Line::Exit);
        assert_eq!(p("bogus"), Line::Unknown);
        assert_eq!(p("-put a b"), Line::Unknown);
        assert_eq!(p("get"), Line::Unknown);
    }

    #[test]
    fn credentials_are_the_sessions() {
        let me = Identity {
            user: "Alice".into(),
            password: Zeroizing::new("Crimson33".into()),
        };
        assert!(me.matches("alice", "Crimson33"));
        assert!(me.matches("ALICE", "Crimson33"));
        assert!(!me.matches("alice", "crimson33"));
        assert!(!me.matches("bob", "Crimson33"));
    }

    #[test]
    fn health_commands_and_their_flags() {
        use std::time::Duration;
        assert_eq!(p("status"), Line::Run(Command::Status));
        assert_eq!(
            p("CHECK --verify photos"),
            Line::Run(Command::Check {
                verify: true,
                verbose: false,
                prefix: Some("photos".into())
            })
        );
        assert_eq!(
            p("check"),
            Line::Run(Command::Check {
                verify: false,
                verbose: false,
                prefix: None
            })
        );
        assert_eq!(
            p("repair --grace 0s"),
            Line::Run(Command::Repair {
                verify: false,
                rebalance: false,
                verbose: false,
                grace: Duration::ZERO,
                prefix: None
            })
        );
        assert_eq!(
            p("repair photos --verify"),
            Line::Run(Command::Repair {
                verify: true,
                rebalance: false,
                verbose: false,
                grace: crate::args::DEFAULT_GRACE,
                prefix: Some("photos".into())
            })
        );
        assert_eq!(
            p("put --degraded a.txt"),
            Line::Run(Command::Put {
                recursive: false,
                checksum: false,
                verbose: false,
                degraded: true,
                files: vec![PathBuf::from("a.txt")]
            })
        );
        for bad in [
            "repair --grace",
            "repair --grace soon",
            "check --grace 1h",
            "check -r photos",
            "check a b",
            "status --verify",
            "list --verify",
        ] {
            assert_eq!(p(bad), Line::Unknown, "{bad}");
        }
    }
}
