//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas can run: only the
//! holder serves Links. Optimistic concurrency (resourceVersion) settles races.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading lease {0}")]
    Get(String, #[source] kube::Error),
    #[error("lost lease {0} to {1}")]
    Lost(String, String),
}

#[derive(Clone, Debug)]
pub struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    pub holder: String,
    pub duration: Duration,
}

impl Elector {
    /// Tries once to take or renew the lease; `Ok(true)` when we hold it.
    pub async fn try_acquire(&self) -> Result<bool, LeaseError> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(15);
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| LeaseError::Get(self.name.clone(), e))?;
        let mut lease = match existing {
            None => Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: None,
            },
            Some(l) => l,
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
            now.as_second() - t.0.as_second() > ttl
        });
        if !holder.is_empty() && holder != self.holder && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.holder);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(secs),
            acquire_time: if holder == self.holder {
                spec.acquire_time
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        });
        let res = if lease.metadata.resource_version.is_some() {
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
        } else {
            self.api.create(&PostParams::default(), &lease).await
        };
        match res {
            Ok(_) => Ok(true),
            // Someone else wrote first; try again later.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(LeaseError::Get(self.name.clone(), e)),
        }
    }

    /// Waits until we hold the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the lease every third of its duration; returns when it is lost.
    pub async fn hold(&self) -> LeaseError {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return LeaseError::Lost(self.name.clone(), "another replica".into()),
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the lease failed");
                    if last_ok.elapsed() > self.duration {
                        return e;
                    }
                }
            }
        }
    }
}
