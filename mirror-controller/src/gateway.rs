//! The gateway of one Link as its mirrors see it: its addresses, resolved again when their
//! TTL runs out, and its liveness, probed every `probeSpec.period` (± 10 % jitter).
//!
//! A failed lookup keeps the previous addresses rather than emptying the mirrors. Liveness
//! starts unknown (counted as alive) and turns `false` only after `failureThreshold` failed
//! probes in a row; one success makes it `true` again.

use crate::plan::Plan;
use crate::{Context, probe, resolve, source_of};
use rand::Rng;
use std::sync::Arc;
use strait_k8s_api::LinkStatus;
use tokio::sync::watch;

/// The gateway as probed and resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct GatewayState {
    pub addrs: Vec<std::net::IpAddr>,
    /// `None` until known.
    pub alive: Option<bool>,
}

/// Resolves the gateway's addresses (again when the TTL runs out) and probes it.
pub(crate) async fn run(
    ctx: Arc<Context>,
    link: String,
    plan: Arc<Plan>,
    tx: watch::Sender<GatewayState>,
    status: watch::Sender<LinkStatus>,
) {
    let labels = crate::metrics::Metrics::link(&link);
    let mut next_resolve = tokio::time::Instant::now();
    let mut next_probe = tokio::time::Instant::now();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_resolve) => {
                let (addrs, next, errors) = resolve::resolve_all(&ctx.resolver, &plan.gateway).await;
                for e in &errors {
                    tracing::warn!(%link, error = %e, source = %source_of(e), "resolving the gateway failed");
                    ctx.metrics.error(&link, "resolve");
                }
                next_resolve = tokio::time::Instant::from_std(next);
                // A failed lookup keeps the previous addresses rather than emptying the mirrors.
                if errors.is_empty() || !addrs.is_empty() {
                    tx.send_if_modified(|g| {
                        let changed = g.addrs != addrs;
                        g.addrs = addrs.clone();
                        changed
                    });
                    status.send_if_modified(|s| {
                        let a: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                        let changed = s.gateway_addresses != a;
                        s.gateway_addresses = a;
                        changed
                    });
                }
            }
            _ = tokio::time::sleep_until(next_probe) => {
                let addrs = tx.borrow().addrs.clone();
                let mut result = Err("no gateway address resolved".to_string());
                for addr in addrs {
                    match probe::probe(ctx.tls.clone(), addr, plan.probe_port, &plan.probe_path, &plan.gateway_identity, plan.probe_timeout).await {
                        Ok(latency) => { result = Ok(latency); break; }
                        Err(e) => result = Err(format!("{e}: {}", source_of(&e))),
                    }
                }
                let alive = match result {
                    Ok(latency) => {
                        failures = 0;
                        let ms = latency.as_secs_f64() * 1000.0;
                        ctx.metrics.probe_latency_ms.get_or_create(&labels).observe(ms);
                        status.send_if_modified(|s| {
                            let v = Some(ms.round() as u64);
                            let changed = s.gateway_latency_ms != v;
                            s.gateway_latency_ms = v;
                            changed
                        });
                        true
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::debug!(%link, failures, error = %e, "gateway probe failed");
                        ctx.metrics.error(&link, "probe");
                        // Unknown stays unknown (alive) until the threshold is reached.
                        failures < plan.failure_threshold && tx.borrow().alive != Some(false)
                    }
                };
                ctx.metrics.gateway_alive.get_or_create(&labels).set(i64::from(alive));
                let known = tx.borrow().alive.is_some() || failures == 0 || !alive;
                if known {
                    tx.send_if_modified(|g| {
                        let changed = g.alive != Some(alive);
                        if changed {
                            tracing::info!(%link, alive, "gateway liveness changed");
                        }
                        g.alive = Some(alive);
                        changed
                    });
                    status.send_if_modified(|s| {
                        let changed = s.gateway_alive != Some(alive);
                        s.gateway_alive = Some(alive);
                        changed
                    });
                }
                let jitter = rand::rng().random_range(0.9..1.1);
                next_probe = tokio::time::Instant::now() + plan.probe_period.mul_f64(jitter);
            }
        }
    }
}
