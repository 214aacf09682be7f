//! A thousand exported Services: all mirrored, with a bounded number of writes a mirror, and a
//! Link object whose size does not grow with the number mirrored.

use crate::mirror_support::*;
use crate::start_controller;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, PostParams};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_at_scale() -> Res {
    init("warn");
    let (west, east) = clusters(&["scale"], &["scale"]).await?;
    let (w, e) = (west.client(), east.client());
    let pki = pki()?;
    let gw = gateway("127.0.0.1".parse()?, &pki.good).await?;
    let _ = gw.addr;
    // The gateway address only lands in EndpointSlices; the probe goes to loopback via the
    // address below, which must be a valid endpoint IP, so use a benchmark-range address with
    // no listener: the gateway is reported down, which does not matter for counting mirrors.
    let east_gw = IpAddr::V4(east.host_addr());
    let links = put_link(
        &west,
        &east,
        &link("east", "east-credentials", east_gw, 1, GW_ID)?,
    )
    .await?;
    let ctl = start_controller(w.clone(), &pki.anchor_pem);

    let create = |from: usize, to: usize| {
        let e = e.clone();
        async move {
            let api = Api::<Service>::namespaced(e, "scale");
            let results: Vec<_> = futures::stream::iter(from..to)
                .map(|i| {
                    let api = api.clone();
                    async move {
                        api.create(
                            &PostParams::default(),
                            &service("scale", &format!("s{i}"), 80, &[EXPORTED], None)?,
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            results.into_iter().collect::<Res<Vec<()>>>()
        }
    };
    let link_size = || async {
        let l = links.get("east").await.ok()?;
        Some(serde_json::to_vec(&l).ok()?.len())
    };
    create(0, 10).await?;
    wait_for("10 mirrored", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.mirrored == 10)
            .map(|_| ())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let size10 = link_size().await.ok_or("Link")?;
    let writes10 = ctl.metrics.writes();

    let start = Instant::now();
    create(10, 1000).await?;
    let created = start.elapsed();
    wait_for("1000 mirrored", Duration::from_secs(300), || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.mirrored == 1000)
            .map(|_| ())
    })
    .await?;
    let converged = start.elapsed();
    let (svcs, slices) = our_mirrors(&w).await?;
    assert_eq!((svcs.len(), slices.len()), (1000, 1000));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let size1000 = link_size().await.ok_or("Link")?;
    let writes = ctl.metrics.writes() - writes10;
    println!(
        "1,000 exported services: created in east in {created:?}, all mirrored in west after {converged:?}; \
         {writes} local writes for 990 new mirrors ({:.2} per mirror); Link object {size10} B with 10 mirrored, {size1000} B with 1,000",
        writes as f64 / 990.0
    );
    assert!(
        size1000 <= size10 + 300,
        "Link grew from {size10} to {size1000} bytes"
    );
    let _ = Namespace::default();
    Ok(())
}
