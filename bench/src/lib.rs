//! # strait-bench
//!
//! Benchmarks that compare Strait with a baseline measured in the same run (a direct
//! connection, a peer proxy). Every binary here is bounded in count and time, stops by itself,
//! and sends traffic only to loopback or to namespaces the run created.
