//! # strait-mirror
//!
//! The service-mirror controller. For every `Link` in its namespace it watches the remote
//! cluster's exported Services and keeps a local mirror `<svc>-<cluster>` of each, whose
//! endpoints are the remote cluster's gateway; it probes that gateway and marks the mirrors
//! not ready when it stops answering.
