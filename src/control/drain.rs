//! A graceful stop: the workers stop accepting and finish their requests; the loop reports
//! progress to `proxyctl drain` clients and exits when no connection is left (or at the
//! deadline).

use super::*;

pub(super) struct Drain {
    pub(super) deadline: Instant,
    pub(super) last_progress: Instant,
    /// `proxyctl drain` clients waiting for progress and the end.
    pub(super) waiting: Vec<(Sender<Response>, Receiver<()>)>,
}

impl Control {
    pub(super) fn start_drain(&mut self, timeout: Option<Duration>) {
        if self.drain.is_some() {
            return;
        }
        // A stop wins over an upgrade under way: the new process is killed (it is not the
        // main process, and would not get the service manager's SIGTERM).
        self.cancel_upgrade("the daemon began draining");
        let timeout = timeout
            .unwrap_or(self.shared.snapshot.load().config.server.shutdown_timeout)
            .min(MAX_DRAIN);
        self.set_state(Lifecycle::Draining);
        if self.upgraded {
            // Not the main process any more: the new one serves; this one only finishes.
            crate::logging::stop_rotating();
        } else {
            notify_systemd("STOPPING=1");
        }
        log::info!(
            "draining: {} connections open, {} requests in flight; exiting by {}s at the latest",
            self.shared.connections(),
            self.shared.in_flight(),
            timeout.as_secs()
        );
        self.shared.draining.store(true, Ordering::SeqCst);
        // A drain reloads nothing: the watcher goes now, on a thread of its own. Closing an
        // inotify instance waits for the kernel (an SRCU grace period, seconds on a loaded
        // machine); left to the exit, that wait came before the client sockets closed, so a
        // tunnel cut at the deadline stayed open for seconds more.
        if let Some(watcher) = self.watcher.take() {
            let _ = std::thread::Builder::new()
                .name("zcs-unwatch".into())
                .spawn(move || drop(watcher));
        }
        self.drain = Some(Drain {
            deadline: Instant::now() + timeout,
            last_progress: Instant::now(),
            waiting: Vec::new(),
        });
    }

    pub(super) fn progress(&self) -> DrainProgress {
        let left = self.drain.as_ref().map_or(Duration::ZERO, |d| {
            d.deadline.saturating_duration_since(Instant::now())
        });
        DrainProgress {
            connections: self.shared.connections(),
            in_flight: self.shared.in_flight(),
            seconds_left: left.as_secs(),
        }
    }

    pub(super) fn tick_drain(&mut self) {
        let progress = self.progress();
        let Some(deadline) = self.drain.as_ref().map(|d| d.deadline) else {
            return;
        };
        let timed_out = Instant::now() >= deadline;
        // Every worker returns once its listener is closed and its last connection is done, so
        // a connection accepted just before the drain began is never cut off.
        if self.workers.all_finished() || timed_out {
            if timed_out && progress.connections > 0 {
                log::warn!(
                    "drain deadline reached with {} connections open; closing them",
                    progress.connections
                );
                // They end now, not when the kernel has torn the process down: that can wait
                // seconds on one of its threads (an inotify close waiting for SRCU).
                crate::net::sys::shutdown_tcp_connections();
            }
            self.finish_drain();
        }
        let Some(drain) = &mut self.drain else { return };
        if drain.last_progress.elapsed() >= DRAIN_PROGRESS {
            drain.last_progress = Instant::now();
            drain
                .waiting
                .retain(|(reply, _)| reply.send(proto::processing(&progress)).is_ok());
        }
    }

    /// The end of a drain: tell the waiting clients, then exit 0.
    pub(super) fn finish_drain(&mut self) -> ! {
        self.set_state(Lifecycle::Stopped);
        let progress = DrainProgress {
            connections: self.shared.connections(),
            in_flight: self.shared.in_flight(),
            seconds_left: 0,
        };
        let waiting = self.drain.take().map(|d| d.waiting).unwrap_or_default();
        for (reply, written) in waiting {
            if reply.send(proto::ok(&progress)).is_ok() {
                let _ = written.recv_timeout(Duration::from_secs(1));
            }
        }
        log::info!("stopped");
        self.exit(0)
    }
}
