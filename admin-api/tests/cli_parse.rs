//! Argument parsing of every `kmsctl` subcommand (SPEC U1), without a cluster: each command line
//! an operator or a script would type parses, and wrong ones fail with clap's usage error.

use admin_api::cli::{Cli, Command};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

fn parses(line: &str) -> Cli {
    let words = std::iter::once("kmsctl").chain(line.split_whitespace());
    match Cli::try_parse_from(words) {
        Ok(cli) => cli,
        Err(e) => panic!("`kmsctl {line}` does not parse:\n{e}"),
    }
}

fn fails(line: &str) -> ErrorKind {
    let words = std::iter::once("kmsctl").chain(line.split_whitespace());
    match Cli::try_parse_from(words) {
        Ok(cli) => panic!("`kmsctl {line}` parsed as {cli:?}"),
        Err(e) => e.kind(),
    }
}

/// Setup: the whole command tree. Expectation: clap's own consistency checks pass (no
/// conflicting names, defaults that parse, groups that exist).
#[test]
fn u1_command_tree_is_consistent() {
    Cli::command().debug_assert();
}

/// One command line per API operation (and per variant worth telling apart).
const LINES: &[&str] = &[
    "login --address kma1:8443 --address kma2:8443 --ca ca.pem --user alice",
    "login --passphrase-stdin",
    "logout",
    "logout --forget",
    "profile show",
    "profile list",
    "status",
    "openapi",
    "completion bash",
    "completion zsh",
    "completion fish",
    "site list",
    "site create paris",
    "site delete paris",
    "kma list",
    "kma create kma4 --site paris --passphrase-stdin",
    "kma delete kma4",
    "kma lock kma2",
    "kma unlock kma2",
    "kma disable-autonomous-unlock kma2",
    "settings show",
    "settings security --passphrase-len-min 12 --login-throttle 5m",
    "settings security --quorum-operation-ttl 1d --login-failures-max 3",
    "settings key-pool --low-water 100 --high-water 1000",
    "settings key-pool --high-water 1000",
    "user list",
    "user create bob --role operator --role auditor --passphrase-stdin",
    "user roles bob --role backup-operator",
    "user enable bob",
    "user disable bob",
    "user passphrase bob --passphrase-stdin",
    "user delete bob",
    "quorum show",
    "quorum start unlock-kma kma2 --ttl 12h",
    "quorum start restore-from-backup 3",
    "quorum cancel 7",
    "quorum approve 7 --member m1 --min-index 42 --passphrase-stdin",
    "quorum approve --member m1 --unlock kma2:8443 --passphrase-stdin",
    "quorum approve --member m1 --unlock kma2:8443 --ca ca.pem",
    "policy list",
    "policy create monthly --encryption-period 30d --cryptoperiod 1y --allow-export",
    "policy flags monthly --allow-import true",
    "policy flags monthly --allow-export false --allow-import true",
    "policy delete monthly",
    "group list",
    "group create backups --policy monthly",
    "group delete backups",
    "agent list",
    "agent list --site paris --enabled true --group backups --limit 10",
    "agent list --all",
    "agent show drive-1",
    "agent create drive-1 --site paris --passphrase-stdin",
    "agent passphrase drive-1 --passphrase-stdin",
    "agent enable drive-1",
    "agent disable drive-1",
    "agent site drive-1 frankfurt",
    "agent delete drive-1",
    "agent add-group drive-1 backups",
    "agent remove-group drive-1 backups",
    "agent default-group drive-1 backups",
    "agent enroll-kmip library-1 --csr library-1.csr --out library-1.pem",
    "agent kmip-rights library-1 --revoke-destroy on",
    "agent kmip-rights library-1 --revoke-destroy off",
    "data-unit list --tag VOL001",
    "data-unit list --state needs-rekey --all",
    "data-unit show a001",
    "data-unit destroy-keys a001 a002 --option deactivated-only",
    "data-unit destroy-keys --from-file units.txt --option compromised-only --confirm 01234567",
    "data-unit destroy-keys a001 --option deactivated-and-compromised",
    "data-unit change-group a001 --group archive --confirm 0123456789abcdef",
    "key list --state deactivated --group backups --data-unit a001",
    "key list --all",
    "key list --after c0ffee --limit 5",
    "key show k1",
    "key compromise k1 k2",
    "key compromise --from-file -",
    "key destroy k1 --confirm 01234567",
    "backup list",
    "backup mark-destroyed 3",
    "backup schedule --interval 1d --kma kma1",
    "backup schedule --off",
    "audit list --kind login --actor user:alice --since 2024-03-01 --until 12h",
    "audit list --all",
    "audit export",
    "audit export --kind command --after 10.3",
    "audit verify",
    "audit verify --addresses-all",
];

/// Setup: one command line per API operation. Expectation: each parses.
#[test]
fn u1_every_subcommand_parses() {
    for line in LINES {
        parses(line);
    }
}

/// Setup: the global flags before and after the subcommand. Expectation: both places work.
#[test]
fn u1_global_flags_go_anywhere() {
    let cli = parses("--json --profile prod key list");
    assert!(cli.global.json);
    assert_eq!(cli.global.profile, "prod");
    let cli = parses("key list --json --profile prod --home /tmp/k");
    assert!(cli.global.json);
    assert_eq!(cli.global.home.as_deref(), Some(std::path::Path::new("/tmp/k")));
    assert!(matches!(cli.command, Command::Key(_)));
}

/// Setup: durations people mistype. Expectation: a value error naming the problem.
#[test]
fn o1_bad_durations_are_usage_errors() {
    assert_eq!(
        fails("policy create p --encryption-period 30 --cryptoperiod 1y"),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        fails("policy create p --encryption-period 30d --cryptoperiod 1mo"),
        ErrorKind::ValueValidation
    );
    assert_eq!(fails("quorum start unlock-kma kma2 --ttl soon"), ErrorKind::ValueValidation);
    let words = ["kmsctl", "backup", "schedule", "--interval", "1.5d"];
    let message = Cli::try_parse_from(words).unwrap_err().to_string();
    assert!(message.contains("is not a whole number followed by a unit"), "{message}");
}

/// Setup: command lines missing what they need or giving what is not allowed. Expectation:
/// clap refuses them (exit code 2).
#[test]
fn u1_wrong_command_lines_are_refused() {
    assert_eq!(fails("key list --state bogus"), ErrorKind::InvalidValue);
    assert_eq!(fails("user create bob"), ErrorKind::MissingRequiredArgument);
    assert_eq!(fails("user create bob --role admin"), ErrorKind::InvalidValue);
    assert_eq!(fails("data-unit destroy-keys a001"), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        fails("data-unit destroy-keys --option deactivated-only"),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(fails("data-unit destroy-keys a1 --option some"), ErrorKind::InvalidValue);
    assert_eq!(fails("settings security"), ErrorKind::MissingRequiredArgument);
    assert_eq!(fails("settings key-pool"), ErrorKind::MissingRequiredArgument);
    assert_eq!(fails("policy flags p"), ErrorKind::MissingRequiredArgument);
    assert_eq!(fails("backup schedule"), ErrorKind::MissingRequiredArgument);
    assert_eq!(fails("backup schedule --off --interval 1d"), ErrorKind::ArgumentConflict);
    assert_eq!(fails("key list --all --limit 5"), ErrorKind::ArgumentConflict);
    assert_eq!(fails("quorum start reboot kma2"), ErrorKind::InvalidValue);
    assert_eq!(fails("quorum cancel seven"), ErrorKind::ValueValidation);
    assert_eq!(fails("completion tcsh"), ErrorKind::InvalidValue);
    assert_eq!(fails("agent kmip-rights l1 --revoke-destroy yes"), ErrorKind::InvalidValue);
    assert_eq!(fails("agent enroll-kmip l1 --csr l1.csr"), ErrorKind::MissingRequiredArgument);
}

/// Setup: `quorum approve` with an operation ID, with `--unlock`, with both, with neither
/// (issue 16 point 5). Expectation: exactly one of them; `--ca` and `--min-index` only where
/// they mean something.
#[test]
fn s4_quorum_approve_takes_an_operation_or_an_unlock_not_both() {
    use admin_api::cli::security::QuorumCommand;
    let Command::Quorum(QuorumCommand::Approve(args)) =
        parses("quorum approve --member m1 --unlock kma2:8443 --ca ca.pem").command
    else {
        panic!("not quorum approve");
    };
    assert_eq!((args.id, args.unlock.as_deref()), (None, Some("kma2:8443")));
    assert_eq!(args.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    let Command::Quorum(QuorumCommand::Approve(args)) =
        parses("quorum approve 7 --member m1").command
    else {
        panic!("not quorum approve");
    };
    assert_eq!((args.id, args.unlock, args.min_index), (Some(7), None, 0));
    assert_eq!(
        fails("quorum approve 7 --member m1 --unlock kma2:8443"),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(fails("quorum approve --member m1"), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        fails("quorum approve --member m1 --unlock kma2:8443 --min-index 4"),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(fails("quorum approve 7 --member m1 --ca ca.pem"), ErrorKind::ArgumentConflict);
    assert_eq!(fails("quorum approve --member m1 --ca ca.pem"), ErrorKind::MissingRequiredArgument);
    assert_eq!(fails("quorum approve --unlock kma2:8443"), ErrorKind::MissingRequiredArgument);
}

/// Setup: passphrases on the command line. Expectation: no flag takes one.
#[test]
fn s2_no_command_takes_a_passphrase_argument() {
    assert_eq!(fails("login --user alice --passphrase secret"), ErrorKind::UnknownArgument);
    assert_eq!(fails("user create bob --role operator --passphrase x"), ErrorKind::UnknownArgument);
    assert_eq!(fails("agent create d1 --site paris --passphrase x"), ErrorKind::UnknownArgument);
    assert_eq!(fails("quorum approve 7 --member m1 --passphrase x"), ErrorKind::UnknownArgument);
    let unlock = "quorum approve --member m1 --unlock kma2:8443 --passphrase x";
    assert_eq!(fails(unlock), ErrorKind::UnknownArgument);
}

/// Setup: the completion command for each shell. Expectation: a script naming the nouns.
#[test]
fn u1_completion_scripts_generate() {
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish]
    {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "kmsctl", &mut script);
        let script = String::from_utf8(script).unwrap();
        for noun in ["data-unit", "destroy-keys", "audit", "verify"] {
            assert!(script.contains(noun), "{shell:?} completion lacks {noun}");
        }
    }
}

/// Setup: `--help`. Expectation: the exit codes are listed there.
#[test]
fn u1_help_documents_the_exit_codes() {
    let help = Cli::command().render_long_help().to_string();
    for line in ["3  refused by the cluster", "5  confirmation needed", "7  not logged in"] {
        assert!(help.contains(line), "help lacks `{line}`:\n{help}");
    }
}
