//! What every marketbridge process does around its work: read the
//! configuration, start telemetry, stop cleanly on Ctrl-C or SIGTERM.

use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::{Error, Result};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// The `--config FILE` argument, if given.
pub fn config_path_from_args() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    None
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs a process: loads the configuration (`--config` or
/// `MARKETBRIDGE_CONFIG`, then the environment), starts telemetry as
/// `service_name`, runs `body` until it returns, then flushes telemetry.
/// A failure is printed on stderr and the exit status is 1.
pub fn run_process<F, Fut>(service_name: &'static str, body: F) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let outcome = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async move {
                let config =
                    Config::load(config_path_from_args().as_deref()).map_err(|e| e.to_string())?;
                let telemetry = marketbridge_telemetry::init(service_name, &config.telemetry)
                    .map_err(|e| e.to_string())?;
                crate::tls::install_crypto_provider();
                let shutdown = shutdown_on_signal();
                // A part alone has no moment it calls ready: soon after it
                // started serving, what start-up freed goes back.
                tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    release_free_memory();
                });
                let result = body(config, shutdown).await;
                telemetry.shutdown();
                result.map_err(|e| e.to_string())
            })
        });
    exit_code(service_name, outcome)
}

/// The process's allocator on Linux: jemalloc, also serving C code (SQLite
/// among it) in place of glibc's malloc. glibc's malloc, with its arenas
/// capped so idle memory stayed low, spent a seventh of a provision's CPU
/// allocating, freeing and waiting for an arena's lock (SQLite's connection
/// threads and tokio's workers sharing two arenas); jemalloc's thread caches
/// and per-core arenas do not wait. It holds a few MB more when idle (freed
/// pages go back to the system over seconds, as the process keeps running).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Gives back what start-up used and serving does not need: the memory the
/// allocator holds free (start-up parses certificates, migrates and builds
/// the OpenAPI document, then frees most of it), and the process's mappings
/// of the code only start-up ran (see [`release_startup_code`]). Call once
/// the process serves.
pub fn release_free_memory() {
    purge_free_pages();
    release_startup_code();
}

/// Returns the allocator's unused dirty pages, of every arena, to the
/// system; false if the allocator refused (or there is none to ask).
fn purge_free_pages() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `arena.<all>.purge` reads and writes no value (null pointers,
    // zero length); it only returns unused pages to the system.
    #[allow(unsafe_code)]
    unsafe {
        /// `MALLCTL_ARENAS_ALL` (4096) names every arena.
        const PURGE_ALL_ARENAS: &std::ffi::CStr = c"arena.4096.purge";
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        ) == 0
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Unmaps the pages of this program's file that the process maps without
/// having written to them (its code and read-only data), so that only what
/// runs from now on is mapped again.
///
/// Start-up runs code that serving never runs again (migrations, TLS and
/// configuration set-up, the OpenAPI document), and the kernel maps a file's
/// pages 64 KiB around each one touched: after start-up most of the 36 MB
/// binary counts in the process's resident memory. `MADV_DONTNEED` on a
/// private mapping of a file drops the process's page-table entries; the
/// pages stay in the page cache, and the next use maps them back from there
/// (a minor fault), with the file's content, which for a mapping holding no
/// anonymous (copied-on-write) page is exactly what was mapped. Mappings
/// that hold such pages (relocated read-only data) and writable ones are
/// left alone.
fn release_startup_code() {
    #[cfg(target_os = "linux")]
    {
        let (Ok(program), Ok(smaps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/smaps"),
        ) else {
            return;
        };
        for (start, end) in unwritten_mappings_of(&smaps, &program) {
            // SAFETY: the range is a whole mapping of the program's file that
            // is not writable and holds no anonymous page (checked in
            // `/proc/self/smaps` just before): dropping its pages loses
            // nothing, and any access faults them back from the file.
            #[allow(unsafe_code)]
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The address ranges of `/proc/self/smaps` entries that map `program`
/// privately, not writable, with no anonymous page.
fn unwritten_mappings_of(smaps: &str, program: &std::path::Path) -> Vec<(usize, usize)> {
    let program = program.to_string_lossy();
    mappings(smaps)
        .into_iter()
        .filter(|mapping| {
            let permissions = mapping.permissions.as_str();
            permissions.len() == 4
                && !permissions.contains('w')
                && permissions.ends_with('p')
                && mapping.path == program
                && mapping.anonymous_kb == Some(0)
                && mapping.end > mapping.start
        })
        .map(|mapping| (mapping.start, mapping.end))
        .collect()
}

/// One entry of `/proc/<pid>/smaps`, with the fields read here.
#[derive(Debug, Default)]
struct Mapping {
    start: usize,
    end: usize,
    permissions: String,
    /// The mapped file's path (it may hold spaces); empty when anonymous.
    path: String,
    rss_kb: u64,
    /// `None` when the entry does not say.
    anonymous_kb: Option<u64>,
}

/// The entries of a `/proc/<pid>/smaps` text: each starts with a header line
/// (range, permissions, offset, device, inode, path), then `Key: value kB`
/// lines.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut found: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            let permissions = fields.next().unwrap_or_default().to_owned();
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            found.push(Mapping {
                start,
                end,
                permissions,
                path,
                ..Default::default()
            });
            continue;
        }
        let (Some(mapping), Some(Ok(kb))) = (found.last_mut(), fields.next().map(str::parse))
        else {
            continue;
        };
        match first {
            "Rss:" => mapping.rss_kb = kb,
            "Anonymous:" => mapping.anonymous_kb = Some(kb),
            _ => {}
        }
    }
    found
}

/// Prints a failure on stderr and turns the outcome into an exit status.
pub fn exit_code(name: &str, outcome: std::result::Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The cipher for secrets at rest, from `security.encryption_key` as
/// [`crate::secrets::resolve`] left it.
pub fn load_cipher(config: &Config) -> Result<Cipher> {
    crate::secrets::validate(config)?;
    Cipher::from_base64_key(&config.security.encryption_key)
        .map_err(|e| Error::validation(format!("security.encryption_key: {}", e.message())))
}

/// Serves Prometheus `/metrics` on `address` until `shutdown`, when an
/// address is configured.
pub async fn spawn_metrics_listener(address: &str, shutdown: CancellationToken) -> Result<()> {
    if address.is_empty() {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {address}: {e}")))?;
    tracing::info!(listen = %address, "metrics listening");
    tokio::spawn(marketbridge_telemetry::serve_metrics(
        listener,
        async move { shutdown.cancelled().await },
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// C code's `malloc` is jemalloc's (the crate's unprefixed symbols), and
    /// jemalloc accepts the purge start-up ends with.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn jemalloc_serves_c_code_and_accepts_the_purge() {
        #[allow(unsafe_code)]
        // SAFETY: a fresh allocation, asked its size by jemalloc (which made
        // it, as the unprefixed feature links `malloc` to jemalloc), then
        // freed once.
        unsafe {
            let block = libc::malloc(1000);
            assert!(!block.is_null());
            assert!(tikv_jemalloc_sys::malloc_usable_size(block) >= 1000);
            libc::free(block);
        }
        assert!(purge_free_pages(), "jemalloc refused the purge");
    }

    const SMAPS: &str = "\
55d0c0000000-55d0c0400000 r--p 00000000 fd:01 1234                       /opt/mb/marketbridge
Size:               4096 kB
Rss:                1024 kB
Anonymous:             0 kB
55d0c0400000-55d0c2800000 r-xp 00400000 fd:01 1234                       /opt/mb/marketbridge
Rss:               24000 kB
Anonymous:             0 kB
55d0c2800000-55d0c2a00000 r--p 02800000 fd:01 1234                       /opt/mb/marketbridge
Rss:                1800 kB
Anonymous:          1800 kB
55d0c2a00000-55d0c2b00000 rw-p 02a00000 fd:01 1234                       /opt/mb/marketbridge
Anonymous:           100 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99                         /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 fd:01 77                         /opt/mb/marketbridge (deleted)
Anonymous:             0 kB
7f0000400000-7f0000500000 rw-p 00000000 00:00 0 
Anonymous:          1024 kB
";

    #[test]
    fn only_the_program_s_unwritten_mappings_without_copied_pages_are_released() {
        let ranges = unwritten_mappings_of(SMAPS, Path::new("/opt/mb/marketbridge"));
        // The header and read-only data, and the code; not the relocated
        // read-only data (copied pages), not the writable data, not another
        // file, not a file by another name.
        assert_eq!(
            ranges,
            vec![
                (0x55d0c0000000, 0x55d0c0400000),
                (0x55d0c0400000, 0x55d0c2800000)
            ]
        );
        // A path with a space is one path.
        let spaced = "7f00-7f10 r-xp 0 fd:01 5 /opt/my apps/marketbridge\nAnonymous: 0 kB\n";
        assert_eq!(
            unwritten_mappings_of(spaced, Path::new("/opt/my apps/marketbridge")),
            vec![(0x7f00, 0x7f10)]
        );
        assert!(unwritten_mappings_of(spaced, Path::new("/opt/my")).is_empty());
    }

    /// Resident kB of this test program's own file mappings.
    fn program_resident_kb() -> u64 {
        let program = std::fs::read_link("/proc/self/exe").expect("the program");
        let program = program.to_string_lossy();
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        mappings(&smaps)
            .iter()
            .filter(|mapping| mapping.path == program)
            .map(|mapping| mapping.rss_kb)
            .sum()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn releasing_start_up_code_shrinks_the_mapped_program_and_it_keeps_running() {
        let before = program_resident_kb();
        release_startup_code();
        let after = program_resident_kb();
        eprintln!("the test program's mapped pages: {before} kB, then {after} kB");
        assert!(
            after < before,
            "the program's resident pages: {before} kB before, {after} kB after"
        );
        // Code runs on after its pages were dropped: the parser, run again
        // on the live table, maps its pages back and reads it as before.
        release_startup_code();
        let program = std::fs::read_link("/proc/self/exe").expect("the program");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        assert!(!unwritten_mappings_of(&smaps, &program).is_empty());
        assert!(program_resident_kb() > 0);
    }
}
