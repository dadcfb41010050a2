//! The binary's loggers (text and JSON lines on stderr), which never stop or slow the thread
//! that logs: a line is formatted where it is logged and handed to one writer thread through a
//! bounded queue; a full queue drops the line, a failed write (stderr closed, a broken pipe)
//! drops it too, and both are counted (`wsedge::metrics::LOG_LINES_DROPPED`, shown in
//! `/metrics`). So a reactor never waits on a slow log reader, and the signal thread's
//! "shutting down" line cannot take the process's shutdown with it.
//!
//! Owns: formatting and writing log lines. Does not touch: what is logged.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use wsedge::metrics::LOG_LINES_DROPPED;

/// Lines waiting for the writer, at most.
const QUEUE: usize = 16 * 1024;
/// Lines handed to the writer and not yet written (for `flush`).
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// How long `flush` (at exit) waits for the writer.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

pub enum Format {
    Text,
    Json,
}

struct Logger {
    level: log::LevelFilter,
    format: Format,
    lines: SyncSender<String>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ts = wsedge::Timestamp::now().to_string();
        let line = match self.format {
            Format::Text => format!("{ts} {:<5} [{}] {}\n", record.level(), record.target(), record.args()),
            Format::Json => {
                let mut l = serde_json::json!({
                    "ts": ts,
                    "level": record.level().as_str(),
                    "target": record.target(),
                    "msg": record.args().to_string(),
                })
                .to_string();
                l.push('\n');
                l
            }
        };
        PENDING.fetch_add(1, Ordering::AcqRel);
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                PENDING.fetch_sub(1, Ordering::AcqRel);
                LOG_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most a second) until the lines logged so far are written: called at exit, so
    /// the last lines (often the reason for exiting) are not lost with the queue.
    fn flush(&self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        while PENDING.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Installs the logger: lines at `level` and above, to stderr.
pub fn init(level: log::LevelFilter, format: Format) -> Result<(), String> {
    let (tx, rx) = sync_channel::<String>(QUEUE);
    std::thread::Builder::new()
        .name("wsedge-log".into())
        .spawn(move || {
            let stderr = std::io::stderr();
            for line in rx {
                if stderr.lock().write_all(line.as_bytes()).is_err() {
                    LOG_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                PENDING.fetch_sub(1, Ordering::AcqRel);
            }
        })
        .map_err(|e| format!("log writer: {e}"))?;
    log::set_max_level(level);
    log::set_boxed_logger(Box::new(Logger {
        level,
        format,
        lines: tx,
    }))
    .map_err(|e| e.to_string())
}
