//! Resident memory of another process (the broker under test), read from
//! `/proc/<pid>/status`, and this process's own CPU time from `/proc/self/stat`.

use anyhow::{Context, Result, bail};

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path} (is the broker's pid right?)"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

/// CPU seconds (user + system) this process has used so far, or `None` where
/// `/proc` is unavailable. Assumes the usual 100 clock ticks per second.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds_at("/proc/self/stat")
}

/// CPU seconds (user + system, all threads) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_at(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_at(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / 100.0)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn parse_vm_rss(status: &str) -> Result<u64> {
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("bad VmRSS line {line:?}"))?;
            return Ok(kb * 1024);
        }
    }
    bail!("VmRSS missing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let s = "Name:\tmosquitto\nVmPeak:\t  9000 kB\nVmRSS:\t    6020 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(s).ok(), Some(6020 * 1024));
        assert!(parse_vm_rss("Name: x\n").is_err());
    }

    #[test]
    fn parses_cpu_ticks() {
        let s = "123 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(s), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert!(own_cpu_seconds().is_some());
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn reads_own_rss() {
        let own = rss_bytes(std::process::id());
        assert!(own.is_ok_and(|b| b > 0));
    }
}
