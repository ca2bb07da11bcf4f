//! Process logging through `ftlog`: an asynchronous logger whose channel the workers only
//! enqueue into; one background thread formats and writes.
//!
//! `[logging]` sets the level, the channel size, the flush interval and the destination
//! (`file_path`, or stderr). When the channel is full, lines are dropped rather than stalling a
//! worker. (Size-based rotation, access logs and `SIGUSR1` reopening come with the
//! observability issue.)

use crate::config::Logging;

/// Keeps the logger alive; dropping it flushes.
pub struct LogGuard {
    _guard: Option<ftlog::LoggerGuard>,
}

/// Installs the global logger. A second call (in tests) is harmless.
pub fn init(cfg: &Logging) -> Result<LogGuard, String> {
    let builder = ftlog::builder()
        .max_log_level(cfg.level.filter())
        .bounded(cfg.channel_size, false)
        .print_omitted_count(true)
        .utc();
    let builder = match &cfg.file_path {
        Some(path) => builder.root(ftlog::appender::FileAppender::new(path)),
        None => builder.root(std::io::stderr()),
    };
    match builder.try_init() {
        Ok(guard) => Ok(LogGuard {
            _guard: Some(guard),
        }),
        Err(e) => Err(format!("cannot start logging: {e}")),
    }
}
