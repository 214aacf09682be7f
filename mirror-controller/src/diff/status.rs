//! The Link status of a pass, from what the diff found and how the writes ended.

use super::Key;
use crate::plan::Plan;
use std::collections::HashMap;
use strait_k8s_api::LinkStatus;
use strait_k8s_api::link::{NOT_MIRRORED_CAP, NotMirrored, Reason};

/// The Link status of a pass: counts by reason, and the not-mirrored list sorted and capped
/// at [`NOT_MIRRORED_CAP`] (with a count of the rest). A mirror whose write failed
/// (`errors`, by mirror key) counts as `Error`, under its remote name.
pub(crate) fn status(
    plan: &Plan,
    mut not_mirrored: Vec<NotMirrored>,
    mirrored: &[Key],
    errors: &HashMap<Key, String>,
) -> LinkStatus {
    let mut status = LinkStatus::default();
    let mut ok = 0u32;
    for key in mirrored {
        match errors.get(key) {
            None => ok += 1,
            Some(msg) => not_mirrored.push(NotMirrored {
                namespace: key.0.clone(),
                name: key
                    .1
                    .strip_suffix(&format!("-{}", plan.cluster))
                    .unwrap_or(&key.1)
                    .to_string(),
                reason: Reason::Error,
                message: msg.chars().take(200).collect(),
            }),
        }
    }
    status.services.mirrored = ok;
    for n in &not_mirrored {
        match n.reason {
            Reason::InvalidService => status.services.invalid_service += 1,
            Reason::MissingNamespace => status.services.missing_namespace += 1,
            Reason::Error => status.services.error += 1,
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

    fn key(ns: &str, name: &str) -> Key {
        (ns.to_string(), name.to_string())
    }

    #[test]
    fn status_counts_by_reason_and_caps_the_not_mirrored_list() {
        let p = crate::diff::tests::plan(serde_json::json!({}));
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
            key("shop", "a-east"),
            key("shop", "b-east"),
            key("aaa", "c-east"),
        ];
        let errors = HashMap::from([(key("aaa", "c-east"), "x".repeat(300))]);
        let s = status(&p, not_mirrored, &mirrored, &errors);
        assert_eq!(
            (
                s.services.mirrored,
                s.services.invalid_service,
                s.services.missing_namespace,
                s.services.error
            ),
            (2, 120, 10, 1)
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
        let s = status(&p, Vec::new(), &mirrored[..1], &HashMap::new());
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
