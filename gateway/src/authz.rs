//! Who may pass the gateway.
//!
//! By default every identity that chains to the trust anchor may pass (the TLS handshake has
//! already checked that). An operator narrows it with an allow-list file: one pattern per
//! line, `#` starts a comment. A pattern is an identity name, or one with leading `*` labels
//! each matching exactly one DNS label (`*.payments.serviceaccount.identity.strait.cluster.local`),
//! or `*` alone (everyone). A file with no patterns lets nobody in.
//!
//! The file is polled for changes of its modification time or length (no inotify); a file
//! that fails to parse keeps the previous list and logs why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use tokio::sync::watch;

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// Labels from the left; `None` is a `*`.
    labels: Vec<Option<String>>,
}

/// Why a pattern or file is not an allow-list.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("line {line}: {pattern:?} is not a pattern: {why}")]
    BadPattern {
        line: usize,
        pattern: String,
        why: &'static str,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Pattern {
    fn parse(s: &str, line: usize) -> Result<Self, AuthzError> {
        let bad = |why| AuthzError::BadPattern {
            line,
            pattern: s.to_owned(),
            why,
        };
        if s == "*" {
            return Ok(Self { labels: vec![] });
        }
        let mut labels = Vec::new();
        let mut literal_seen = false;
        for l in s.split('.') {
            if l == "*" {
                if literal_seen {
                    return Err(bad("`*` may only stand for leading labels"));
                }
                labels.push(None);
            } else if strait_core::identity::is_dns_label(l) {
                literal_seen = true;
                labels.push(Some(l.to_owned()));
            } else {
                return Err(bad(
                    "each label is `*` or a DNS label (a-z, 0-9, '-', 1-63 chars)",
                ));
            }
        }
        if !literal_seen {
            return Err(bad(
                "a pattern needs at least one literal label (or is `*`)",
            ));
        }
        Ok(Self { labels })
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: &Identity) -> bool {
        if self.labels.is_empty() {
            return true;
        }
        let name = id.to_string();
        let parts: Vec<&str> = name.split('.').collect();
        parts.len() == self.labels.len()
            && parts
                .iter()
                .zip(&self.labels)
                .all(|(p, l)| l.as_deref().is_none_or(|l| l == *p))
    }
}

/// The identities allowed through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Everyone under the trust anchor (no allow-list configured).
    AllowAll,
    /// Only identities matching one of these patterns.
    AllowList(Vec<Pattern>),
}

impl Policy {
    /// Parses an allow-list file's contents.
    pub fn parse(text: &str) -> Result<Self, AuthzError> {
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if !line.is_empty() {
                patterns.push(Pattern::parse(line, i + 1)?);
            }
        }
        Ok(Self::AllowList(patterns))
    }

    /// Whether `id` may pass.
    pub fn allows(&self, id: &Identity) -> bool {
        match self {
            Self::AllowAll => true,
            Self::AllowList(ps) => ps.iter().any(|p| p.matches(id)),
        }
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, AuthzError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthzError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }
}

/// The current policy; cheap to read per connection.
pub type PolicyRx = watch::Receiver<Arc<Policy>>;

/// A policy that never changes.
pub fn fixed(policy: Policy) -> PolicyRx {
    let (tx, rx) = watch::channel(Arc::new(policy));
    // The receiver keeps the last value after the sender goes.
    drop(tx);
    rx
}

/// Loads `path` (failing if the first load fails) and polls it every `period` until
/// `shutdown` fires, publishing each good new version.
pub fn watch_file(
    path: PathBuf,
    period: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<PolicyRx, AuthzError> {
    let first = Policy::load(&path)?;
    let mut stamp = stamp(&path);
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp_of(&path);
            if now == stamp {
                continue;
            }
            stamp = now;
            match Policy::load(&path) {
                Ok(p) => {
                    tracing::info!(path = %path.display(), ?p, "allow-list reloaded");
                    tx.send_replace(Arc::new(p));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "allow-list not reloaded; keeping the previous one");
                }
            }
        }
    });
    Ok(rx)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    stamp_of(path)
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    #[test]
    fn wildcards_match_one_label() {
        let p = Policy::parse(
            "# payments only\n*.payments.serviceaccount.identity.strait.cluster.local\n",
        )
        .unwrap();
        assert!(p.allows(&id(
            "api.payments.serviceaccount.identity.strait.cluster.local"
        )));
        assert!(!p.allows(&id("api.shop.serviceaccount.identity.strait.cluster.local")));
        assert!(!Policy::parse("").unwrap().allows(&id(
            "api.payments.serviceaccount.identity.strait.cluster.local"
        )));
        assert!(
            Policy::parse("*")
                .unwrap()
                .allows(&id("api.shop.serviceaccount.identity.strait.cluster.local"))
        );
        let exact = Policy::parse("web.shop.serviceaccount.identity.strait.cluster.local").unwrap();
        assert!(exact.allows(&id("web.shop.serviceaccount.identity.strait.cluster.local")));
        assert!(!exact.allows(&id(
            "web2.shop.serviceaccount.identity.strait.cluster.local"
        )));
    }

    #[test]
    fn bad_patterns_name_their_line() {
        for bad in ["a.*.b", "*.*", "UPPER.case", "a..b"] {
            let e = Policy::parse(&format!("# ok\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("line 2"), "{e}");
        }
    }

    #[tokio::test]
    async fn reloads_on_change_and_keeps_the_old_list_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow");
        std::fs::write(&path, "*.a.serviceaccount.identity.strait.cluster.local\n").unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut rx = watch_file(path.clone(), Duration::from_millis(10), stop.clone()).unwrap();
        let b = id("x.b.serviceaccount.identity.strait.cluster.local");
        assert!(!rx.borrow().allows(&b));
        std::fs::write(
            &path,
            "*.b.serviceaccount.identity.strait.cluster.local\n\n",
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(rx.borrow().allows(&b));
        std::fs::write(&path, "not a ** pattern\n").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.borrow().allows(&b), "a bad file keeps the previous list");
        stop.cancel();
    }
}
