//! # strait-bench
//!
//! Benchmarks that compare Strait with a baseline measured in the same run (a direct
//! connection, a peer proxy). Every binary here is bounded in count and time, stops by itself,
//! and sends traffic only to loopback or to namespaces the run created.

pub mod mtls;
pub mod pair;

/// The processes a benchmark watches, read from `/proc`.
pub mod procfs {
    use std::path::Path;

    /// The pid of the kube-apiserver serving `url`, found by its `--secure-port`.
    pub fn apiserver_pid(url: &str) -> Option<u32> {
        let port = url.trim_end_matches('/').rsplit(':').next()?;
        let flag = format!("--secure-port={port}");
        find(|args| {
            args.first().is_some_and(|a| a.ends_with(b"kube-apiserver"))
                && args.contains(&flag.as_bytes())
        })
    }

    /// The pid of the etcd whose data lives under `dir`.
    pub fn etcd_pid(dir: &Path) -> Option<u32> {
        let data = dir.join("etcd");
        let data = data.to_str()?.as_bytes();
        find(|args| args.first().is_some_and(|a| a.ends_with(b"etcd")) && args.contains(&data))
    }

    /// `pid`'s resident set (VmRSS), kB; 0 when it is gone.
    pub fn rss_kb(pid: u32) -> u64 {
        kb_field(&format!("/proc/{pid}/status"), "VmRSS:")
    }

    /// The anonymous memory `pid` has resident (heap, stacks; no file pages), kB.
    pub fn anon_kb(pid: u32) -> u64 {
        kb_field(&format!("/proc/{pid}/smaps_rollup"), "Anonymous:")
    }

    /// The `<field> <n> kB` line of a /proc file, in kB.
    fn kb_field(path: &str, field: &str) -> u64 {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The first process whose command line (split at NULs) satisfies `matches`.
    fn find(matches: impl Fn(&[&[u8]]) -> bool) -> Option<u32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|d| {
            let pid: u32 = d.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(d.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            matches(&args).then_some(pid)
        })
    }

    /// utime + stime of a process, in clock ticks (100 per second on Linux).
    pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
        let rest = stat.rsplit_once(") ")?.1;
        let f: Vec<&str> = rest.split(' ').collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    /// Busy (non-idle, non-iowait) clock ticks of the whole machine, from /proc/stat.
    pub fn machine_ticks() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let f: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
    }
}

/// The count a benchmark takes as its first argument that is not a `--flag`: `default` when
/// absent; an error that says `why` when it does not parse or falls outside `range`.
pub fn count_arg(
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    why: &str,
) -> anyhow::Result<usize> {
    let n = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(s) => s
            .parse()
            .map_err(|e| anyhow::anyhow!("the count {s:?} is not a number: {e}"))?,
        None => default,
    };
    if !range.contains(&n) {
        anyhow::bail!(
            "the count must be within {}..={} ({why})",
            range.start(),
            range.end()
        );
    }
    Ok(n)
}
