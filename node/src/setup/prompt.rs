//! Secrets typed in by people: the quickstart's passphrases and a joining KMA's passphrase.
//! Nothing typed here is echoed, logged or written anywhere.

use std::io::{BufRead, IsTerminal, Write};

use std::path::Path;
use zeroize::Zeroizing;

use crate::setup::{InitSecrets, QuorumMemberSecret};

fn line(prompt: &str) -> anyhow::Result<String> {
    print!("{prompt}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim().to_string())
}

/// A passphrase typed twice, not echoed.
fn new_passphrase(whose: &str) -> anyhow::Result<String> {
    loop {
        let first = rpassword::prompt_password(format!("passphrase for {whose}: "))?;
        if first.chars().count() < crate::setup::PASSPHRASE_LEN_MIN {
            eprintln!("at least {} characters, please", crate::setup::PASSPHRASE_LEN_MIN);
            continue;
        }
        let again = rpassword::prompt_password("again: ")?;
        if first == again {
            return Ok(first);
        }
        eprintln!("the two entries differ; once more");
    }
}

/// Shows the fingerprint of the CA a peer sent and asks whether it is the cluster's (the one
/// `kma init` printed on the first KMA). Refuses outright when no terminal can ask: a script
/// pins the CA with `--ca-fingerprint` instead.
pub fn confirm_ca_fingerprint(peer: &str, fingerprint: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "no --ca-fingerprint and no terminal to confirm the CA that {peer} sent: compare its \
             fingerprint {fingerprint} with the one `kma init` printed on the first KMA, then \
             pass it with --ca-fingerprint"
        );
    }
    println!("{peer} sent a cluster CA with SHA-256 fingerprint\n  {fingerprint}");
    let answer = line("is it the one `kma init` printed on the first KMA? (y/N): ")?;
    Ok(answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes"))
}

/// The quickstart asked on the terminal.
pub fn init_secrets() -> anyhow::Result<InitSecrets> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "no terminal to ask the quickstart's passphrases on: give them in a file with \
             --secrets-file (see docs/security.md)"
        );
    }
    println!("Quickstart of a new cluster. Passphrases are not echoed.");
    let officer = line("first Security Officer's user ID [admin]: ")?;
    let security_officer = if officer.is_empty() { "admin".to_string() } else { officer };
    let security_officer_passphrase = new_passphrase(&security_officer)?;
    let count: usize = line("number of quorum members (1-10) [1]: ")?.parse().unwrap_or(1);
    let mut quorum = Vec::new();
    for n in 1..=count.clamp(1, 10) {
        let id = line(&format!("ID of quorum member {n}: "))?;
        let passphrase = new_passphrase(&format!("quorum member '{id}'"))?;
        quorum.push(QuorumMemberSecret { id, passphrase });
    }
    let threshold: u8 = line(&format!("approvals needed (1-{count}) [1]: "))?.parse().unwrap_or(1);
    let autonomous = line("unlock this KMA by itself after a reboot (y/N): ")?;
    Ok(InitSecrets {
        security_officer,
        security_officer_passphrase,
        quorum,
        quorum_threshold: threshold,
        autonomous_unlock: autonomous.eq_ignore_ascii_case("y"),
    })
}

/// A joining KMA's passphrase: from a file, the environment, or the terminal.
pub fn join_passphrase(file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    if let Ok(passphrase) = std::env::var("KMS_JOIN_PASSPHRASE") {
        return Ok(passphrase);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("give the KMA's passphrase with --passphrase-file or $KMS_JOIN_PASSPHRASE");
    }
    Ok(rpassword::prompt_password("this KMA's one-time passphrase: ")?)
}

/// The shares of a local ceremony (restore, recovery from a lost majority): each quorum member
/// in turn types their ID and their own passphrase at this console, until `threshold` shares
/// opened. `open` checks a passphrase against that member's wrapped share (argon2id: slow on
/// purpose). With `from_stdin` (scripts, tests) the lines of standard input are read instead,
/// one `MEMBER-ID PASSPHRASE` a line; a wrong one there fails at once.
pub fn quorum_shares(
    members: &[String],
    threshold: u8,
    from_stdin: bool,
    open: impl Fn(&str, &str) -> anyhow::Result<security_core::Share>,
) -> anyhow::Result<Vec<security_core::Share>> {
    let needed = usize::from(threshold);
    let mut shares: Vec<security_core::Share> = Vec::new();
    let mut failures = 0;
    if !from_stdin && !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "no terminal for the quorum members to type their passphrases at: run this at the \
             KMA's console, or give them on standard input with --passphrases-stdin"
        );
    }
    if !from_stdin {
        println!(
            "{needed} of the quorum members ({}) now type their passphrases, each their own. \
             Nothing typed is echoed.",
            members.join(", ")
        );
    }
    let mut lines = std::io::stdin().lock().lines();
    while shares.len() < needed {
        let (member, passphrase) = if from_stdin {
            let Some(line) = lines.next().transpose()? else {
                anyhow::bail!(
                    "standard input ended after {} of the {needed} passphrases needed; \
                     nothing was changed",
                    shares.len()
                );
            };
            let line = Zeroizing::new(line);
            let (member, passphrase) = line.trim_end().split_once(' ').ok_or_else(|| {
                anyhow::anyhow!("each line of standard input is MEMBER-ID PASSPHRASE")
            })?;
            (member.to_string(), Zeroizing::new(passphrase.to_string()))
        } else {
            let member = line(&format!("quorum member ID ({} of {needed} given): ", shares.len()))?;
            let passphrase =
                Zeroizing::new(rpassword::prompt_password(format!("passphrase of '{member}': "))?);
            (member, passphrase)
        };
        if shares.iter().any(|share| share.member() == member) {
            eprintln!("'{member}' already gave their passphrase: the next member, please");
            continue;
        }
        match open(&member, &passphrase) {
            Ok(share) => {
                shares.push(share);
                eprintln!("'{member}': accepted ({} of {needed})", shares.len());
            }
            Err(error) if from_stdin => return Err(error.context("nothing was changed")),
            Err(error) => {
                failures += 1;
                eprintln!("{error:#}");
                if failures >= 5 {
                    anyhow::bail!("5 refused passphrases: stopping; nothing was changed");
                }
            }
        }
    }
    Ok(shares)
}
