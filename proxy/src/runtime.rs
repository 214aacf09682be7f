//! The async runtime a data-plane process (the proxy, the gateway) runs on, sized to the
//! CPUs it may use.
//!
//! With one CPU, a current-thread runtime: the one thread polls the I/O driver and runs
//! every task, with no work-stealing queues, no cross-thread wakeups and no atomics on a
//! task's way back to its queue. The bench measured it (`bench/README.md`, issue 20): the
//! same proxy pair used about 12 % less CPU per 1,000 requests than on a one-worker
//! multi-thread runtime. With more CPUs, a multi-thread runtime with one worker per CPU.
//!
//! How many: `cores` when set (the proxy's `STRAIT_PROXY_CORES`, the gateway's `--cores`),
//! else [`std::thread::available_parallelism`], which on Linux honours the CPU affinity
//! mask and the container's cgroup CPU quota, so a sidecar limited to one CPU gets the
//! current-thread runtime without being told.

use std::num::NonZeroUsize;

/// The worker threads for `cores` (`None`: as many CPUs as the process may use).
pub fn threads(cores: Option<NonZeroUsize>) -> usize {
    cores
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get)
}

/// Builds the runtime for [`threads`]`(cores)` worker threads.
pub fn build(cores: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = threads(cores);
    tracing::debug!(threads, "runtime");
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}
