//! Operations that lose data carry out only a confirmed impact preview (SPEC O8, O9).
//!
//! 1. The request goes out without `confirm`: the cluster answers with the preview (the keys,
//!    every data unit that loses access, and those outside the selection that share the keys,
//!    flagged as the ripple effect) and its digest. Nothing changes.
//! 2. The preview is printed. It is confirmed by typing the digest's first 8 characters at the
//!    prompt, or beforehand with `--confirm DIGEST` (8 or more leading characters). Without a
//!    terminal and without `--confirm`, kmsctl stops here with exit code 5.
//! 3. The request goes out again with the preview's digest as `confirm`; the cluster carries it
//!    out only if the impact is still the one previewed, else it answers with the new preview.

use serde::Serialize;

use super::context::{out, Ctx};
use super::exit::CliError;
use super::prompt;
use super::render;
use crate::api::{ImpactPreview, PreviewOrDone};

/// Previews, confirms, then carries out `path`; `body(confirm)` builds the request.
pub async fn preview_then_confirm<B: Serialize>(
    ctx: &Ctx,
    path: &str,
    action: &str,
    confirm: Option<&str>,
    body: impl Fn(Option<String>) -> B,
) -> Result<(), CliError> {
    let preview = match ctx.client.preview_or_done(path, &body(None)).await? {
        PreviewOrDone::Preview(preview) => preview,
        PreviewOrDone::Done(done) => {
            // The contract says an unconfirmed request only previews; say so if one did not.
            super::context::note("warning: the cluster carried this out without a preview");
            return ctx.done(&format!("{action}: done"), &done);
        }
    };
    if !ctx.json {
        out(&render::impact_preview(&preview, action))?;
    }
    let confirmed = match confirm {
        Some(given) if prompt::confirms(given, &preview.digest) => true,
        Some(given) => return Err(stale(ctx, &preview, given)),
        None if !ctx.json && prompt::can_ask() => prompt::ask_confirmation(&preview.digest)?,
        None => return Err(needed(ctx, &preview)),
    };
    if !confirmed {
        return Err(CliError::ConfirmationNeeded {
            message: "not confirmed: nothing was changed".into(),
            help: confirm_help(&preview),
        });
    }
    match ctx.client.preview_or_done(path, &body(Some(preview.digest.clone()))).await? {
        PreviewOrDone::Done(done) => ctx.done(&format!("{action}: done"), &done),
        PreviewOrDone::Preview(changed) => {
            if !ctx.json {
                out("\nThe impact changed since the preview; the new one:\n\n")?;
                out(&render::impact_preview(&changed, action))?;
            }
            Err(needed_with(
                ctx,
                &changed,
                "the impact changed since the preview: nothing was changed",
            ))
        }
    }
}

fn confirm_help(preview: &ImpactPreview) -> String {
    let prefix: String = preview.digest.chars().take(prompt::CONFIRM_PREFIX_LEN).collect();
    format!("check the preview, then run the same command with --confirm {prefix}")
}

fn needed(ctx: &Ctx, preview: &ImpactPreview) -> CliError {
    needed_with(
        ctx,
        preview,
        "this needs a confirmation of its impact preview: nothing was changed",
    )
}

fn needed_with(ctx: &Ctx, preview: &ImpactPreview, message: &str) -> CliError {
    print_json_preview(ctx, preview);
    CliError::ConfirmationNeeded { message: message.into(), help: confirm_help(preview) }
}

fn stale(ctx: &Ctx, preview: &ImpactPreview, given: &str) -> CliError {
    print_json_preview(ctx, preview);
    CliError::ConfirmationNeeded {
        message: format!(
            "--confirm {} does not match the preview's digest {}: the impact changed, or the \
             digest is another preview's; nothing was changed",
            given.trim(),
            preview.digest
        ),
        help: confirm_help(preview),
    }
}

/// With `--json`, the preview a script needs to confirm is what stdout gets.
fn print_json_preview(ctx: &Ctx, preview: &ImpactPreview) {
    if ctx.json {
        // Printing the preview is best effort: the exit code already says what happened.
        let _ = out(&render::json(&PreviewOrDone::Preview(preview.clone())));
    }
}
