//! The one executor: walks a `Plan` step by step, records each, and on failure or cancellation
//! hands what was done to the one undo policy (`undo.rs`), which puts the host back as it found
//! it (old container serving, previous snippet, no half-started container).

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, Live};
use super::gate::{Gate, GateFailure, GateRun};
use super::undo::{self, Progress, PutBack};
use super::{Action, ContainerRef, NewContainer, Plan, Rollout};
use crate::engine::Engine;
use crate::host::agent::HostAgent;
use crate::host::proxy::Driver;

pub use super::report::{Evidence, Outcome, Report, Step, StepName};

const INTERRUPTED: &str = "interrupted (SIGINT/SIGTERM)";

/// What the executor needs besides the plan.
pub struct Context<'a> {
    pub engine: &'a Engine,
    pub agent: &'a HostAgent,
    pub driver: Driver,
    pub cancel: &'a CancellationToken,
}

/// What runs once Caddy routes to the new container, before the old one is stopped.
pub trait AfterSwitch {
    /// `Ok(detail)` keeps the release; `Err(why)` rolls it back.
    fn check(&self, cancel: &CancellationToken) -> impl Future<Output = Result<String, String>>;
    /// After such a rollback: is the previous release (`None`: there was none) served again?
    fn check_restored(
        &self,
        previous: Option<&ContainerRef>,
    ) -> impl Future<Output = Result<String, String>>;
    /// Whether `check_restored` really looks at what the public URL serves.
    fn observes_public(&self) -> bool {
        true
    }
}

/// `rollout` alone: the health gate is the last check.
pub struct NoCheck;

impl AfterSwitch for NoCheck {
    fn observes_public(&self) -> bool {
        false
    }
    async fn check(&self, _: &CancellationToken) -> Result<String, String> {
        Ok(String::new())
    }
    async fn check_restored(&self, _: Option<&ContainerRef>) -> Result<String, String> {
        Ok(String::new())
    }
}

async fn verify_restored(report: &mut Report, hook: &impl AfterSwitch, r: &Rollout, cause: &str) {
    let at_ms = report.wall_ms;
    let t = std::time::Instant::now();
    let result = hook.check_restored(report.previous.as_ref()).await;
    let (ok, detail) = match &result {
        Ok(d) => (true, d.clone()),
        Err(e) => (false, e.clone()),
    };
    report.steps.push(Step {
        name: StepName::VerifyRestored,
        start_ms: at_ms,
        duration_ms: t.elapsed().as_millis() as u64,
        ok,
        detail: detail.clone(),
    });
    report.wall_ms += t.elapsed().as_millis() as u64;
    match result {
        Ok(_) => {
            report.message = match &report.previous {
                Some(p) => format!(
                    "deployed and rolled back; the previous release is serving ({}, revision {}). Cause: {cause}",
                    p.name, p.revision
                ),
                None => format!(
                    "rolled back; there was no previous release, so nothing serves. Cause: {cause}"
                ),
            };
        }
        Err(why) => {
            report.outcome = Outcome::RollbackFailed;
            report.message = format!(
                "{}; but after putting the previous release back, the public check still fails: {why}. State: {} routes to the previous container{}; the new one was removed. Check {} and the previous container on the host, then deploy again or run `slipway rollout {}` (the previous release)",
                report.message,
                r.snippet.path,
                r.snippet.proxy.name(),
                report.previous.as_ref().map_or(String::new(), |p| format!(
                    " {} on 127.0.0.1:{}",
                    p.name,
                    p.port.unwrap_or_default()
                )),
                report
                    .previous
                    .as_ref()
                    .map_or("<previous image>".to_string(), |p| p.image.clone())
            );
        }
    }
}

/// The steps of a rollout, in order; each may fail, and the cancellation check runs before each.
const STEPS: [StepName; 10] = [
    StepName::Image,
    StepName::Reconcile,
    StepName::Release,
    StepName::Start,
    StepName::Verify,
    StepName::Health,
    StepName::Workers,
    StepName::Switch,
    StepName::Smoke,
    StepName::Drain,
];

/// Why a rollout stops before it is done.
#[derive(Debug)]
enum Stop {
    /// Nothing needs undoing (or what was done is the host's own repair): end with this.
    Plain(Outcome, String),
    /// Undo what was done; `verify`: then check the previous release is served again.
    Undo {
        outcome: Outcome,
        why: String,
        verify: bool,
    },
}

impl Stop {
    fn undo(outcome: Outcome, why: impl Into<String>) -> Stop {
        Stop::Undo {
            outcome,
            why: why.into(),
            verify: false,
        }
    }
}

pub async fn execute(ctx: &Context<'_>, plan: &Plan, hook: &impl AfterSwitch) -> Report {
    execute_adopting(ctx, plan, hook, None).await
}

/// `execute`, with the plan's new container already started (see `Adopted`).
pub async fn execute_adopting(
    ctx: &Context<'_>,
    plan: &Plan,
    hook: &impl AfterSwitch,
    adopted: Option<Adopted>,
) -> Report {
    let live = Live {
        engine: ctx.engine,
        agent: ctx.agent,
        driver: &ctx.driver,
    };
    run_adopting(&live, ctx.cancel, plan, hook, adopted).await
}

/// The plan's new container, created and started before the executor ran (while the lock's
/// agent started; ADR 0010): the start step takes it instead of creating one, and any stop
/// takes it down.
#[derive(Debug, Clone)]
pub struct Adopted {
    pub id: String,
    /// Just before it was started: the health deadline counts from here.
    pub started: Instant,
}

/// The executor over any backend: the live one, or a fake in tests.
pub async fn run<B: Backend>(
    backend: &B,
    cancel: &CancellationToken,
    plan: &Plan,
    hook: &impl AfterSwitch,
) -> Report {
    run_adopting(backend, cancel, plan, hook, None).await
}

/// `run`, with the plan's new container already started.
pub async fn run_adopting<B: Backend>(
    backend: &B,
    cancel: &CancellationToken,
    plan: &Plan,
    hook: &impl AfterSwitch,
    adopted: Option<Adopted>,
) -> Report {
    let mut exec = Exec::new(backend, cancel, plan);
    if let Some(a) = &adopted {
        // It exists: from here on, every stop takes it down.
        exec.done.new_id = Some(a.id.clone());
    }
    exec.adopted = adopted;
    let began = exec.began;
    if plan.target.image.pinned().is_none() {
        let why = format!(
            "{} is not built yet: this plan can only be shown",
            plan.target.image
        );
        exec.record(StepName::Plan, began, false, why.clone());
        return exec.end(Outcome::Refused, why);
    }
    match &plan.action {
        Action::AlreadyServing { container } => {
            let detail = format!("{} already serves {}", container.name, plan.target.image);
            exec.record(StepName::Plan, began, true, detail);
            exec.report.container = Some(container.name.clone());
            exec.report.port = container.port;
            let message = format!(
                "nothing to do: {} already serves {} (revision {})",
                container.name, plan.target.image, plan.revision
            );
            exec.end(Outcome::Unchanged, message)
        }
        Action::Rollout(r) => exec.roll(r, hook).await,
        Action::HostContract { reason, hint } => {
            exec.record(StepName::Plan, began, false, reason.clone());
            exec.end(Outcome::Unavailable, format!("{reason} ({hint})"))
        }
        Action::Refuse { reason, hint } => {
            exec.record(StepName::Plan, began, false, reason.clone());
            let message = format!("{reason}; nothing was changed ({hint})");
            exec.end(Outcome::Refused, message)
        }
    }
}

struct Exec<'a, B> {
    b: &'a B,
    cancel: &'a CancellationToken,
    plan: &'a Plan,
    began: Instant,
    report: Report,
    done: Progress,
    /// The image's config digest, once inspected.
    image_id: String,
    /// The gate as the image allows it (see `super::gate_for_image`).
    gate: Option<Gate>,
    started: Option<Instant>,
    adopted: Option<Adopted>,
}

impl<'a, B: Backend> Exec<'a, B> {
    fn new(b: &'a B, cancel: &'a CancellationToken, plan: &'a Plan) -> Self {
        Exec {
            b,
            cancel,
            plan,
            began: Instant::now(),
            report: Report {
                service: plan.service.clone(),
                outcome: Outcome::Unchanged,
                message: String::new(),
                image: plan.target.image.to_string(),
                revision: plan.revision.clone(),
                previous: plan.active.clone(),
                container: None,
                port: None,
                steps: Vec::new(),
                evidence: Evidence::default(),
                start_to_healthy_ms: None,
                started_unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0),
                wall_ms: 0,
            },
            done: Progress::default(),
            image_id: String::new(),
            gate: None,
            started: None,
            adopted: None,
        }
    }

    fn record(&mut self, name: StepName, started: Instant, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        if ok {
            tracing::info!("{name}: {detail}");
        } else {
            tracing::error!("{name}: {detail}");
        }
        self.report.steps.push(Step {
            name,
            start_ms: started.duration_since(self.began).as_millis() as u64,
            duration_ms: started.elapsed().as_millis() as u64,
            ok,
            detail,
        });
    }

    /// A step that ran beside others, timed on its own.
    fn record_done(&mut self, d: super::retire::Done) {
        self.record(d.name, d.started, d.ok, d.detail);
        if let Some(step) = self.report.steps.last_mut() {
            step.duration_ms = d.took.as_millis() as u64;
        }
    }

    fn end(mut self, outcome: Outcome, message: impl Into<String>) -> Report {
        self.report.outcome = outcome;
        self.report.message = message.into();
        self.report.wall_ms = self.began.elapsed().as_millis() as u64;
        self.report
    }

    /// What serves while the new release is not switched in.
    fn serving(&self) -> String {
        self.plan
            .active
            .as_ref()
            .map_or("nothing was serving before".to_string(), |a| {
                format!("{} (revision {}) still serves", a.name, a.revision)
            })
    }

    async fn roll(mut self, r: &Rollout, hook: &impl AfterSwitch) -> Report {
        self.report.port = Some(r.port);
        self.report.container = Some(r.new.name().to_string());
        for step in STEPS {
            let result = if self.cancel.is_cancelled() {
                Err(self.cancelled())
            } else {
                self.step(step, r, hook).await
            };
            if let Err(stop) = result {
                return self.stop(stop, r, hook).await;
            }
        }
        self.finish(r).await
    }

    fn cancelled(&self) -> Stop {
        if self.done == Progress::default() {
            Stop::Plain(
                Outcome::Interrupted,
                format!("{INTERRUPTED}; nothing was changed; {}", self.serving()),
            )
        } else {
            Stop::undo(Outcome::Interrupted, INTERRUPTED)
        }
    }

    async fn step(
        &mut self,
        step: StepName,
        r: &Rollout,
        hook: &impl AfterSwitch,
    ) -> Result<(), Stop> {
        match step {
            StepName::Image => self.image(r).await,
            StepName::Reconcile => self.reconcile(r).await,
            StepName::Release => self.release(r).await,
            StepName::Start => self.start(r).await,
            StepName::Verify => self.verify(r).await,
            StepName::Health => self.health(r).await,
            StepName::Workers => self.workers(r).await,
            StepName::Switch => self.switch(r).await,
            StepName::Smoke => self.smoke(hook).await,
            StepName::Drain => self.drain(r).await,
            other => unreachable!("{other} is not a rollout step"),
        }
    }

    /// 1. The image, by digest, exactly; the gate it allows.
    async fn image(&mut self, r: &Rollout) -> Result<(), Stop> {
        let t = Instant::now();
        let image = self.plan.target.image.to_string();
        let unavailable = |m: String| Stop::Plain(Outcome::Unavailable, m);
        let info = match self.b.inspect_image(&image).await {
            Ok(Some(info)) => info,
            Ok(None) => {
                self.record(StepName::Image, t, false, "not in the engine");
                return Err(unavailable(format!(
                    "{image} is not in the engine; nothing was changed"
                )));
            }
            Err(e) => {
                self.record(StepName::Image, t, false, e.clone());
                return Err(unavailable(format!("{e}; nothing was changed")));
            }
        };
        let digest = self.plan.target.image.digest_shown();
        if !info
            .repo_digests
            .iter()
            .any(|d| d.ends_with(&format!("@{digest}")))
        {
            let seen = format!("{:?}", info.repo_digests);
            self.record(StepName::Image, t, false, format!("repo digests {seen}"));
            return Err(unavailable(format!(
                "the engine's copy of {image} does not carry digest {digest} (it has {seen}); nothing was changed"
            )));
        }
        match super::gate_for_image(&r.gate, info.has_healthcheck) {
            Ok(gate) => self.gate = Some(gate),
            Err(why) => {
                self.record(StepName::Image, t, false, "no HEALTHCHECK");
                return Err(Stop::Plain(
                    Outcome::Refused,
                    format!("{image} {why}; nothing was changed"),
                ));
            }
        }
        self.image_id = info.id.clone();
        self.record(StepName::Image, t, true, format!("{image} is {}", info.id));
        Ok(())
    }

    /// 2. What a run that died left behind: first what Caddy serves, then containers.
    async fn reconcile(&mut self, r: &Rollout) -> Result<(), Stop> {
        let t = Instant::now();
        let mut cleaned = Vec::new();
        let failed = |e: String, serving: String| {
            Stop::Plain(Outcome::Unavailable, format!("{e}; {serving}"))
        };
        if let Some(applied) = &r.recover {
            if let Err((_, e)) = undo::put_back(self.b, &r.snippet.file, Some(applied)).await {
                self.record(StepName::Reconcile, t, false, e.clone());
                let what = format!(
                    "could not put back what Caddy last applied to {}: {e}",
                    r.snippet.path
                );
                return Err(failed(what, self.serving()));
            }
            cleaned.push(format!(
                "{} put back to what Caddy last applied, reloaded",
                r.snippet.file
            ));
            if !r.remove_abandoned.is_empty() {
                tokio::time::sleep(r.drain).await;
            }
        }
        let stray_workers = r.workers.iter().flat_map(|w| &w.remove);
        for c in r.remove_abandoned.iter().chain(stray_workers) {
            if let Err(e) = self.b.remove(&c.id).await {
                self.record(StepName::Reconcile, t, false, e.clone());
                return Err(failed(e, self.serving()));
            }
            cleaned.push(format!("removed abandoned {}", c.name));
        }
        for c in &r.stop_stale {
            if let Err(e) = self.b.stop(&c.id, r.stop_grace).await {
                self.record(StepName::Reconcile, t, false, e.clone());
                return Err(failed(e, self.serving()));
            }
            cleaned.push(format!("stopped stale {}", c.name));
        }
        for name in &r.leftovers {
            let _ = self.b.remove(name).await;
            cleaned.push(format!("removed leftover {name}"));
        }
        if !cleaned.is_empty() {
            self.record(StepName::Reconcile, t, true, cleaned.join(", "));
        }
        Ok(())
    }

    /// 2b. The release command, once, in a one-shot container of the new image. Nothing has
    /// started yet, so a failure stops with nothing to undo.
    async fn release(&mut self, r: &Rollout) -> Result<(), Stop> {
        let Some(release) = &r.release else {
            return Ok(());
        };
        let t = Instant::now();
        let command = release.argv.join(" ");
        let failed = match self.b.run_release(release, self.cancel).await {
            Ok(exit) if exit.code == Some(0) => {
                let ms = exit.elapsed.as_millis();
                self.record(
                    StepName::Release,
                    t,
                    true,
                    format!("`{command}` exited 0 in {ms} ms"),
                );
                return Ok(());
            }
            Ok(exit) => {
                self.report.evidence.release_output =
                    masked_tail(&exit.output, &release.container.env);
                match exit.code {
                    Some(code) => format!("the release command `{command}` exited {code}"),
                    None => format!(
                        "the release command `{command}` did not finish within {} and was killed",
                        humantime::format_duration(release.deadline)
                    ),
                }
            }
            Err(None) => {
                self.record(StepName::Release, t, false, INTERRUPTED);
                let message = format!(
                    "{INTERRUPTED} during the release command; nothing was switched; {}",
                    self.serving()
                );
                return Err(Stop::Plain(Outcome::Interrupted, message));
            }
            Err(Some(e)) => {
                self.record(StepName::Release, t, false, e.clone());
                let message = format!(
                    "could not run the release command: {e}; nothing was switched; {}",
                    self.serving()
                );
                return Err(Stop::Plain(Outcome::Unavailable, message));
            }
        };
        self.record(StepName::Release, t, false, failed.clone());
        let tail = &self.report.evidence.release_output;
        let message = format!(
            "{failed}; nothing was switched; {}. Its output (tail):\n{tail}",
            self.serving()
        );
        Err(Stop::Plain(Outcome::RolledBack, message))
    }

    /// 3. The new container in the free slot.
    async fn start(&mut self, r: &Rollout) -> Result<(), Stop> {
        let t = Instant::now();
        if let Some(a) = self.adopted.take() {
            self.started = Some(a.started);
            let detail = format!(
                "{} on 127.0.0.1:{} (slot {}), started while the lock's agent started",
                r.new.name(),
                r.port,
                r.slot
            );
            self.record(StepName::Start, a.started, true, detail);
            return Ok(());
        }
        let id = match &r.new {
            NewContainer::Create(spec) => match self.b.create(spec).await {
                Ok(id) => id,
                Err(e) => {
                    self.record(StepName::Create, t, false, e.clone());
                    return Err(Stop::Plain(
                        Outcome::Unavailable,
                        format!("{e}; {}", self.serving()),
                    ));
                }
            },
            NewContainer::Restart(c) => c.id.clone(),
        };
        self.done.new_id = Some(id.clone());
        self.started = Some(Instant::now());
        if let Err(e) = self.b.start(&id).await {
            self.record(StepName::Start, t, false, e.clone());
            return Err(Stop::undo(
                Outcome::RolledBack,
                format!("{} did not start: {e}", r.new.name()),
            ));
        }
        let detail = format!("{} on 127.0.0.1:{} (slot {})", r.new.name(), r.port, r.slot);
        self.record(StepName::Start, t, true, detail);
        Ok(())
    }

    fn new_id(&self) -> String {
        self.done.new_id.clone().unwrap_or_default()
    }

    /// 4. The running container must be the requested digest.
    async fn verify(&mut self, r: &Rollout) -> Result<(), Stop> {
        let t = Instant::now();
        let digest = self.plan.target.image.digest_shown();
        let seen = match self.b.inspect(&self.new_id()).await {
            Ok(Some(c)) if c.image_id == self.image_id => {
                self.record(
                    StepName::Verify,
                    t,
                    true,
                    format!("runs {} = {digest}", c.image_id),
                );
                return Ok(());
            }
            Ok(Some(c)) => c.image_id,
            Ok(None) => "nothing (the container is gone)".into(),
            Err(e) => e,
        };
        let expected = self.image_id.clone();
        self.record(
            StepName::Verify,
            t,
            false,
            format!("runs {seen}, expected {expected}"),
        );
        let why = format!("{} runs {seen}, not {expected} ({digest})", r.new.name());
        Err(Stop::undo(Outcome::RolledBack, why))
    }

    /// 5. The health gate.
    async fn health(&mut self, r: &Rollout) -> Result<(), Stop> {
        let t = Instant::now();
        let started = self.started.unwrap_or(t);
        let gate = self.gate.clone().unwrap_or_else(|| r.gate.clone());
        let id = self.new_id();
        let run = GateRun {
            gate: &gate,
            id: &id,
            started,
        };
        match self.b.gate(run, self.cancel).await {
            Ok(()) => {
                let ms = started.elapsed().as_millis() as u64;
                self.report.start_to_healthy_ms = Some(ms);
                self.record(
                    StepName::Health,
                    t,
                    true,
                    format!("healthy {ms} ms after start"),
                );
                Ok(())
            }
            Err(GateFailure::Interrupted) => {
                self.record(StepName::Health, t, false, INTERRUPTED);
                Err(Stop::undo(Outcome::Interrupted, INTERRUPTED))
            }
            Err(GateFailure::Failed(why)) => {
                self.record(StepName::Health, t, false, why.clone());
                let why = format!("{} failed its health gate: {why}", r.new.name());
                Err(Stop::undo(Outcome::RolledBack, why))
            }
        }
    }

    /// 5b. The new workers: started, then each gated; all before the web switch.
    async fn workers(&mut self, r: &Rollout) -> Result<(), Stop> {
        let mut started = Vec::new();
        for w in &r.workers {
            let t = Instant::now();
            let (id, retained) = match &w.new {
                NewContainer::Create(spec) => (self.b.create(spec).await, false),
                NewContainer::Restart(c) => (Ok(c.id.clone()), true),
            };
            let id = id.map_err(|e| self.worker_failed(w, t, e))?;
            self.done.workers.push((id.clone(), retained));
            self.b
                .start(&id)
                .await
                .map_err(|e| self.worker_failed(w, t, e))?;
            started.push((w, id, t));
        }
        for (w, id, t) in started {
            super::worker_gate::gate(self.b, self.cancel, &w.gate, &id, t)
                .await
                .map_err(|e| match e {
                    GateFailure::Interrupted => Stop::undo(Outcome::Interrupted, INTERRUPTED),
                    GateFailure::Failed(why) => self.worker_failed(w, t, why),
                })?;
            let ms = t.elapsed().as_millis();
            self.record(
                StepName::Workers,
                t,
                true,
                format!("{} healthy {ms} ms after start", w.new.name()),
            );
        }
        Ok(())
    }

    fn worker_failed(&mut self, w: &super::WorkerRollout, t: Instant, why: String) -> Stop {
        self.record(StepName::Workers, t, false, why.clone());
        Stop::undo(
            Outcome::RolledBack,
            format!("worker {} failed its gate: {why}", w.new.name()),
        )
    }

    /// 6. Switch the proxy: write its file, let it check and apply it, record what was applied.
    async fn switch(&mut self, r: &Rollout) -> Result<(), Stop> {
        let t = Instant::now();
        let Some(content) = r.snippet.content.as_deref() else {
            let why = "the plan has no snippet: it was made before the image was built";
            return Err(Stop::undo(Outcome::Refused, why.to_string()));
        };
        if let Err(e) = self.b.write_snippet(&r.snippet.file, Some(content)).await {
            self.record(StepName::Switch, t, false, e.clone());
            return Err(Stop::undo(
                Outcome::RolledBack,
                format!("could not write {}: {e}", r.snippet.path),
            ));
        }
        self.done.written = true;
        if let Err(e) = self.b.check_config().await {
            self.done.rejected = true;
            self.report.evidence.reload_output = e.clone();
            self.record(StepName::Switch, t, false, e.clone());
            return Err(Stop::undo(
                Outcome::RolledBack,
                format!("the new {} was refused: {e}", r.snippet.file),
            ));
        }
        let reloaded = match self.b.apply(Some(content)).await {
            Ok(out) => {
                self.done.reloaded = true;
                self.report.evidence.reload_output = out;
                self.b.mark_applied(&r.snippet.file).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = reloaded {
            self.report.evidence.reload_output = e.clone();
            self.record(StepName::Switch, t, false, e.clone());
            return Err(Stop::undo(
                Outcome::RolledBack,
                format!("{}: {e}", r.snippet.proxy.apply_failed()),
            ));
        }
        let detail = format!(
            "{} → 127.0.0.1:{}, {}",
            r.snippet.path,
            r.port,
            r.snippet.proxy.applied()
        );
        self.record(StepName::Switch, t, true, detail);
        Ok(())
    }

    /// 6b. What the caller checks once traffic reaches the new container (deploy: the public
    /// smoke test and its watch window).
    async fn smoke(&mut self, hook: &impl AfterSwitch) -> Result<(), Stop> {
        let t = Instant::now();
        match hook.check(self.cancel).await {
            Ok(detail) => {
                if !detail.is_empty() {
                    self.record(StepName::Smoke, t, true, detail);
                }
                Ok(())
            }
            Err(why) => {
                self.record(StepName::Smoke, t, false, why.clone());
                let outcome = if self.cancel.is_cancelled() {
                    Outcome::Interrupted
                } else {
                    Outcome::RolledBack
                };
                let verify = outcome == Outcome::RolledBack;
                Err(Stop::Undo {
                    outcome,
                    why,
                    verify,
                })
            }
        }
    }

    /// 7. Drain: the old container finishes what it was serving.
    async fn drain(&mut self, r: &Rollout) -> Result<(), Stop> {
        let t = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(r.drain) => {
                self.record(StepName::Drain, t, true, format!("{} ms", r.drain.as_millis()));
                Ok(())
            }
            _ = self.cancel.cancelled() => {
                self.record(StepName::Drain, t, false, "interrupted");
                Err(Stop::undo(Outcome::Interrupted, "interrupted"))
            }
        }
    }

    /// The last step: retire the old release (kept stopped for rollback) and prune beyond
    /// `retain`, side by side. Past the drain nothing is undone: the new release serves.
    async fn finish(mut self, r: &Rollout) -> Report {
        for done in super::retire::retire_and_prune(self.b, r).await {
            self.record_done(done);
        }
        let message = format!(
            "{} serves {} (revision {}) on 127.0.0.1:{}",
            r.new.name(),
            self.plan.target.image,
            self.plan.revision,
            r.port
        );
        self.end(Outcome::Deployed, message)
    }

    /// The one undo policy: by what was done, put the host back, then say what serves.
    async fn stop(mut self, stop: Stop, r: &Rollout, hook: &impl AfterSwitch) -> Report {
        let (outcome, why, verify) = match stop {
            // An adopted container exists before any step: it is taken down on every stop.
            Stop::Plain(outcome, message) if self.done.new_id.is_some() => {
                (outcome, message, false)
            }
            Stop::Plain(outcome, message) => return self.end(outcome, message),
            Stop::Undo {
                outcome,
                why,
                verify,
            } => (outcome, why, verify),
        };
        let t = Instant::now();
        let id = self.new_id();
        if let Ok(Some(info)) = self.b.inspect(&id).await {
            self.report.evidence.health_log = info.health_log;
            self.report.evidence.log_tail = self.b.log_tail(&id).await;
        }
        let serving = self.report.previous.as_ref().map_or(
            "nothing serves (there was no previous release)".to_string(),
            |a| format!("{} (revision {}) serves", a.name, a.revision),
        );
        if self.done.written {
            let previous = r.snippet.previous.clone().flatten();
            let file = &r.snippet.file;
            let put = if self.done.rejected {
                undo::write_back(self.b, file, previous.as_deref()).await
            } else {
                undo::put_back(self.b, file, previous.as_deref()).await
            };
            if let Err((stage, e)) = put {
                let kept = stage == PutBack::Reload
                    && !self.done.reloaded
                    && previous_still_serves(hook, self.report.previous.as_ref()).await;
                if !kept {
                    return self.restore_failed(r, t, stage, &why, &e);
                }
                tracing::warn!(
                    "{} is put back; its reload failed as the switch's did ({e}), and the public URL still serves the previous release",
                    r.snippet.path
                );
            }
        }
        for (worker, retained) in self.done.workers.clone() {
            if let Err(e) = undo::take_down(self.b, &worker, retained, r.stop_grace).await {
                tracing::warn!("worker {worker} could not be taken down: {e}");
            }
        }
        let retained = matches!(r.new, NewContainer::Restart(_));
        let removed = undo::take_down(self.b, &id, retained, r.stop_grace).await;
        let detail = match &removed {
            Ok(()) => format!("removed {}; {serving}", r.new.name()),
            Err(e) => format!(
                "{serving}, but {} is still there ({e}): remove it with `docker rm -f {}`",
                r.new.name(),
                r.new.name()
            ),
        };
        self.record(StepName::Rollback, t, removed.is_ok(), detail.clone());
        let verb = if outcome == Outcome::Interrupted {
            "interrupted"
        } else {
            "rolled back"
        };
        let message = match removed {
            Ok(()) => format!("{verb}: {why}; {serving}"),
            Err(_) => format!("{verb}: {why}; {detail}"),
        };
        let mut report = self.end(outcome, message);
        if verify && report.outcome == Outcome::RolledBack {
            verify_restored(&mut report, hook, r, &why).await;
        }
        report
    }

    fn restore_failed(
        mut self,
        r: &Rollout,
        t: Instant,
        stage: PutBack,
        why: &str,
        e: &str,
    ) -> Report {
        self.record(StepName::Rollback, t, false, e.to_string());
        let old = self.report.previous.clone();
        let state = undo::restore_failed(r, old.as_ref(), self.done.reloaded, stage);
        let message = format!(
            "{why}; restoring the previous {} config failed too ({e}). State: {state}",
            r.snippet.proxy.name()
        );
        self.end(Outcome::RollbackFailed, message)
    }
}

/// After a switch whose reload failed, and a put-back whose reload failed too (a Caddyfile broken
/// on the host, Caddy stopped): a failed reload changes nothing in Caddy, so the previous release
/// may still serve; taken as rolled back only when the public URL proves it.
async fn previous_still_serves(hook: &impl AfterSwitch, previous: Option<&ContainerRef>) -> bool {
    hook.observes_public() && previous.is_some() && hook.check_restored(previous).await.is_ok()
}

/// The last lines of a command's output, with every env value it was given masked.
fn masked_tail(output: &str, env: &[(String, String)]) -> String {
    let mut text = output.to_string();
    for (_, value) in env.iter().filter(|(_, v)| v.len() >= 4) {
        text = text.replace(value.as_str(), "***");
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
#[path = "execute_tests.rs"]
mod tests;
