use super::*;

fn keys(ks: &[(&str, &str)]) -> BTreeSet<remote::Key> {
    ks.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn rd_slices_select_by_service_name() {
    let one_ns = keys(&[("shop", "web"), ("shop", "api")]);
    let (cfg, ns) = rd_slices_selector(&one_ns);
    assert_eq!(
        cfg.label_selector.as_deref(),
        Some("kubernetes.io/service-name in (api,web)")
    );
    assert_eq!(ns, Some("shop"));
    let two_ns = keys(&[("shop", "web"), ("billing", "web")]);
    let (cfg, ns) = rd_slices_selector(&two_ns);
    assert_eq!(
        cfg.label_selector.as_deref(),
        Some("kubernetes.io/service-name in (web)")
    );
    assert_eq!(ns, None);
    // Too many names for one selector: every slice, filtered as it arrives.
    let many: Vec<(String, String)> = (0..1000)
        .map(|i| ("shop".to_string(), format!("service-{i}")))
        .collect();
    let (cfg, _) = rd_slices_selector(&many.into_iter().collect());
    assert!(cfg.label_selector.is_none());
}

#[test]
fn unavailable_means_404_or_403() {
    let status = |code| {
        Box::new(kube::core::Status {
            code,
            ..Default::default()
        })
    };
    let e = watcher::Error::InitialListFailed(kube::Error::Api(status(404)));
    assert_eq!(unavailable(&e), Some(404));
    assert_eq!(
        unavailable(&watcher::Error::WatchError(status(403))),
        Some(403)
    );
    let e = watcher::Error::InitialListFailed(kube::Error::Api(status(500)));
    assert_eq!(unavailable(&e), None);
    assert_eq!(unavailable(&watcher::Error::NoResourceVersion), None);
}
