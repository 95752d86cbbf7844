//! Passphrases and confirmations: from a terminal without echo, or from standard input for
//! scripts; never from the command line, where other users and shell histories see them.

use std::io::{BufRead, IsTerminal, Write};

use zeroize::Zeroizing;

use super::exit::CliError;

/// The environment variable `kmsctl login` reads the user's passphrase from.
pub const PASSPHRASE_ENV: &str = "KMSCTL_PASSPHRASE";
/// How many characters of a preview's digest confirm it at the prompt.
pub const CONFIRM_PREFIX_LEN: usize = 8;

/// Where a passphrase comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The first line of standard input.
    Stdin,
    /// The terminal, without echo.
    Terminal,
}

impl Source {
    pub fn from_flag(stdin: bool) -> Source {
        if stdin {
            Source::Stdin
        } else {
            Source::Terminal
        }
    }
}

/// The first line of standard input, without its line end.
fn stdin_line(what: &str) -> Result<Zeroizing<String>, CliError> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::usage(format!("reading the {what} from standard input: {e}")))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    Ok(trimmed)
}

fn no_terminal(what: &str) -> CliError {
    CliError::Usage {
        message: format!("no terminal to ask for the {what}"),
        help: Some("pass --passphrase-stdin and write it to standard input".into()),
    }
}

fn terminal_line(prompt: &str, what: &str) -> Result<Zeroizing<String>, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(no_terminal(what));
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|e| CliError::usage(format!("reading the {what} from the terminal: {e}")))
}

fn non_empty(secret: Zeroizing<String>, what: &str) -> Result<Zeroizing<String>, CliError> {
    if secret.is_empty() {
        return Err(CliError::usage(format!("the {what} is empty")));
    }
    Ok(secret)
}

/// An existing passphrase (a login, a quorum member's approval). `what` names it without an
/// article, e.g. `passphrase of quorum member m1`.
pub fn passphrase(
    source: Source,
    prompt: &str,
    what: &str,
    env: Option<&str>,
) -> Result<Zeroizing<String>, CliError> {
    let secret = match source {
        Source::Stdin => stdin_line(what)?,
        Source::Terminal => match env.and_then(|name| std::env::var(name).ok()) {
            Some(value) => Zeroizing::new(value),
            None => terminal_line(prompt, what)?,
        },
    };
    non_empty(secret, what)
}

/// A new passphrase (a user's, an agent's, a KMA's): asked twice at the terminal, or read once
/// from standard input.
pub fn new_passphrase(source: Source, what: &str) -> Result<Zeroizing<String>, CliError> {
    let secret = match source {
        Source::Stdin => stdin_line(what)?,
        Source::Terminal => {
            let first = terminal_line(&format!("New {what}: "), what)?;
            let second = terminal_line(&format!("Repeat the {what}: "), what)?;
            if *first != *second {
                return Err(CliError::usage(format!("the two entries of the {what} differ")));
            }
            first
        }
    };
    non_empty(secret, what)
}

/// Overwrites a passphrase copied into a request body once the request is sent.
pub fn wipe(mut secret: String) {
    zeroize::Zeroize::zeroize(&mut secret);
}

/// Whether `given` confirms `digest`: at least its first 8 characters, case aside.
pub fn confirms(given: &str, digest: &str) -> bool {
    let given = given.trim().to_ascii_lowercase();
    let digest = digest.to_ascii_lowercase();
    given.chars().count() >= CONFIRM_PREFIX_LEN.min(digest.chars().count())
        && digest.starts_with(&given)
}

/// Whether the terminal can be asked to confirm.
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks at the terminal for the digest's first characters; true when they match.
pub fn ask_confirmation(digest: &str) -> Result<bool, CliError> {
    let mut stderr = std::io::stderr().lock();
    let prompt = format!(
        "Type the digest's first {CONFIRM_PREFIX_LEN} characters to confirm (anything else \
         cancels): "
    );
    stderr
        .write_all(prompt.as_bytes())
        .and_then(|()| stderr.flush())
        .map_err(|e| CliError::Other { message: format!("writing the prompt: {e}"), help: None })?;
    drop(stderr);
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::usage(format!("reading the confirmation: {e}")))?;
    Ok(confirms(&line, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setup: confirmations of a digest. Expectation: 8 or more leading characters confirm,
    /// fewer or other characters do not.
    #[test]
    fn o9_a_confirmation_needs_eight_leading_digest_characters() {
        let digest = "0123456789abcdef";
        assert!(confirms("01234567", digest));
        assert!(confirms("0123456789ABCDEF", digest));
        assert!(confirms(" 01234567\n", digest));
        assert!(!confirms("0123456", digest));
        assert!(!confirms("11234567", digest));
        assert!(!confirms("0123456789abcdef0", digest));
        assert!(!confirms("", digest));
    }
}
