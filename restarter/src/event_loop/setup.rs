//! Start-up: the inherited descriptors (heartbeat pipes, init's fd store),
//! then the shell's own (epoll, signalfd, runtime directory, control
//! socket), in the order the module documentation of `event_loop` gives.

use super::*;

impl Shell {
    pub(super) fn new(
        config: Config,
        opts: Options,
        beats: Vec<Writer>,
        init_pipe: Option<usize>,
        store: Option<adoption::Store>,
        config_errors: Vec<String>,
    ) -> Result<Shell, String> {
        let base_nofile = spawn::current_nofile();
        if let Err(e) = spawn::raise_nofile() {
            warn!("cannot raise the descriptor limit: {e}");
        }
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| io_err("blocking signals", e))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| io_err("signalfd", e))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| io_err("epoll", e))?;
        epoll
            .add(
                sigfd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
            )
            .map_err(|e| io_err("epoll", e))?;
        // After the signals are blocked: the thread inherits the mask.
        let resolver = Resolver::new(resolver::default_lookup())
            .map_err(|e| io_err("user lookup thread", e))?;
        epoll
            .add(
                resolver.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_RESOLVER),
            )
            .map_err(|e| io_err("epoll", e))?;
        let run_dir = config.paths.run.clone();
        notify::prepare_dir(&run_dir.join("notify"))
            .map_err(|e| io_err(&format!("preparing {}/notify", run_dir.display()), e))?;
        let cgroups = if opts.no_cgroup {
            info!("cgroups disabled (--no-cgroup): services are bounded by their process group");
            None
        } else {
            match Cgroups::detect(opts.cgroup_root.as_deref()) {
                Ok(c) => {
                    info!("service cgroups under {}", c.root().display());
                    Some(c)
                }
                Err(e) if opts.cgroup_root.is_some() => return Err(format!("--cgroup-root: {e}")),
                Err(e) => {
                    info!("no cgroup v2 ({e}): services are bounded by their process group");
                    None
                }
            }
        };
        // Before any per-service descriptor: its slots get low numbers.
        let spawner = Spawner::new().map_err(|e| io_err("spawner descriptors", e))?;
        let now = MonoTime::now();
        // The journal's lock first: it is free only once the previous
        // restarter and every child of it between `clone` and `exec` are
        // gone, so what it and the state file say is complete.
        let journal =
            match state_file::Journal::open_locked(&run_dir, state_file::JOURNAL_LOCK_WAIT) {
                Ok((j, true)) => j,
                Ok((j, false)) => {
                    warn!(
                    "{}: still locked after {:?} (another restarter on {}?); reading it as it is",
                    state_file::JOURNAL_NAME,
                    state_file::JOURNAL_LOCK_WAIT,
                    run_dir.display()
                );
                    j
                }
                Err(e) => {
                    error!(
                        "opening {}: {e}; starts are recorded once per loop turn only",
                        state_file::JOURNAL_NAME
                    );
                    state_file::Journal::default()
                }
            };
        // The leftovers of a previous restarter, before anything starts.
        let state_path = run_dir.join(state_file::FILE_NAME);
        let entries = state_file::read(&state_path).unwrap_or_else(|e| {
            error!("reading {}: {e}", state_path.display());
            Vec::new()
        });
        let syslog_path = logging::effective_settings(&config.log).syslog_socket;
        let services_dir = config.paths.services.clone();
        let mut shell = Shell {
            syslog: Syslog::new(&syslog_path),
            spawner,
            exec_status: spawn::exec_status::ExecStatus::new()
                .map_err(|e| io_err("exec status pipe", e))?,
            run_dir,
            services_dir,
            epoll,
            sigfd,
            sup: Supervisor::new(),
            rt: Table::default(),
            control: None,
            beats,
            init_pipe,
            pending_code: None,
            cgroups,
            cgroup_warned: false,
            base_nofile,
            started: now,
            wakes: {
                let mut w = Deadlines::new();
                w.set(Wake::Beat, Some(now));
                w.set(Wake::Liveness, Some(now + config.timing.liveness_interval));
                w
            },
            sweep: None,
            journal,
            loaded: false,
            state_dirty: false,
            state_failing: false,
            run_watch: None,
            run_repair: None,
            run_repair_failing: false,
            config_errors,
            reload_errors: Vec::new(),
            resolver,
            awaiting: BTreeMap::new(),
            starts: starts::StartQueue::default(),
            metrics: MetricsFile::start(&config, now),
            config,
            store,
            pending: None,
            watches: std::collections::HashMap::new(),
            own_binary: upgrade::own_binary(),
            upgrade_pending: false,
        };
        if let Some(store) = shell.store.as_ref() {
            if let Err(e) = shell.epoll.add(
                store.relay_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, adoption::TOKEN_RELAY),
            ) {
                error!("relay: epoll: {e}");
            }
        }
        // With a store: what can be adopted is, the rest is swept.
        let entries = shell.prepare_adoption(entries);
        shell.sweep = Some(Sweep::start(entries, now));
        shell.log_sweep_messages();
        shell.bind_control();
        match RunDir::open(&shell.run_dir, shell.control.is_some()) {
            Ok(rd) => {
                shell.run_watch = Some(rd);
                shell
                    .wakes
                    .set(Wake::RunCheck, Some(now + run_dir::CHECK_INTERVAL));
            }
            Err(e) => warn!(
                "{}: {e}; a removed runtime directory will not be noticed",
                shell.run_dir.display()
            ),
        }
        Ok(shell)
    }

    pub(super) fn bind_control(&mut self) {
        let admin_gid = match &self.config.control.group {
            None => None,
            Some(g) => match control::resolve_group(g) {
                Ok(gid) => Some(gid),
                Err(e) => {
                    error!("[control] group: {e}; only root may change state");
                    None
                }
            },
        };
        let path = self.run_dir.join(CONTROL_SOCKET);
        match Server::bind(&path, admin_gid) {
            Ok(server) => {
                if let Err(e) = self.epoll.add(
                    server.fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_CONTROL),
                ) {
                    error!("control socket: epoll: {e}");
                }
                self.control = Some(server);
            }
            Err(e) => error!(
                "control socket {}: {e}; running without control",
                path.display()
            ),
        }
    }

    pub(super) fn log_sweep_messages(&mut self) {
        if let Some(s) = self.sweep.as_mut() {
            for m in s.messages.drain(..) {
                warn!("{m}");
            }
        }
    }
}

/// The write ends named in `TETHER_FDS`, taken over (close-on-exec again),
/// and init's fd store and relay when all three are there.
pub(super) fn take_heartbeats() -> (
    Vec<Writer>,
    Option<usize>,
    Option<adoption::Store>,
    Option<String>,
) {
    let list = match FdList::from_env(ENV_FDS) {
        Ok(l) => l,
        Err(e) => return (Vec::new(), None, None, Some(e.to_string())),
    };
    let mut beats = Vec::new();
    let mut init = None;
    let mut errors = Vec::new();
    let mut store_fds: std::collections::HashMap<String, std::os::fd::OwnedFd> =
        std::collections::HashMap::new();
    for (name, fd) in list.iter() {
        if adoption::is_store_name(name) {
            match tether_common::sys::take_inherited_fd(fd) {
                Ok(owned) => {
                    store_fds.insert(name.to_string(), owned);
                }
                Err(e) => errors.push(format!("{name}={fd}: {e}")),
            }
            continue;
        }
        match tether_common::sys::take_inherited_fd(fd).and_then(|owned| Writer::new(name, owned)) {
            Ok(w) => {
                if name == "init" {
                    init = Some(beats.len());
                }
                beats.push(w);
            }
            Err(e) => errors.push(format!("{name}={fd}: {e}")),
        }
    }
    // Single-threaded at this point. The variable must not reach services
    // (spawn filters it too).
    std::env::remove_var(ENV_FDS);
    use tether_common::relay::{FD_RELAY, FD_STORE_RECV, FD_STORE_SEND};
    let store = match (
        store_fds.remove(FD_STORE_SEND),
        store_fds.remove(FD_STORE_RECV),
        store_fds.remove(FD_RELAY),
    ) {
        (Some(send), Some(recv), Some(relay)) => Some(adoption::Store::new(send, recv, relay)),
        (None, None, None) => None,
        _ => {
            errors.push(
                "the fd store needs store_send, store_recv and relay: running without".into(),
            );
            None
        }
    };
    (
        beats,
        init,
        store,
        (!errors.is_empty()).then(|| errors.join(", ")),
    )
}
