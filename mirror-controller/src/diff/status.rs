//! The Link status of a pass, from what the diff found and how the writes ended.

use super::{Key, Mirrored, Mode};
use std::collections::HashMap;
use strait_k8s_api::LinkStatus;
use strait_k8s_api::link::{NOT_MIRRORED_CAP, NotMirrored, Reason};

/// The Link status of a pass: counts by reason and by mode, and the not-mirrored list sorted
/// and capped at [`NOT_MIRRORED_CAP`] (with a count of the rest). A mirror whose write failed
/// (`errors`, by mirror key) counts as `Error`, under its remote name. `mirrored` counts
/// remote Services; per-pod mirrors are counted apart, in `podMirrors`.
pub(crate) fn status(
    mut not_mirrored: Vec<NotMirrored>,
    mirrored: &[Mirrored],
    errors: &HashMap<Key, String>,
) -> LinkStatus {
    let mut status = LinkStatus::default();
    let s = &mut status.services;
    for m in mirrored {
        if let Some(msg) = errors.get(&m.key) {
            let message: String = msg.chars().take(200).collect();
            not_mirrored.push(NotMirrored {
                namespace: m.key.0.clone(),
                name: m.remote.clone(),
                reason: Reason::Error,
                message: match m.mode {
                    Mode::Pod => format!("{}: {message}", m.key.1),
                    _ => message,
                },
            });
            continue;
        }
        match m.mode {
            Mode::Gateway => s.through_gateway += 1,
            Mode::RemoteDiscovery => s.remote_discovery += 1,
            Mode::Headless => s.headless += 1,
            Mode::Pod => s.pod_mirrors += 1,
            Mode::Federated => s.federated += 1,
        }
    }
    s.mirrored = s.through_gateway + s.remote_discovery + s.headless;
    for n in &not_mirrored {
        match n.reason {
            Reason::InvalidService => status.services.invalid_service += 1,
            Reason::MissingNamespace => status.services.missing_namespace += 1,
            Reason::Error => status.services.error += 1,
            Reason::FederationConflict => status.services.federation_conflict += 1,
        }
    }
    not_mirrored.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let total = not_mirrored.len();
    not_mirrored.truncate(NOT_MIRRORED_CAP);
    status.not_mirrored_omitted = u32::try_from(total - not_mirrored.len()).unwrap_or(u32::MAX);
    status.not_mirrored = not_mirrored;
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrored(ns: &str, remote: &str, mode: Mode) -> Mirrored {
        let name = match mode {
            Mode::Pod => format!("{remote}-0-east"),
            _ => format!("{remote}-east"),
        };
        Mirrored {
            key: (ns.to_string(), name),
            remote: remote.to_string(),
            mode,
        }
    }

    #[test]
    fn status_counts_by_reason_and_caps_the_not_mirrored_list() {
        let nm = |i: usize, reason| NotMirrored {
            namespace: "shop".into(),
            name: format!("svc-{i:03}"),
            reason,
            message: "why".into(),
        };
        let mut not_mirrored: Vec<_> = (0..120)
            .rev()
            .map(|i| nm(i, Reason::InvalidService))
            .collect();
        not_mirrored.extend((120..130).map(|i| nm(i, Reason::MissingNamespace)));
        let mirrored = [
            mirrored("shop", "a", Mode::Gateway),
            mirrored("shop", "b", Mode::RemoteDiscovery),
            mirrored("shop", "db", Mode::Headless),
            mirrored("shop", "db", Mode::Pod),
            mirrored("aaa", "c", Mode::Gateway),
        ];
        let errors = HashMap::from([(mirrored[4].key.clone(), "x".repeat(300))]);
        let s = status(not_mirrored, &mirrored, &errors);
        let c = &s.services;
        assert_eq!(
            (c.mirrored, c.invalid_service, c.missing_namespace, c.error),
            (3, 120, 10, 1)
        );
        assert_eq!(
            (
                c.through_gateway,
                c.remote_discovery,
                c.headless,
                c.pod_mirrors
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(s.not_mirrored.len(), NOT_MIRRORED_CAP);
        assert_eq!(s.not_mirrored_omitted, 131 - NOT_MIRRORED_CAP as u32);
        // Sorted; a failed write is listed under its remote name, its message cut short.
        let first = &s.not_mirrored[0];
        assert_eq!(
            (first.namespace.as_str(), first.name.as_str()),
            ("aaa", "c")
        );
        assert_eq!((first.reason, first.message.len()), (Reason::Error, 200));
        assert_eq!(s.not_mirrored[1].name, "svc-000");
        assert_eq!(s.not_mirrored[99].name, "svc-098");
        // Nothing to report: an empty list, nothing omitted.
        let s = status(Vec::new(), &mirrored[..1], &HashMap::new());
        assert_eq!(
            (
                s.services.mirrored,
                s.not_mirrored.len(),
                s.not_mirrored_omitted
            ),
            (1, 0, 0)
        );
    }
}
