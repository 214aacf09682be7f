//! `strait check [--multicluster]`: ordered checks of an installation, printed as ✓ (ok),
//! ‼ (warning) and × (failure, with a hint saying what to do); any failure exits non-zero.
//!
//! ```text
//!  control plane   Deployment available ─ anchors valid ─ issuer valid and under the anchors
//!  multicluster    gateway available ─ mirror controller leader
//!  link <cluster>  served ─ credentials present ─ reach the remote API ─ exact rights ─
//!                  same anchors ─ gateway alive
//!  mirrors         every mirror has ready endpoints ─ none orphaned
//! ```
//!
//! The link checks read the remote cluster only through the Link's own credentials, so they
//! see what the mirror controller sees. `--wait` runs the checks again until they pass.

mod control_plane;
mod links;
mod rights;

use super::{KubeArgs, TableOutput};
use anyhow::Context as _;
use serde::Serialize;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

/// Warn this long before a certificate or token expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(60 * 24 * 3600);

/// `strait check`
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Also check the multicluster extension, every Link and every mirror.
    #[arg(long)]
    pub multicluster: bool,
    /// The control plane's namespace (here and in linked clusters).
    #[arg(long, default_value = strait_core::identity::DEFAULT_CONTROL_NAMESPACE)]
    pub namespace: String,
    /// The multicluster namespace.
    #[arg(long, default_value = super::link::DEFAULT_NAMESPACE)]
    pub multicluster_namespace: String,
    /// Run the checks again until they all pass or this long has passed (`0s`: once).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub wait: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: TableOutput,
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Failure,
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub group: String,
    pub check: String,
    pub result: Level,
    /// What was found, when it says more than the check's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What to do about a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The outcomes in the order the checks ran.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Outcome>,
}

impl Report {
    fn push(
        &mut self,
        group: &str,
        check: &str,
        result: Level,
        detail: Option<String>,
        hint: Option<String>,
    ) {
        self.checks.push(Outcome {
            group: group.into(),
            check: check.into(),
            result,
            detail,
            hint,
        });
    }

    pub(crate) fn ok(&mut self, group: &str, check: &str, detail: impl Into<Option<String>>) {
        self.push(group, check, Level::Ok, detail.into(), None);
    }

    pub(crate) fn warn(
        &mut self,
        group: &str,
        check: &str,
        detail: String,
        hint: impl Into<String>,
    ) {
        self.push(
            group,
            check,
            Level::Warning,
            Some(detail),
            Some(hint.into()),
        );
    }

    pub(crate) fn fail(
        &mut self,
        group: &str,
        check: &str,
        detail: String,
        hint: impl Into<String>,
    ) {
        self.push(
            group,
            check,
            Level::Failure,
            Some(detail),
            Some(hint.into()),
        );
    }

    /// Whether no check failed (warnings pass).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.result != Level::Failure)
    }

    /// The report for a person: groups under headers, one line a check, hints indented.
    pub fn render(&self, colour: bool) -> String {
        let paint = |code: &str, s: &str| {
            if colour {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_owned()
            }
        };
        let mut out = String::new();
        let mut group = None;
        for c in &self.checks {
            if group != Some(&c.group) {
                if group.is_some() {
                    out.push('\n');
                }
                out.push_str(&format!(
                    "{}\n{}\n",
                    c.group,
                    "-".repeat(c.group.chars().count())
                ));
                group = Some(&c.group);
            }
            let mark = match c.result {
                Level::Ok => paint("32", "✓"),
                Level::Warning => paint("33", "‼"),
                Level::Failure => paint("31", "×"),
            };
            out.push_str(&format!("{mark} {}", c.check));
            if let Some(d) = &c.detail {
                out.push_str(&format!(": {d}"));
            }
            out.push('\n');
            if let Some(h) = &c.hint {
                out.push_str(&format!("    see: {h}\n"));
            }
        }
        let verdict = if self.passed() {
            paint("32", "✓")
        } else {
            paint("31", "×")
        };
        out.push_str(&format!("\nStatus check results are {verdict}\n"));
        out
    }
}

/// Runs every check once.
pub async fn report(client: &kube::Client, args: &CheckArgs) -> Report {
    let mut r = Report::default();
    control_plane::check(client, &args.namespace, &mut r).await;
    if args.multicluster {
        links::check(
            client,
            &args.namespace,
            &args.multicluster_namespace,
            &mut r,
        )
        .await;
    }
    r
}

/// `strait check`: prints the report; an error (non-zero exit) when a check failed.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let client = args.kube.client().await?;
    let deadline = Instant::now() + args.wait;
    let progress = std::io::stderr().is_terminal();
    let report = loop {
        if progress {
            eprint!("\r… checking{}", " ".repeat(20));
        }
        let report = report(&client, &args).await;
        if report.passed() || Instant::now() >= deadline {
            break report;
        }
        if progress {
            let failing = report
                .checks
                .iter()
                .filter(|c| c.result == Level::Failure)
                .count();
            eprint!(
                "\r… {failing} check(s) failing; retrying for up to {}",
                humantime::format_duration(Duration::from_secs(
                    deadline.saturating_duration_since(Instant::now()).as_secs()
                ))
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    if progress {
        eprint!("\r{}\r", " ".repeat(72));
    }
    match args.output {
        TableOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("writing JSON")?
        ),
        TableOutput::Table => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            print!("{}", report.render(colour));
        }
    }
    anyhow::ensure!(
        report.passed(),
        "some checks failed; each says what to do above"
    );
    Ok(())
}

/// "in 3 days" / "2 days ago", for expiry details.
pub(crate) fn until(t: std::time::SystemTime) -> String {
    let now = std::time::SystemTime::now();
    let day = |d: Duration| d.as_secs() / 86_400;
    match t.duration_since(now) {
        Ok(d) if d.as_secs() >= 2 * 86_400 => format!("in {} days", day(d)),
        Ok(d) => format!(
            "in {}",
            humantime::format_duration(Duration::from_secs(d.as_secs()))
        ),
        Err(e) => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(e.duration().as_secs()))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_groups_checks_and_fails_on_any_failure() {
        let mut r = Report::default();
        r.ok("control plane", "the control plane is available", None);
        r.warn(
            "control plane",
            "the issuer is valid",
            "expires in 12 days".into(),
            "rotate it",
        );
        assert!(r.passed(), "warnings pass");
        r.fail(
            "link east",
            "the credentials Secret is present",
            "missing".into(),
            "re-run link",
        );
        assert!(!r.passed());
        let out = r.render(false);
        assert_eq!(
            out,
            "control plane\n-------------\n\
             ✓ the control plane is available\n\
             ‼ the issuer is valid: expires in 12 days\n    see: rotate it\n\n\
             link east\n---------\n\
             × the credentials Secret is present: missing\n    see: re-run link\n\n\
             Status check results are ×\n"
        );
        assert!(r.render(true).contains("\x1b[31m×\x1b[0m"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][2]["result"], "failure");
        assert_eq!(json["checks"][0].get("hint"), None);
    }
}
