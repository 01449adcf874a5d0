//! The classic interactive prompt: PUT, GET, LIST, DELETE and EXIT in any
//! case, one command per line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use vault_client::vault::Vault;

use crate::args::Command;
use crate::commands::run_command;

const PROMPT_HELP: &str = "commands: PUT FILE..., GET NAME [PATH], LIST, DELETE NAME, EXIT";

/// Reads commands until EXIT or the end of input; returns the status of
/// the last command.
pub async fn interactive(vault: &Vault) -> i32 {
    let tty = std::io::stdin().is_terminal();
    if tty {
        println!("{PROMPT_HELP}");
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut status = 0;
    loop {
        if tty {
            print!("vault> ");
            let _ = std::io::stdout().flush();
        }
        let Some(line) = rx.recv().await else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((cmd, args)) = words.split_first() else {
            continue;
        };
        let command = match (cmd.to_ascii_uppercase().as_str(), args) {
            ("EXIT" | "QUIT", _) => break,
            ("HELP" | "?", _) => {
                println!("{PROMPT_HELP}");
                continue;
            }
            ("PUT", files) if !files.is_empty() => Command::Put {
                files: files.iter().map(PathBuf::from).collect(),
            },
            ("GET", [name]) => Command::Get {
                name: name.to_string(),
                output: None,
                force: false,
            },
            ("GET", [name, path]) => Command::Get {
                name: name.to_string(),
                output: Some(PathBuf::from(path)),
                force: false,
            },
            ("LIST" | "LS", []) => Command::List,
            ("DELETE" | "DEL" | "RM", [name]) => Command::Delete {
                name: name.to_string(),
            },
            _ => {
                eprintln!("unknown command: {line}\n{PROMPT_HELP}");
                status = 1;
                continue;
            }
        };
        status = run_command(vault, command, false, None).await;
    }
    status
}
