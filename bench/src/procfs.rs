//! CPU time and memory of processes, read from `/proc`.
//!
//! CPU is `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`) in clock
//! ticks; a tick lasts `1 / CLK_TCK` seconds, asked of `getconf CLK_TCK`
//! once (100 Hz, the Linux default, when that fails).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// The fields of `/proc/<pid>/stat` the benchmark reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 4: the parent process.
    pub ppid: u32,
    /// Field 14: user-mode ticks.
    pub utime: u64,
    /// Field 15: kernel-mode ticks.
    pub stime: u64,
    /// Field 16: user-mode ticks of children waited for.
    pub cutime: u64,
    /// Field 17: kernel-mode ticks of children waited for.
    pub cstime: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// The resident set size in kB from a `/proc/<pid>/status` text.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        line.strip_prefix("VmRSS:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Whether a PostgreSQL process, by its title (`/proc/<pid>/cmdline`), is
/// counted for a run using `databases`: the server's own processes
/// (postmaster, checkpointer, writers, launchers) always; a client backend
/// (`postgres: 15/main: user db 127.0.0.1(5432) idle`) or a worker naming a
/// database only when it serves one of the run's databases. The server is
/// shared with other users, whose backends are not ours to count.
pub fn counts_postgres_process(title: &str, databases: &[String]) -> bool {
    if databases.iter().any(|name| title.contains(name.as_str())) {
        return true;
    }
    let client_backend = title.contains('(') || title.contains("[local]");
    let database_worker = title.contains("autovacuum worker") || title.contains("parallel worker");
    !(client_backend || database_worker)
}

/// Clock ticks per second.
pub fn clock_ticks_per_second() -> (u64, bool) {
    let asked = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .filter(|ticks: &u64| *ticks > 0);
    match asked {
        Some(ticks) => (ticks, true),
        None => (100, false),
    }
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// CPU ticks of `root` and every live descendant, each with the ticks of
/// its children already waited for (so a child that exited is still
/// counted, in its parent).
pub fn tree_ticks(root: u32) -> Option<u64> {
    let root_stat = read_stat(root)?;
    let mut children: HashMap<u32, Vec<(u32, Stat)>> = HashMap::new();
    for pid in pids() {
        if pid == root {
            continue;
        }
        if let Some(stat) = read_stat(pid) {
            children.entry(stat.ppid).or_default().push((pid, stat));
        }
    }
    let total = |stat: &Stat| stat.utime + stat.stime + stat.cutime + stat.cstime;
    let mut ticks = total(&root_stat);
    let mut seen = HashSet::from([root]);
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for (pid, stat) in children.get(&parent).into_iter().flatten() {
            if seen.insert(*pid) {
                ticks += total(stat);
                queue.push(*pid);
            }
        }
    }
    Some(ticks)
}

/// CPU ticks (`utime + stime`) of the PostgreSQL processes counted for
/// `databases` (see [`counts_postgres_process`]).
pub fn postgres_ticks(databases: &[String]) -> u64 {
    let mut ticks = 0;
    for pid in pids() {
        let base = Path::new("/proc").join(pid.to_string());
        let is_postgres = std::fs::read_to_string(base.join("comm"))
            .map(|comm| comm.trim() == "postgres")
            .unwrap_or(false);
        if !is_postgres {
            continue;
        }
        let title = std::fs::read(base.join("cmdline"))
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
            .unwrap_or_default();
        if !counts_postgres_process(&title, databases) {
            continue;
        }
        if let Some(stat) = read_stat(pid) {
            ticks += stat.utime + stat.stime;
        }
    }
    ticks
}

/// Resident memory of a process, in bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_vm_rss_kb(&status)? * 1024)
}

/// CPU used by the set (and PostgreSQL) between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    /// CPU of every marketbridge process.
    pub marketbridge: Duration,
    /// CPU of the counted PostgreSQL processes; zero on SQLite.
    pub postgres: Duration,
}

/// A reading of the CPU counters.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    marketbridge: u64,
    postgres: u64,
}

/// Reads the CPU of the set's process tree and of PostgreSQL.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    root: u32,
    postgres_databases: Option<Vec<String>>,
    ticks_per_second: u64,
}

impl CpuMeter {
    /// A meter of the process tree under `root`, and of PostgreSQL's
    /// processes serving `postgres_databases` when given.
    pub fn new(root: u32, postgres_databases: Option<Vec<String>>, ticks_per_second: u64) -> Self {
        Self {
            root,
            postgres_databases,
            ticks_per_second: ticks_per_second.max(1),
        }
    }

    /// The counters now; an error when the set's process is gone.
    pub fn read(&self) -> Result<CpuReading, String> {
        let marketbridge = tree_ticks(self.root)
            .ok_or_else(|| format!("the marketbridge process {} is gone", self.root))?;
        let postgres = self
            .postgres_databases
            .as_deref()
            .map(postgres_ticks)
            .unwrap_or(0);
        Ok(CpuReading {
            marketbridge,
            postgres,
        })
    }

    /// The CPU used between `before` and `after`.
    pub fn between(&self, before: CpuReading, after: CpuReading) -> CpuUse {
        let seconds =
            |ticks: u64| Duration::from_secs_f64(ticks as f64 / self.ticks_per_second as f64);
        CpuUse {
            marketbridge: seconds(after.marketbridge.saturating_sub(before.marketbridge)),
            postgres: seconds(after.postgres.saturating_sub(before.postgres)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (tokio (w) 1) S 17 4242 17 0 -1 4194560 1200 0 0 0 \
                    250 75 3 2 20 0 9 0 123456 104857600 2560 18446744073709551615";
        let stat = parse_stat(line).expect("parses");
        assert_eq!(
            stat,
            Stat {
                ppid: 17,
                utime: 250,
                stime: 75,
                cutime: 3,
                cstime: 2,
            }
        );
        assert_eq!(parse_stat("12 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn resident_memory_is_read_from_status() {
        let status = "Name:\tmarketbridge\nVmPeak:\t  900 kB\nVmRSS:\t   23456 kB\nThreads:\t5\n";
        assert_eq!(parse_vm_rss_kb(status), Some(23456));
        assert_eq!(parse_vm_rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn postgres_backends_of_other_databases_are_left_out() {
        let ours = vec!["mb_bench_1_account".to_owned()];
        let counted = |title: &str| counts_postgres_process(title, &ours);
        assert!(counted(
            "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main"
        ));
        assert!(counted("postgres: 15/main: checkpointer "));
        assert!(counted("postgres: 15/main: walwriter "));
        assert!(counted(
            "postgres: 15/main: postgres mb_bench_1_account 127.0.0.1(40000) idle"
        ));
        assert!(!counted(
            "postgres: 15/main: postgres someone_elses_test 127.0.0.1(40001) idle"
        ));
        assert!(!counted("postgres: 15/main: postgres other [local] idle"));
        assert!(!counted("postgres: 15/main: autovacuum worker other"));
        assert!(counted(
            "postgres: 15/main: autovacuum worker mb_bench_1_account"
        ));
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        assert!(tree_ticks(pid).is_some());
        assert!(resident_bytes(pid).is_some_and(|bytes| bytes > 0));
    }
}
