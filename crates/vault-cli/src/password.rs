//! Where passwords come from, and the legacy local MD5 check.
//!
//! The password comes from `--password-stdin` (first line; `rotate` reads
//! the new one from the second), `VAULT_PASSWORD`, a plain-text `Password:`
//! line of dfc.conf, or a prompt without echo. `rotate`'s new password comes
//! from the second stdin line, `VAULT_NEW_PASSWORD`, or two prompts.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context, Result};
use vault_client::config::{md5_hex, ClientConfig, PasswordSetting};
use vault_client::state::PendingRotation;
use zeroize::Zeroizing;

/// The password sources of one run.
pub struct Sources {
    stdin: Option<std::io::Lines<std::io::StdinLock<'static>>>,
}

impl Sources {
    /// With `--password-stdin`, passwords are read from standard input.
    pub fn new(password_stdin: bool) -> Self {
        Sources {
            stdin: password_stdin.then(|| std::io::stdin().lock().lines()),
        }
    }

    fn next_stdin(&mut self) -> Result<Option<Zeroizing<String>>> {
        let Some(lines) = self.stdin.as_mut() else {
            return Ok(None);
        };
        match lines.next() {
            Some(l) => Ok(Some(Zeroizing::new(
                l.context("failed to read standard input")?,
            ))),
            None => bail!("--password-stdin: standard input is empty"),
        }
    }

    /// The user's password.
    pub fn password(&mut self, cfg: &ClientConfig) -> Result<Zeroizing<String>> {
        if let Some(p) = self.next_stdin()? {
            return Ok(p);
        }
        if let Ok(p) = std::env::var("VAULT_PASSWORD") {
            return Ok(Zeroizing::new(p));
        }
        if let Some(PasswordSetting::Plain(p)) = &cfg.password {
            return Ok(p.clone());
        }
        prompt(&format!("Password for {}: ", cfg.username))
    }

    /// `rotate`'s new password.
    pub fn new_password(&mut self) -> Result<Zeroizing<String>> {
        if let Some(p) = self.next_stdin()? {
            return Ok(p);
        }
        if let Ok(p) = std::env::var("VAULT_NEW_PASSWORD") {
            return Ok(Zeroizing::new(p));
        }
        let a = prompt("New password: ")?;
        let b = prompt("New password again: ")?;
        if *a != *b {
            bail!("the new passwords do not match; nothing was changed");
        }
        Ok(a)
    }
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        bail!("no password: set VAULT_PASSWORD, use --password-stdin, or run on a terminal");
    }
    Ok(Zeroizing::new(
        rpassword::prompt_password(text).context("failed to read the password")?,
    ))
}

/// The legacy MD5 credential check: when dfc.conf's `Password:` line is a
/// digest, the password must match it before anything is sent
/// (plain-text lines are left to the nodes). While a rotation is pending,
/// the new password's digest matches too, and `rotate` itself is left to
/// the nodes: a half-finished rotation must never be locked out here.
pub fn passes_local_check(
    cfg: &ClientConfig,
    password: &str,
    pending: Option<&PendingRotation>,
    rotating: bool,
) -> bool {
    let Some(digest @ PasswordSetting::Md5(_)) = &cfg.password else {
        return true;
    };
    let pending_new = pending
        .and_then(|p| p.new_md5.as_deref())
        .is_some_and(|d| md5_hex(password.as_bytes()) == d);
    digest.matches(password) || pending_new || (rotating && pending.is_some())
}
