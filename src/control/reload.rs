//! A reload, as the control loop runs it: asked for (by a file event, `SIGHUP` or `proxyctl
//! reload`), its inputs read, queued behind a build in progress or started on a helper thread
//! ([`super::build::prepare`]), given up past its deadline, and finished — published, or
//! refused with the running snapshot kept — with its report to the waiting clients and the log.

use super::*;

/// A reload whose new snapshot a helper thread is building.
pub(super) struct Building {
    pub(super) id: u64,
    pub(super) trigger: Trigger,
    pub(super) started: Instant,
    /// When the first admin client waiting for this build asked (for a queued reload, before
    /// the build began): its answer is due within [`WAIT_DEADLINE`].
    pub(super) asked: Instant,
    /// Admin clients waiting for the report.
    pub(super) waiting: Vec<Sender<Response>>,
}

/// A reload asked for while another was being built.
pub(super) struct Queued {
    pub(super) trigger: Trigger,
    pub(super) force: bool,
    pub(super) waiting: Vec<Sender<Response>>,
    /// When it was first asked for.
    pub(super) asked: Instant,
}

/// One running config build, counted in [`Control::builds`] until it is dropped.
pub(super) struct BuildSlot(Arc<AtomicUsize>);

impl BuildSlot {
    pub(super) fn take(builds: &Arc<AtomicUsize>) -> Option<Self> {
        let taken = builds.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_BUILDS).then_some(n + 1)
        });
        taken.ok().map(|_| Self(builds.clone()))
    }
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Control {
    /// Starts a reload transaction; `waiting` admin clients get its report. `force` rebuilds
    /// even when the file's bytes did not change (re-reading memory-mode files); a file event
    /// with unchanged bytes does nothing at all. The inputs are read here (non-blocking and
    /// capped, see [`crate::fsread`]); the build runs on a helper thread and ends in
    /// [`Self::finish_reload`]. A reload asked for during a build waits for it to end.
    pub(super) fn reload(&mut self, trigger: Trigger, force: bool, waiting: Vec<Sender<Response>>) {
        self.reload_asked(trigger, force, waiting, Instant::now());
    }

    /// [`Self::reload`] for a request made at `asked`.
    pub(super) fn reload_asked(
        &mut self,
        trigger: Trigger,
        force: bool,
        waiting: Vec<Sender<Response>>,
        asked: Instant,
    ) {
        let current = self.shared.snapshot.load_full();
        if self.drain.is_some() {
            log::warn!(
                "reload ({}) refused: the daemon is draining",
                trigger.as_str()
            );
            let report = ReloadReport {
                ok: false,
                trigger: trigger.as_str().into(),
                at_unix_ms: now_ms(),
                generation: current.generation,
                error: Some("the daemon is draining; it reloads nothing any more".into()),
                unchanged: false,
                restart_required: Vec::new(),
                changes: RouteChanges::default(),
            };
            answer(waiting, &report);
            return;
        }
        if self.building.is_some() {
            let q = self.queued.get_or_insert(Queued {
                trigger,
                force,
                waiting: Vec::new(),
                asked,
            });
            q.force |= force;
            q.waiting.extend(waiting);
            return;
        }
        let bytes = match build::read_config(&self.config_path) {
            Ok(b) => b,
            Err(e) => {
                let error = format!("{}: {e}", self.config_path.display());
                log::warn!(
                    "reload ({}) refused; still serving generation {}: {error}",
                    trigger.as_str(),
                    current.generation
                );
                let report = self.record(trigger, current.generation, Err(error));
                answer(waiting, &report);
                return;
            }
        };
        let config_len = bytes.len();
        let inputs = build::inputs(bytes, &current.config);
        if !force && inputs == self.serving_bytes {
            log::debug!("config file event: bytes unchanged, nothing to do");
            let report = ReloadReport {
                ok: true,
                trigger: trigger.as_str().into(),
                at_unix_ms: now_ms(),
                generation: current.generation,
                error: None,
                unchanged: true,
                restart_required: Vec::new(),
                changes: RouteChanges::default(),
            };
            answer(waiting, &report);
            return;
        }
        let Some(slot) = BuildSlot::take(&self.builds) else {
            let error = format!(
                "busy: {MAX_BUILDS} config builds are still running (builds that did not finish \
                 within {}s); try again later",
                BUILD_DEADLINE.as_secs()
            );
            log::warn!("reload ({}) refused: {error}", trigger.as_str());
            let report = self.record(trigger, current.generation, Err(error));
            answer(waiting, &report);
            return;
        };
        if self.upgrading.is_none() {
            // An upgrade under way stays the state shown; its end says which comes next.
            self.set_state(Lifecycle::Reloading);
        }
        notify_systemd(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        self.last_build += 1;
        let id = self.last_build;
        let config_bytes = inputs.get(..config_len).unwrap_or_default().to_vec();
        drop(inputs);
        let (path, metrics, fleet, sessions, events) = (
            self.config_path.clone(),
            self.shared.metrics.clone(),
            self.shared.fleet.clone(),
            self.shared.sessions.clone(),
            self.sender.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("zcs-build".into())
            .spawn(move || {
                let result =
                    build::prepare(&path, &config_bytes, &current, &metrics, &fleet, &sessions);
                drop(slot);
                let _ = events.send(Event::Built {
                    id,
                    result: Box::new(result),
                });
            });
        if let Err(e) = spawned {
            let generation = self.shared.snapshot.load().generation;
            let report = self.record(
                trigger,
                generation,
                Err(format!("cannot start a build thread: {e}")),
            );
            answer(waiting, &report);
            self.back_to_running();
            return;
        }
        self.building = Some(Building {
            id,
            trigger,
            started: Instant::now(),
            asked,
            waiting,
        });
    }

    /// Publishes a finished build (or reports why not), then starts a queued reload.
    pub(super) fn finish_reload(
        &mut self,
        id: u64,
        result: Result<build::Prepared, crate::config::ConfigErrors>,
    ) {
        let Some(b) = self.building.take_if(|b| b.id == id) else {
            log::debug!("the result of an abandoned config build arrived; dropped");
            // Counters it made for its routes go with it.
            drop(result);
            self.shared
                .snapshot
                .load()
                .retain_metrics(&self.shared.metrics);
            return;
        };
        let current = self.shared.snapshot.load_full();
        let trigger = b.trigger;
        let report = match result {
            // A drain began while it was built: nothing is swapped in any more.
            Ok(_) if self.drain.is_some() => self.record(
                trigger,
                current.generation,
                Err("the daemon began draining; the new config was not swapped in".into()),
            ),
            Ok(prepared) => {
                for w in &prepared.warnings {
                    log::warn!("{w}");
                }
                let build::Prepared {
                    snapshot,
                    changes,
                    restart_required: restart,
                    inputs,
                    ..
                } = prepared;
                // Watch the new config's [tls] files, if they moved.
                let watched = watched_files(&self.config_path, &snapshot.config);
                crate::logging::set_level(&snapshot.config.logging);
                let generation =
                    build::commit(&self.shared.snapshot, &self.shared.sessions, snapshot);
                self.serving_bytes = inputs;
                if watched != self.watched {
                    self.watcher = start_watcher(&watched, &self.sender);
                    self.watched = watched;
                }
                log::info!(
                    "reloaded ({}): generation {generation}; routes +{} -{} ~{}",
                    trigger.as_str(),
                    changes.added.len(),
                    changes.removed.len(),
                    changes.changed.len()
                );
                if !restart.is_empty() {
                    log::warn!(
                        "restart required for changes to: {} (the running values stay in effect)",
                        restart.join(", ")
                    );
                }
                let mut report = self.record(trigger, generation, Ok(()));
                report.changes = changes;
                report.restart_required = restart;
                self.last_reload = Some(report.clone());
                report
            }
            Err(errors) => {
                log::warn!(
                    "reload ({}) refused; still serving generation {}:\n{errors}",
                    trigger.as_str(),
                    current.generation
                );
                self.record(trigger, current.generation, Err(errors.to_string()))
            }
        };
        answer(b.waiting, &report);
        // Counters of routes the serving config does not have (removed, or built for a
        // refused file) are forgotten.
        self.shared
            .snapshot
            .load()
            .retain_metrics(&self.shared.metrics);
        self.back_to_running();
    }

    /// Gives up a build that ran past [`BUILD_DEADLINE`]: reported as failed, the old config
    /// keeps serving, and its result is dropped if it ever comes.
    pub(super) fn give_up_build(&mut self) {
        let Some(b) = self.building.take() else {
            return;
        };
        let generation = self.shared.snapshot.load().generation;
        let error = format!(
            "the new config did not finish building within {:.1}s (a DNS lookup or a file that \
             does not answer?); still serving generation {generation}",
            build_deadline().as_secs_f64()
        );
        log::warn!("reload ({}) given up: {error}", b.trigger.as_str());
        let report = self.record(b.trigger, generation, Err(error));
        answer(b.waiting, &report);
        self.back_to_running();
    }

    /// The end of a reload attempt: `running` again (unless draining), and the next reload if
    /// one was asked for meanwhile.
    pub(super) fn back_to_running(&mut self) {
        if self.drain.is_some() {
        } else if self.upgrading.is_some() {
            // The upgrade's end says READY=1.
            self.set_state(Lifecycle::Upgrading);
        } else {
            self.set_state(Lifecycle::Running);
            notify_systemd("READY=1");
        }
        if let Some(q) = self.queued.take() {
            self.reload_asked(q.trigger, q.force, q.waiting, q.asked);
        }
    }

    /// Builds a report and keeps it as the last reload.
    pub(super) fn record(
        &mut self,
        trigger: Trigger,
        generation: u64,
        result: Result<(), String>,
    ) -> ReloadReport {
        match result {
            Ok(()) => self.reloads.succeeded += 1,
            Err(_) => self.reloads.failed += 1,
        }
        let report = ReloadReport {
            ok: result.is_ok(),
            trigger: trigger.as_str().into(),
            at_unix_ms: now_ms(),
            generation,
            error: result.err(),
            unchanged: false,
            restart_required: Vec::new(),
            changes: RouteChanges::default(),
        };
        self.last_reload = Some(report.clone());
        report
    }
}

/// Sends a reload's report to every admin client waiting for it.
pub(super) fn answer(waiting: Vec<Sender<Response>>, report: &ReloadReport) {
    for w in waiting {
        let _ = w.send(proto::ok(report));
    }
}
