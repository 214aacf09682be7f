//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas can run: only the
//! holder serves Links. Optimistic concurrency (resourceVersion) settles races.
//!
//! For a lease of duration `d` (the ratios of client-go's 15 s / 10 s / 2 s):
//!
//! - every replica tries to take or renew the lease every `d / 5` (the retry period);
//! - a follower takes a lease held by another replica only once the record has stayed the
//!   same for the record's own duration *on the follower's clock*, so no two machines'
//!   clocks are compared; a released lease (no holder) it takes at once;
//! - the leader gives up when it has not renewed for `2d / 3` (the renew deadline), counted
//!   from the start of its last successful attempt, so it stops before any follower may take
//!   over; each attempt is cut off at that deadline, and a paused process that wakes up past
//!   it stops without asking the API server;
//! - on shutdown the leader clears `holderIdentity` ([`Elector::release`]), so a follower
//!   takes over at its next try instead of after `d`.
//!
//! The decisions are the pure functions [`may_take`], [`renewed_spec`] and [`released_spec`].

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading lease {0}")]
    Get(String, #[source] kube::Error),
    #[error("writing lease {0}")]
    Write(String, #[source] kube::Error),
    #[error("lost lease {0} to {1}")]
    Lost(String, String),
    #[error("lease {0} not renewed for {1:?}; stopping before another replica may take it")]
    NotRenewed(String, Duration),
    #[error("releasing lease {0} timed out")]
    ReleaseTimeout(String),
}

/// One replica's view of the Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
    /// The record as last read, and when (on our clock) it was first seen like that.
    seen: Option<(LeaseSpec, Instant)>,
}

impl Elector {
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        holder: impl Into<String>,
        duration: Duration,
    ) -> Self {
        Self {
            api,
            name: name.into(),
            holder: holder.into(),
            duration,
            seen: None,
        }
    }

    /// How often every replica tries to take or renew the lease.
    pub fn retry_period(&self) -> Duration {
        self.duration / 5
    }

    /// How long the leader serves without a successful renewal.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Tries once to take or renew the lease; `Ok(true)` when we hold it.
    pub async fn try_acquire(&mut self) -> Result<bool, LeaseError> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| LeaseError::Get(self.name.clone(), e))?;
        let mut lease = existing.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: None,
        });
        let spec = lease.spec.clone().unwrap_or_default();
        let unchanged_for = match &self.seen {
            Some((seen, since)) if *seen == spec => since.elapsed(),
            _ => {
                self.seen = Some((spec.clone(), Instant::now()));
                Duration::ZERO
            }
        };
        if !may_take(&spec, &self.holder, unchanged_for, self.duration) {
            return Ok(false);
        }
        lease.spec = Some(renewed_spec(&spec, &self.holder, self.duration, now));
        let res = if lease.metadata.resource_version.is_some() {
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
        } else {
            self.api.create(&PostParams::default(), &lease).await
        };
        match res {
            Ok(written) => {
                self.seen = Some((written.spec.unwrap_or_default(), Instant::now()));
                Ok(true)
            }
            // Someone else wrote first; try again later.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(LeaseError::Write(self.name.clone(), e)),
        }
    }

    /// Waits until we hold the lease; returns when the successful attempt started, which is
    /// what [`Elector::hold`] counts the renew deadline from.
    pub async fn acquire(&mut self) -> Instant {
        loop {
            let started = Instant::now();
            match tokio::time::timeout(self.duration, self.try_acquire()).await {
                Ok(Ok(true)) => return started,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election failed; retrying"),
                Err(_) => tracing::warn!(lease = %self.name, "leader election timed out; retrying"),
            }
            tokio::time::sleep_until(started + self.retry_period()).await;
        }
    }

    /// Renews the lease every retry period; returns when it is lost, or when the renew
    /// deadline passes without a successful renewal since `renewed`.
    pub async fn hold(&mut self, mut renewed: Instant) -> LeaseError {
        let mut next = renewed + self.retry_period();
        loop {
            let deadline = renewed + self.renew_deadline();
            tokio::time::sleep_until(next.min(deadline)).await;
            let started = Instant::now();
            let left = deadline.saturating_duration_since(started);
            if left.is_zero() {
                return LeaseError::NotRenewed(self.name.clone(), started - renewed);
            }
            match tokio::time::timeout(left, self.try_acquire()).await {
                Ok(Ok(true)) => renewed = started,
                Ok(Ok(false)) => {
                    let to = self
                        .seen
                        .as_ref()
                        .and_then(|(s, _)| s.holder_identity.clone())
                        .unwrap_or_else(|| "another replica".into());
                    return LeaseError::Lost(self.name.clone(), to);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease failed; retrying"),
                Err(_) => tracing::warn!(lease = %self.name, "renewing the lease timed out"),
            }
            next = started + self.retry_period();
        }
    }

    /// Clears `holderIdentity` if we still hold the lease, so a follower need not wait for
    /// it to expire. Call it only once nothing of ours writes any more.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let attempt = async {
            let Some(mut lease) = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| LeaseError::Get(self.name.clone(), e))?
            else {
                return Ok(());
            };
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
                return Ok(());
            }
            lease.spec = Some(released_spec(&spec, Timestamp::now()));
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                // A 409: the record changed since we read it, so it is no longer ours.
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(LeaseError::Write(self.name.clone(), e)),
            }
        };
        tokio::time::timeout(self.renew_deadline(), attempt)
            .await
            .map_err(|_| LeaseError::ReleaseTimeout(self.name.clone()))?
    }
}

/// Whether `me` may write the lease whose record is `spec`, which this replica has seen
/// unchanged for `unchanged_for`: when nobody holds it, when we do, or when its holder has
/// not renewed it for its duration (ours, `own`, when the record has none).
pub fn may_take(spec: &LeaseSpec, me: &str, unchanged_for: Duration, own: Duration) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return true;
    }
    let ttl = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(own, Duration::from_secs);
    unchanged_for > ttl
}

/// The record `me` writes to take or renew the lease at `now`.
pub fn renewed_spec(prev: &LeaseSpec, me: &str, duration: Duration, now: Timestamp) -> LeaseSpec {
    let ours = prev.holder_identity.as_deref() == Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(whole_seconds(duration)),
        acquire_time: if ours {
            prev.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(prev.lease_transitions.unwrap_or(0) + i32::from(!ours)),
        ..Default::default()
    }
}

/// The record a leader writes at `now` to give the lease up.
pub fn released_spec(prev: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        acquire_time: None,
        renew_time: Some(MicroTime(now)),
        ..prev.clone()
    }
}

/// A duration in whole seconds for `leaseDurationSeconds`, rounded up so that followers
/// never wait less than we mean.
fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(4);

    fn held_by(holder: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: secs,
            ..Default::default()
        }
    }

    #[test]
    fn a_live_lease_of_another_replica_is_left_alone() {
        let spec = held_by(Some("a"), Some(4));
        assert!(!may_take(&spec, "b", Duration::ZERO, D));
        assert!(!may_take(&spec, "b", Duration::from_secs(4), D));
        assert!(may_take(&spec, "b", Duration::from_millis(4001), D));
    }

    #[test]
    fn a_free_or_own_lease_is_taken_at_once() {
        assert!(may_take(&held_by(None, Some(4)), "b", Duration::ZERO, D));
        assert!(may_take(
            &held_by(Some(""), Some(4)),
            "b",
            Duration::ZERO,
            D
        ));
        assert!(may_take(
            &held_by(Some("b"), Some(4)),
            "b",
            Duration::ZERO,
            D
        ));
    }

    #[test]
    fn a_record_without_a_duration_lasts_ours() {
        let spec = held_by(Some("a"), None);
        assert!(!may_take(&spec, "b", Duration::from_secs(3), D));
        assert!(may_take(&spec, "b", Duration::from_secs(5), D));
        let spec = held_by(Some("a"), Some(0));
        assert!(!may_take(&spec, "b", Duration::from_secs(3), D));
    }

    #[test]
    fn renewing_keeps_the_acquire_time_and_taking_counts_a_transition() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(1_002).unwrap();
        let taken = renewed_spec(&held_by(Some("a"), Some(4)), "b", D, t0);
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(t0)));
        let renewed = renewed_spec(&taken, "b", D, t1);
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t0)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        assert_eq!(renewed.lease_duration_seconds, Some(4));
    }

    #[test]
    fn a_released_lease_has_no_holder_and_is_free_for_anyone() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let held = renewed_spec(&LeaseSpec::default(), "a", D, t0);
        let released = released_spec(&held, t0);
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_transitions, held.lease_transitions);
        assert!(may_take(&released, "b", Duration::ZERO, D));
    }

    #[test]
    fn the_advertised_duration_is_never_shorter_than_ours() {
        assert_eq!(whole_seconds(Duration::from_secs(15)), 15);
        assert_eq!(whole_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(whole_seconds(Duration::from_millis(10)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    // ---- the loop, against an in-memory Lease API (paused clock: no waiting, no network)

    #[derive(Debug, Default)]
    struct Server {
        lease: Option<serde_json::Value>,
        rv: u64,
        /// Answer every request with a 500.
        failing: bool,
        /// Never answer.
        hanging: bool,
        requests: usize,
    }

    fn status(code: u16) -> serde_json::Value {
        let reason = match code {
            404 => "NotFound",
            409 => "Conflict",
            500 => "InternalError",
            _ => "MethodNotAllowed",
        };
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "mock", "reason": reason, "code": code})
    }

    impl Server {
        fn answer(&mut self, method: &http::Method, body: &[u8]) -> (u16, serde_json::Value) {
            self.requests += 1;
            if self.failing {
                return (500, status(500));
            }
            let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let sent_rv = body["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string);
            let stored_rv = self.lease.as_ref().map(|_| self.rv.to_string());
            match *method {
                http::Method::GET => match &self.lease {
                    Some(l) => (200, l.clone()),
                    None => (404, status(404)),
                },
                http::Method::POST if self.lease.is_some() => (409, status(409)),
                http::Method::PUT if sent_rv != stored_rv => (409, status(409)),
                http::Method::POST | http::Method::PUT => {
                    self.store(body);
                    (200, self.lease.clone().unwrap_or_default())
                }
                _ => (405, status(405)),
            }
        }

        fn store(&mut self, mut lease: serde_json::Value) {
            self.rv += 1;
            lease["metadata"]["resourceVersion"] = self.rv.to_string().into();
            self.lease = Some(lease);
        }

        fn holder(&self) -> Option<String> {
            let l = self.lease.as_ref()?;
            l["spec"]["holderIdentity"].as_str().map(str::to_string)
        }

        /// Another replica writes the record, as if it had taken the lease.
        fn taken_by(&mut self, holder: &str) {
            let mut l = self.lease.clone().unwrap_or_default();
            l["spec"]["holderIdentity"] = holder.into();
            self.store(l);
        }
    }

    type Shared = std::sync::Arc<std::sync::Mutex<Server>>;

    fn elector(server: &Shared, holder: &str) -> Elector {
        let server = server.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let server = server.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                if server.lock().unwrap().hanging {
                    std::future::pending::<()>().await;
                }
                let (code, json) = server.lock().unwrap().answer(&parts.method, &body);
                let rsp = http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&json).unwrap()))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(rsp)
            }
        });
        let api = Api::namespaced(kube::Client::new(svc, "ns"), "ns");
        Elector::new(api, "lease", holder, D)
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_takes_over_only_after_the_record_stayed_unchanged_for_its_duration() {
        let server = Shared::default();
        let (mut a, mut b) = (elector(&server, "a"), elector(&server, "b"));
        assert!(a.try_acquire().await.unwrap());
        assert!(!b.try_acquire().await.unwrap());
        tokio::time::advance(D - Duration::from_secs(1)).await;
        assert!(a.try_acquire().await.unwrap(), "a renews");
        assert!(!b.try_acquire().await.unwrap(), "b sees the renewal");
        tokio::time::advance(D).await;
        assert!(!b.try_acquire().await.unwrap(), "unchanged for exactly D");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            b.try_acquire().await.unwrap(),
            "a stopped renewing: b takes over"
        );
        assert_eq!(server.lock().unwrap().holder().as_deref(), Some("b"));
        assert!(!a.try_acquire().await.unwrap(), "a does not take it back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_stops_before_a_follower_may_take_over() {
        for hang in [false, true] {
            let server = Shared::default();
            let mut a = elector(&server, "a");
            let renewed = a.acquire().await;
            {
                let mut s = server.lock().unwrap();
                s.failing = !hang;
                s.hanging = hang;
            }
            let e = a.hold(renewed).await;
            assert!(matches!(e, LeaseError::NotRenewed(..)), "{e}");
            // A follower that saw the last renewal may take over after D; we stopped before.
            // (Tokio's timers wake on whole milliseconds.)
            let stopped = renewed.elapsed();
            assert!(
                stopped <= a.renew_deadline() + Duration::from_millis(1),
                "{stopped:?}"
            );
            assert!(stopped < D, "{stopped:?}");
            if !hang {
                assert!(server.lock().unwrap().requests > 2, "it retried");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_lease_was_taken_stops_at_its_next_renewal() {
        let server = Shared::default();
        let mut a = elector(&server, "a");
        let renewed = a.acquire().await;
        server.lock().unwrap().taken_by("b");
        let e = a.hold(renewed).await;
        assert!(matches!(&e, LeaseError::Lost(_, to) if to == "b"), "{e}");
        assert!(renewed.elapsed() <= a.retry_period());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_wakes_up_past_its_deadline_stops_without_asking() {
        let server = Shared::default();
        let mut a = elector(&server, "a");
        let renewed = a.acquire().await;
        let before = server.lock().unwrap().requests;
        // As if the process had been stopped (SIGSTOP, a long GC pause, a frozen VM).
        tokio::time::advance(D * 2).await;
        let e = a.hold(renewed).await;
        assert!(matches!(e, LeaseError::NotRenewed(..)), "{e}");
        assert_eq!(server.lock().unwrap().requests, before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_once_and_only_its_holder_releases_it() {
        let server = Shared::default();
        let (mut a, mut b) = (elector(&server, "a"), elector(&server, "b"));
        assert!(a.try_acquire().await.unwrap());
        assert!(!b.try_acquire().await.unwrap());
        b.release().await.unwrap();
        assert_eq!(server.lock().unwrap().holder().as_deref(), Some("a"));
        a.release().await.unwrap();
        assert_eq!(server.lock().unwrap().holder(), None);
        assert!(b.try_acquire().await.unwrap());
    }
}
