//! `slipway watch`: the health watchdog. Docker's restart policy restarts a process that exits;
//! an app that deadlocks keeps its container "running" and serves nothing. The watchdog probes
//! each service's serving container with the rollout gate's HTTP options and, after N failures
//! in a row, replaces it through the normal plan and executor (same digest, free slot, health
//! gate, Caddy switch, stuck container removed) under the deploy lock. See docs/watchdog.md and
//! docs/adr/0006-watchdog.md.

mod events;
mod policy;
mod specs;
mod watcher;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use events::{Event, Events};
pub use policy::Policy;
use specs::SpecSource;
use watcher::{Probe, Replacement, Shared, Watcher};

use crate::cli::{GlobalArgs, WatchArgs};
use crate::engine::{Engine, LABEL_MANAGED, LABEL_ROLE};
use crate::exit::{Exit, Failure};
use crate::host::HostAccess;
use crate::host::lock::Owner;
use crate::rollout;
use crate::spec::ServiceSpec;

/// How often the long-running mode checks the engine, reads the specs again and looks for
/// services it does not watch.
const SUPERVISE_EVERY: Duration = Duration::from_secs(5);

/// The error with its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

pub async fn command(
    global: &GlobalArgs,
    args: &WatchArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let source = SpecSource {
        files: args.configs.clone(),
        dir: args.config_dir.clone(),
    };
    if source.is_empty() {
        return Err(
            Failure::usage(anyhow::anyhow!("no service to watch")).with_hint(
                "pass --config PATH once per service, or --config-dir DIR with one spec per service",
            ),
        );
    }
    let read = source.read();
    let (named, duplicates) = specs::by_name(&read.specs);
    refuse_problems(&read.problems, &duplicates, args)?;
    let host = crate::rollout::inputs::host_access(&args.sibling)?;
    let events = Events::stdout();
    let Some(engine) = connect(global, args, &events, cancel).await? else {
        events.emit(Event::Stopped {});
        return Ok(Exit::Success);
    };
    let shared = Arc::new(shared_from_args(args, engine, host, events));
    let watched = watchable(&shared, &named);
    if watched.is_empty() {
        return Err(
            Failure::usage(anyhow::anyhow!("none of the given specs can be watched")).with_hint(
                "add a [health.http] section to the spec: the watchdog probes with its options",
            ),
        );
    }
    shared.events.emit(Event::Started {
        services: watched.keys().cloned().collect(),
        once: args.once,
        failures: args.failures,
    });
    if args.once {
        run_once(&shared, &named, &watched, cancel).await
    } else {
        Ok(forever(shared, source, read.specs, watched, cancel).await)
    }
}

/// Every problem with the specs (unreadable, or a service given twice) and the options, at once.
fn refuse_problems(
    unreadable: &BTreeMap<PathBuf, String>,
    duplicates: &BTreeMap<PathBuf, String>,
    args: &WatchArgs,
) -> Result<(), Failure> {
    let mut problems: Vec<String> = unreadable
        .iter()
        .chain(duplicates.iter())
        .map(|(path, message)| format!("{}: {message}", path.display()))
        .collect();
    if args.backoff > args.max_backoff {
        problems.push(format!(
            "--backoff {} is above --max-backoff {}",
            humantime::format_duration(args.backoff),
            humantime::format_duration(args.max_backoff)
        ));
    }
    if args.window.is_zero() {
        problems.push("--window must be above 0".into());
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(anyhow::anyhow!(
        "{} problem(s) with what to watch:\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    ))
    .with_hint("fix each one; nothing was watched or changed"))
}

/// The engine. On the host the watchdog may start before the engine's socket exists: the
/// long-running mode waits for it (`None`: stopped meanwhile).
async fn connect(
    global: &GlobalArgs,
    args: &WatchArgs,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<Option<Engine>, Failure> {
    let docker_host = global.docker_host();
    match Engine::connect(&docker_host) {
        Ok(engine) => Ok(Some(engine)),
        Err(e) if !args.once => {
            events.emit(Event::EngineLost { error: chain(&e) });
            let connected = until_back(|| async { Engine::connect(&docker_host) }, cancel).await;
            let Some((engine, down)) = connected else {
                return Ok(None);
            };
            events.emit(Event::EngineBack {
                down_ms: down.as_millis() as u64,
            });
            Ok(Some(engine))
        }
        Err(e) => Err(Failure::usage(e)
            .with_hint("set --docker-host or DOCKER_HOST, e.g. unix:///var/run/docker.sock")),
    }
}

fn shared_from_args(args: &WatchArgs, engine: Engine, host: HostAccess, events: Events) -> Shared {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut owner = Owner::current(&env);
    if owner.run == "local" {
        owner.run = "slipway watch".into();
    }
    Shared {
        engine,
        host,
        owner,
        failures: args.failures,
        interval: args.interval,
        policy: Policy {
            backoff: args.backoff,
            max_backoff: args.max_backoff,
            cap: args.cap,
            window: args.window,
        },
        lock_ttl: args.lock_ttl,
        events,
        trouble: Notify::new(),
    }
}

/// `--once`: the engine must answer; then one round.
async fn run_once(
    shared: &Arc<Shared>,
    named: &BTreeMap<String, (PathBuf, ServiceSpec)>,
    watched: &BTreeMap<String, ServiceSpec>,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    if let Err(e) = shared.engine.version().await {
        shared.events.emit(Event::EngineLost { error: chain(&e) });
        return Err(Failure::new(Exit::Unavailable, e).with_hint(
            "is the Docker socket reachable (--docker-host, DOCKER_HOST)? `slipway doctor` checks it; nothing was probed or changed",
        ));
    }
    let mut noted: BTreeSet<String> = named
        .keys()
        .filter(|n| !watched.contains_key(*n))
        .cloned()
        .collect();
    Ok(once(shared, watched, &mut noted, cancel).await)
}

/// The specs that can be watched, by name; a note for each that cannot.
fn watchable(
    shared: &Shared,
    named: &BTreeMap<String, (PathBuf, ServiceSpec)>,
) -> BTreeMap<String, ServiceSpec> {
    named
        .iter()
        .filter_map(|(name, (_, spec))| match specs::unwatchable(spec) {
            Some(reason) => {
                shared.events.emit(Event::Unwatched {
                    service: name.clone(),
                    reason,
                });
                None
            }
            None => Some((name.clone(), spec.clone())),
        })
        .collect()
}

/// Notes each running slipway service without a spec, once.
async fn note_unwatched(
    shared: &Shared,
    watched: &BTreeMap<String, ServiceSpec>,
    noted: &mut BTreeSet<String>,
) {
    let Ok(running) = shared
        .engine
        .list_running(&[(LABEL_MANAGED, "true"), (LABEL_ROLE, "app")])
        .await
    else {
        return;
    };
    for c in &running {
        let Some(service) = c.labels.get(rollout::LABEL_SERVICE) else {
            continue;
        };
        if !watched.contains_key(service) && noted.insert(service.clone()) {
            shared.events.emit(Event::Unwatched {
                service: service.clone(),
                reason: "no spec given for it (--config PATH, or a file in --config-dir)".into(),
            });
        }
    }
}

/// What `--once` found for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Checked {
    Healthy,
    NoActive,
    Unavailable(String),
    Interrupted,
    Replacement(Replacement),
}

impl Checked {
    fn exit(&self) -> Exit {
        match self {
            Checked::Healthy | Checked::NoActive => Exit::Success,
            Checked::Unavailable(_) => Exit::Unavailable,
            Checked::Interrupted => Exit::Interrupted,
            Checked::Replacement(r) => match r {
                Replacement::Replaced | Replacement::NotServing => Exit::Success,
                Replacement::Failed(exit) => *exit,
                Replacement::Backoff | Replacement::Capped => Exit::HeldBack,
                Replacement::LockHeld => Exit::Unavailable,
                Replacement::Interrupted => Exit::Interrupted,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Checked::Healthy => "healthy".into(),
            Checked::NoActive => "no running container".into(),
            Checked::Unavailable(why) => format!("not probed: {why}"),
            Checked::Interrupted => "interrupted".into(),
            Checked::Replacement(r) => match r {
                Replacement::Replaced => "stuck; replaced".into(),
                Replacement::Failed(_) => "stuck; the replacement failed".into(),
                Replacement::Backoff => "stuck; replacement held back (backoff)".into(),
                Replacement::Capped => "stuck; replacement held back (capped)".into(),
                Replacement::LockHeld => "not probed or replaced: the deploy lock is held".into(),
                Replacement::NotServing => "stuck, but no longer serving".into(),
                Replacement::Interrupted => "interrupted".into(),
            },
        }
    }
}

/// One round: every service at once, up to N probes each, a replacement where all failed.
async fn once(
    shared: &Arc<Shared>,
    watched: &BTreeMap<String, ServiceSpec>,
    noted: &mut BTreeSet<String>,
    cancel: &CancellationToken,
) -> Exit {
    note_unwatched(shared, watched, noted).await;
    let rounds = watched.values().map(|spec| {
        let shared = shared.clone();
        let spec = spec.clone();
        async move {
            let mut w = Watcher::new(spec);
            let checked = check_once(&shared, &mut w, cancel).await;
            w.remove_sibling(&shared).await;
            (w.spec.name.clone(), checked)
        }
    });
    let mut exit = Exit::Success;
    for (service, checked) in futures_util::future::join_all(rounds).await {
        shared.events.emit(Event::Checked {
            service,
            result: checked.describe(),
        });
        exit = exit.worst(checked.exit());
    }
    exit
}

async fn check_once(shared: &Shared, w: &mut Watcher, cancel: &CancellationToken) -> Checked {
    let interval = w.interval(shared);
    for attempt in 0..shared.failures {
        if attempt > 0 {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = cancel.cancelled() => return Checked::Interrupted,
            }
        }
        match w.probe(shared).await {
            Probe::Healthy => {
                return match workers::check(&w.spec, shared, cancel).await {
                    Some(replacement) => Checked::Replacement(replacement),
                    None => Checked::Healthy,
                };
            }
            Probe::NoActive => return Checked::NoActive,
            Probe::Inconclusive(why) => return Checked::Unavailable(why),
            Probe::Locked { .. } => return Checked::Replacement(Replacement::LockHeld),
            Probe::Failed { .. } => {}
        }
    }
    Checked::Replacement(w.replace(shared, cancel).await)
}

/// One service's loop in the long-running mode.
async fn watch_service(
    shared: Arc<Shared>,
    spec: ServiceSpec,
    mut online: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let mut w = Watcher::new(spec);
    let mut ticks = tokio::time::interval(w.interval(&shared));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = cancel.cancelled() => break,
        }
        if !*online.borrow() {
            tokio::select! {
                _ = online.wait_for(|up| *up) => {}
                _ = cancel.cancelled() => break,
            }
            continue;
        }
        let probe = w.probe(&shared).await;
        if let Probe::Inconclusive(why) = &probe {
            tracing::debug!("{}: no verdict this time: {why}", w.spec.name);
        }
        if matches!(probe, Probe::Healthy)
            && workers::check(&w.spec, &shared, &cancel).await == Some(Replacement::Interrupted)
        {
            break;
        }
        if matches!(probe, Probe::Failed { streak } if streak >= shared.failures)
            && w.replace(&shared, &cancel).await == Replacement::Interrupted
        {
            break;
        }
    }
    w.remove_sibling(&shared).await;
}

struct Task {
    spec: ServiceSpec,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

fn spawn(
    shared: &Arc<Shared>,
    spec: ServiceSpec,
    online: &watch::Receiver<bool>,
    parent: &CancellationToken,
) -> Task {
    let cancel = parent.child_token();
    let handle = tokio::spawn(watch_service(
        shared.clone(),
        spec.clone(),
        online.clone(),
        cancel.clone(),
    ));
    Task {
        spec,
        cancel,
        handle,
    }
}

/// Waits until `ping` succeeds, retrying with exponential backoff (0.5 s doubling to 30 s, with
/// jitter); `None` when cancelled first, else what it returned and how long it took.
pub async fn until_back<F, Fut, T, E>(ping: F, cancel: &CancellationToken) -> Option<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let began = Instant::now();
    let retry = ping
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(30))
                .with_jitter()
                .without_max_times(),
        )
        .notify(|e: &E, next: Duration| {
            tracing::debug!("the engine still does not answer ({e}); next try in {next:?}")
        });
    tokio::select! {
        r = retry => r.ok().map(|t| (t, began.elapsed())),
        _ = cancel.cancelled() => None,
    }
}

/// The long-running mode: one task per service, and this supervisor: the engine's health
/// (reconnecting with backoff), the specs read again, services without a spec noted.
async fn forever(
    shared: Arc<Shared>,
    source: SpecSource,
    by_path: BTreeMap<PathBuf, ServiceSpec>,
    watched: BTreeMap<String, ServiceSpec>,
    cancel: &CancellationToken,
) -> Exit {
    let mut sup = Supervisor::start(shared, source, by_path, watched, cancel);
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
                _ = sup.shared.trouble.notified() => {}
                _ = cancel.cancelled() => break,
            }
        }
        first = false;
        if !sup.engine_answers().await {
            break;
        }
        let now = sup.read_specs_again();
        sup.follow(now).await;
        sup.note_unwatched().await;
    }
    sup.stop().await;
    Exit::Success
}

/// What the long-running mode keeps between its rounds.
struct Supervisor<'a> {
    shared: Arc<Shared>,
    source: SpecSource,
    /// The specs in force, by file.
    by_path: BTreeMap<PathBuf, ServiceSpec>,
    tasks: BTreeMap<String, Task>,
    /// Services already said to be unwatched.
    noted: BTreeSet<String>,
    /// Spec files already said to be invalid, and what was said.
    said_invalid: BTreeMap<PathBuf, String>,
    online_tx: watch::Sender<bool>,
    online: watch::Receiver<bool>,
    cancel: &'a CancellationToken,
}

impl<'a> Supervisor<'a> {
    fn start(
        shared: Arc<Shared>,
        source: SpecSource,
        by_path: BTreeMap<PathBuf, ServiceSpec>,
        watched: BTreeMap<String, ServiceSpec>,
        cancel: &'a CancellationToken,
    ) -> Supervisor<'a> {
        let (online_tx, online) = watch::channel(true);
        let tasks = watched
            .into_iter()
            .map(|(name, spec)| (name, spawn(&shared, spec, &online, cancel)))
            .collect();
        // At start: those whose spec lacks [health.http].
        let noted = specs::by_name(&by_path)
            .0
            .into_iter()
            .filter(|(_, (_, spec))| specs::unwatchable(spec).is_some())
            .map(|(name, _)| name)
            .collect();
        Supervisor {
            shared,
            source,
            by_path,
            tasks,
            noted,
            said_invalid: BTreeMap::new(),
            online_tx,
            online,
            cancel,
        }
    }

    /// Checks the engine; if it is lost, pauses the services until it is back. False when
    /// stopped meanwhile.
    async fn engine_answers(&self) -> bool {
        let Err(e) = self.shared.engine.version().await else {
            return true;
        };
        self.online_tx.send_replace(false);
        self.shared
            .events
            .emit(Event::EngineLost { error: chain(&e) });
        match until_back(|| self.shared.engine.version(), self.cancel).await {
            Some((_, down)) => self.shared.events.emit(Event::EngineBack {
                down_ms: down.as_millis() as u64,
            }),
            None => return false,
        }
        self.online_tx.send_replace(true);
        true
    }

    /// The specs again: added, changed and removed services; a file that no longer parses
    /// keeps its previous version. Returns those that can be watched, by name.
    fn read_specs_again(&mut self) -> BTreeMap<String, ServiceSpec> {
        let read = self.source.read();
        for (path, message) in &read.problems {
            if self.said_invalid.get(path) != Some(message) {
                self.said_invalid.insert(path.clone(), message.clone());
                self.shared.events.emit(Event::SpecInvalid {
                    path: specs::display(path),
                    error: message.clone(),
                });
            }
        }
        self.said_invalid
            .retain(|p, _| read.problems.contains_key(p));
        let mut next = read.specs;
        for path in read.problems.keys() {
            if let Some(old) = self.by_path.get(path) {
                next.insert(path.clone(), old.clone());
            }
        }
        self.by_path = next;
        self.watchable_now()
    }

    /// The specs in force that can be watched, by name; the others are said unwatched once.
    fn watchable_now(&mut self) -> BTreeMap<String, ServiceSpec> {
        let (named, _) = specs::by_name(&self.by_path);
        let mut now: BTreeMap<String, ServiceSpec> = BTreeMap::new();
        for (name, (_, spec)) in named {
            match specs::unwatchable(&spec) {
                None => {
                    now.insert(name, spec);
                }
                Some(reason) => {
                    if self.noted.insert(name.clone()) {
                        self.shared.events.emit(Event::Unwatched {
                            service: name,
                            reason,
                        });
                    }
                }
            }
        }
        // Watched now: if it ever becomes unwatched again, that is said again.
        self.noted.retain(|n| !now.contains_key(n));
        now
    }

    fn watched(&self) -> BTreeMap<String, ServiceSpec> {
        self.tasks
            .iter()
            .map(|(n, t)| (n.clone(), t.spec.clone()))
            .collect()
    }

    /// Stops the tasks of removed and changed services, and starts those of added and
    /// changed ones.
    async fn follow(&mut self, now: BTreeMap<String, ServiceSpec>) {
        let changes = specs::changes(&self.watched(), &now);
        for name in changes.removed.iter().chain(&changes.changed) {
            if let Some(task) = self.tasks.remove(name) {
                task.cancel.cancel();
                let _ = task.handle.await;
            }
        }
        for name in changes.added.iter().chain(&changes.changed) {
            tracing::info!(
                "{name}: spec {}",
                if changes.added.contains(name) {
                    "added"
                } else {
                    "changed"
                }
            );
            let task = spawn(&self.shared, now[name].clone(), &self.online, self.cancel);
            self.tasks.insert(name.clone(), task);
        }
        for name in &changes.removed {
            tracing::info!("{name}: spec removed; no longer watched");
        }
    }

    async fn note_unwatched(&mut self) {
        let watched = self.watched();
        note_unwatched(&self.shared, &watched, &mut self.noted).await;
    }

    async fn stop(self) {
        for task in self.tasks.into_values() {
            task.cancel.cancel();
            let _ = task.handle.await;
        }
        self.shared.events.emit(Event::Stopped {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn an_engine_that_comes_back_is_waited_for_with_growing_pauses() {
        let tries = AtomicU32::new(0);
        let cancel = CancellationToken::new();
        let took = until_back(
            || async {
                if tries.fetch_add(1, Ordering::SeqCst) < 5 {
                    Err("connection refused")
                } else {
                    Ok(())
                }
            },
            &cancel,
        )
        .await
        .expect("not cancelled")
        .1;
        assert_eq!(tries.load(Ordering::SeqCst), 6);
        // 0.5 + 1 + 2 + 4 + 8 s, each plus up to as much jitter.
        assert!(took >= Duration::from_millis(15_500), "{took:?}");
        assert!(took <= Duration::from_secs(31), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_wait_for_the_engine() {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            stop.cancel();
        });
        let began = Instant::now();
        let r = until_back(|| async { Err::<(), _>("down") }, &cancel).await;
        assert_eq!(r, None);
        assert_eq!(began.elapsed().as_secs(), 100);
    }

    #[test]
    fn once_exits_with_the_most_severe_result() {
        let exits = |cs: &[Checked]| cs.iter().fold(Exit::Success, |e, c| e.worst(c.exit()));
        assert_eq!(exits(&[Checked::Healthy, Checked::NoActive]), Exit::Success);
        assert_eq!(
            exits(&[
                Checked::Healthy,
                Checked::Replacement(Replacement::Replaced)
            ]),
            Exit::Success
        );
        assert_eq!(
            exits(&[
                Checked::Replacement(Replacement::LockHeld),
                Checked::Replacement(Replacement::Failed(Exit::RolledBack)),
            ]),
            Exit::RolledBack
        );
        assert_eq!(
            exits(&[
                Checked::Replacement(Replacement::Failed(Exit::RolledBack)),
                Checked::Replacement(Replacement::Capped),
            ]),
            Exit::HeldBack
        );
        assert_eq!(
            exits(&[
                Checked::Replacement(Replacement::Backoff),
                Checked::Replacement(Replacement::Failed(Exit::RollbackFailed)),
            ]),
            Exit::RollbackFailed
        );
        assert_eq!(
            exits(&[Checked::Unavailable("down".into())]),
            Exit::Unavailable
        );
    }
}
