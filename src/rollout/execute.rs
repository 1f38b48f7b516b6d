//! The one executor: walks a `Plan`, records every step, and on failure or cancellation puts the
//! host back as it found it (old container serving, previous snippet, no half-started container).

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gate::{self, GateFailure};
use super::{Action, ContainerRef, NewContainer, Plan, Rollout};
use crate::caddy::HostAgent;
use crate::engine::Engine;
use crate::exit::Exit;

const INTERRUPTED: &str = "interrupted (SIGINT/SIGTERM)";

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Deployed,
    /// The digest already served; nothing was changed.
    Unchanged,
    /// Something failed; the previous state was restored.
    RolledBack,
    /// The input cannot work (e.g. no health check at all); nothing was changed.
    #[serde(rename = "usage-error")]
    Refused,
    /// The engine or registry failed before anything changed.
    Unavailable,
    /// Restoring the previous state failed too: a human must act.
    RollbackFailed,
    Interrupted,
}

impl Outcome {
    pub fn exit(self) -> Exit {
        match self {
            Outcome::Deployed | Outcome::Unchanged => Exit::Success,
            Outcome::RolledBack => Exit::RolledBack,
            Outcome::Refused => Exit::Usage,
            Outcome::Unavailable => Exit::Unavailable,
            Outcome::RollbackFailed => Exit::RollbackFailed,
            Outcome::Interrupted => Exit::Interrupted,
        }
    }
}

/// Every step a report can name: typed, so nothing matches on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepName {
    Build,
    Plan,
    Pull,
    Image,
    Reconcile,
    Create,
    Start,
    Verify,
    Health,
    Switch,
    Smoke,
    Drain,
    Retire,
    Prune,
    Rollback,
    VerifyRestored,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Build => "build",
            StepName::Plan => "plan",
            StepName::Pull => "pull",
            StepName::Image => "image",
            StepName::Reconcile => "reconcile",
            StepName::Create => "create",
            StepName::Start => "start",
            StepName::Verify => "verify",
            StepName::Health => "health",
            StepName::Switch => "switch",
            StepName::Smoke => "smoke",
            StepName::Drain => "drain",
            StepName::Retire => "retire",
            StepName::Prune => "prune",
            StepName::Rollback => "rollback",
            StepName::VerifyRestored => "verify-restored",
        }
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: StepName,
    /// Milliseconds since the rollout began.
    pub start_ms: u64,
    pub duration_ms: u64,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Evidence {
    pub health_log: Vec<String>,
    pub log_tail: String,
    pub reload_output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub service: String,
    pub outcome: Outcome,
    /// One sentence: what happened and what serves now.
    pub message: String,
    pub image: String,
    pub revision: crate::revision::Revision,
    pub previous: Option<super::ContainerRef>,
    pub container: Option<String>,
    pub port: Option<u16>,
    pub steps: Vec<Step>,
    pub evidence: Evidence,
    /// From the start call to the health gate passing.
    pub start_to_healthy_ms: Option<u64>,
    /// When the executor began (steps' `start_ms` count from here).
    pub started_unix_ms: u128,
    pub wall_ms: u64,
}

/// What the executor needs besides the plan.
pub struct Context<'a> {
    pub engine: &'a Engine,
    pub agent: &'a HostAgent,
    pub reload: Vec<String>,
    pub cancel: &'a CancellationToken,
}

struct Run<'a> {
    ctx: &'a Context<'a>,
    began: Instant,
    report: Report,
}

impl Run<'_> {
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

    fn end(mut self, outcome: Outcome, message: impl Into<String>) -> Report {
        self.report.outcome = outcome;
        self.report.message = message.into();
        self.report.wall_ms = self.began.elapsed().as_millis() as u64;
        self.report
    }
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
}

/// `rollout` alone: the health gate is the last check.
pub struct NoCheck;

impl AfterSwitch for NoCheck {
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
                "{}; but after putting the previous release back, the public check still fails: {why}. State: {} routes to the previous container{}; the new one was removed. Check Caddy and the previous container on the host, then deploy again or run `slipway rollout REPO@{}` (the previous release's digest)",
                report.message,
                r.snippet.path,
                report.previous.as_ref().map_or(String::new(), |p| format!(
                    " {} on 127.0.0.1:{}",
                    p.name,
                    p.port.unwrap_or_default()
                )),
                report
                    .previous
                    .as_ref()
                    .map_or("<previous digest>".to_string(), |p| p.digest.clone())
            );
        }
    }
}

pub async fn execute(ctx: &Context<'_>, plan: &Plan, hook: &impl AfterSwitch) -> Report {
    let began = Instant::now();
    let mut run = Run {
        ctx,
        began,
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
    };
    match &plan.action {
        Action::AlreadyServing { container } => {
            run.record(
                StepName::Plan,
                began,
                true,
                format!("{} already serves {}", container.name, plan.target.image),
            );
            let message = format!(
                "nothing to do: {} already serves {} (revision {})",
                container.name, plan.target.image, plan.revision
            );
            run.report.container = Some(container.name.clone());
            run.report.port = container.port;
            run.end(Outcome::Unchanged, message)
        }
        Action::Rollout(rollout) => roll(run, plan, rollout, hook).await,
        Action::HostContract { reason, hint } => {
            run.record(StepName::Plan, began, false, reason.clone());
            run.end(Outcome::Unavailable, format!("{reason} ({hint})"))
        }
        Action::Refuse { reason, hint } => {
            run.record(StepName::Plan, began, false, reason.clone());
            run.end(
                Outcome::Refused,
                format!("{reason}; nothing was changed ({hint})"),
            )
        }
    }
}

async fn roll(mut run: Run<'_>, plan: &Plan, r: &Rollout, hook: &impl AfterSwitch) -> Report {
    let engine = run.ctx.engine;
    let image = plan.target.image.to_string();
    run.report.port = Some(r.port);
    run.report.container = Some(r.new.name().to_string());
    let serving = plan
        .active
        .as_ref()
        .map_or("nothing was serving before".to_string(), |a| {
            format!("{} (revision {}) still serves", a.name, a.revision)
        });

    // 1. The image, by digest, exactly.
    let t = Instant::now();
    if r.pull
        && let Err(e) = engine.ensure_image(&image).await
    {
        run.record(StepName::Pull, t, false, e.to_string());
        return run.end(
            Outcome::Unavailable,
            format!("could not pull {image}: {e}; nothing was changed"),
        );
    }
    let info = match engine.inspect_image(&image).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            run.record(
                StepName::Image,
                t,
                false,
                "not in the engine after the pull",
            );
            return run.end(
                Outcome::Unavailable,
                format!("{image} is not in the engine; nothing was changed"),
            );
        }
        Err(e) => {
            run.record(StepName::Image, t, false, e.to_string());
            return run.end(Outcome::Unavailable, format!("{e}; nothing was changed"));
        }
    };
    let digest = plan.target.image.digest();
    if !info
        .repo_digests
        .iter()
        .any(|d| d.ends_with(&format!("@{digest}")))
    {
        run.record(
            StepName::Image,
            t,
            false,
            format!("repo digests {:?}", info.repo_digests),
        );
        return run.end(
            Outcome::Unavailable,
            format!("the engine's copy of {image} does not carry digest {digest} (it has {:?}); nothing was changed", info.repo_digests),
        );
    }
    let mut gate = r.gate.clone();
    if gate.docker && !info.has_healthcheck {
        if gate.http.is_none() {
            run.record(StepName::Image, t, false, "no HEALTHCHECK");
            return run.end(
                Outcome::Refused,
                format!("{image} has no HEALTHCHECK and the spec has no [health.http] probe: add one of them; nothing was changed"),
            );
        }
        tracing::warn!("{image} has no HEALTHCHECK: gating on the HTTP probe alone");
        gate.docker = false;
    }
    run.record(StepName::Image, t, true, format!("{image} is {}", info.id));

    // 2. Reconcile what a run that died left behind: first what Caddy serves, then containers.
    let t = Instant::now();
    let mut cleaned = Vec::new();
    if let Some(applied) = &r.recover {
        if let Err(e) = recover(&run, r, applied).await {
            run.record(StepName::Reconcile, t, false, e.clone());
            return run.end(
                Outcome::Unavailable,
                format!(
                    "could not put back what Caddy last applied to {}: {e}; {serving}",
                    r.snippet.path
                ),
            );
        }
        cleaned.push(format!(
            "{} put back to what Caddy last applied, reloaded",
            r.snippet.file
        ));
        if !r.remove_abandoned.is_empty() {
            tokio::time::sleep(r.drain).await;
        }
    }
    for c in &r.remove_abandoned {
        if let Err(e) = engine.remove_container(&c.id).await {
            run.record(StepName::Reconcile, t, false, e.to_string());
            return run.end(Outcome::Unavailable, format!("{e}; {serving}"));
        }
        cleaned.push(format!("removed abandoned {}", c.name));
    }
    for c in &r.stop_stale {
        if let Err(e) = engine.stop(&c.id, r.stop_grace).await {
            run.record(StepName::Reconcile, t, false, e.to_string());
            return run.end(Outcome::Unavailable, format!("{e}; {serving}"));
        }
        cleaned.push(format!("stopped stale {}", c.name));
    }
    for name in &r.leftovers {
        let _ = engine.remove_container(name).await;
        cleaned.push(format!("removed leftover {name}"));
    }
    if !cleaned.is_empty() {
        run.record(StepName::Reconcile, t, true, cleaned.join(", "));
    }

    // 3. Start the new container in the free slot.
    let t = Instant::now();
    let new_id = match &r.new {
        NewContainer::Create(spec) => match engine.create_app(spec).await {
            Ok(id) => id,
            Err(e) => {
                run.record(StepName::Create, t, false, e.to_string());
                return run.end(Outcome::Unavailable, format!("{e}; {serving}"));
            }
        },
        NewContainer::Restart(c) => c.id.clone(),
    };
    let started = Instant::now();
    if let Err(e) = engine.start(&new_id).await {
        run.record(StepName::Start, t, false, e.to_string());
        return undo(
            run,
            &new_id,
            None,
            r,
            format!("{} did not start: {e}", r.new.name()),
            Outcome::RolledBack,
        )
        .await;
    }
    run.record(
        StepName::Start,
        t,
        true,
        format!("{} on 127.0.0.1:{} (slot {})", r.new.name(), r.port, r.slot),
    );

    // 4. The running container must be the requested digest.
    let t = Instant::now();
    match engine.inspect_container(&new_id).await {
        Ok(Some(c)) if c.image_id == info.id => {
            run.record(
                StepName::Verify,
                t,
                true,
                format!("runs {} = {digest}", c.image_id),
            );
        }
        other => {
            let seen = match other {
                Ok(Some(c)) => c.image_id,
                Ok(None) => "nothing (the container is gone)".into(),
                Err(e) => e.to_string(),
            };
            run.record(
                StepName::Verify,
                t,
                false,
                format!("runs {seen}, expected {}", info.id),
            );
            return undo(
                run,
                &new_id,
                None,
                r,
                format!("{} runs {seen}, not {} ({digest})", r.new.name(), info.id),
                Outcome::RolledBack,
            )
            .await;
        }
    }
    if run.ctx.cancel.is_cancelled() {
        return undo(
            run,
            &new_id,
            None,
            r,
            INTERRUPTED.into(),
            Outcome::Interrupted,
        )
        .await;
    }

    // 5. Health gate.
    let t = Instant::now();
    match gate::pass(
        engine,
        &gate,
        &new_id,
        run.ctx.agent,
        started,
        run.ctx.cancel,
    )
    .await
    {
        Ok(()) => {
            run.report.start_to_healthy_ms = Some(started.elapsed().as_millis() as u64);
            run.record(
                StepName::Health,
                t,
                true,
                format!("healthy {} ms after start", started.elapsed().as_millis()),
            );
        }
        Err(GateFailure::Interrupted) => {
            run.record(StepName::Health, t, false, INTERRUPTED);
            return undo(
                run,
                &new_id,
                None,
                r,
                INTERRUPTED.into(),
                Outcome::Interrupted,
            )
            .await;
        }
        Err(GateFailure::Failed(why)) => {
            run.record(StepName::Health, t, false, why.clone());
            return undo(
                run,
                &new_id,
                None,
                r,
                format!("{} failed its health gate: {why}", r.new.name()),
                Outcome::RolledBack,
            )
            .await;
        }
    }
    if run.ctx.cancel.is_cancelled() {
        return undo(
            run,
            &new_id,
            None,
            r,
            INTERRUPTED.into(),
            Outcome::Interrupted,
        )
        .await;
    }

    // 6. Switch Caddy: snippet, then reload.
    let t = Instant::now();
    let agent = run.ctx.agent;
    if let Err(e) = agent
        .write(engine, &r.snippet.file, Some(&r.snippet.content))
        .await
    {
        run.record(StepName::Switch, t, false, e.to_string());
        return undo(
            run,
            &new_id,
            None,
            r,
            format!("could not write {}: {e}", r.snippet.path),
            Outcome::RolledBack,
        )
        .await;
    }
    let previous = r.snippet.previous.clone().unwrap_or(None);
    let reloaded = match agent.reload(engine, &run.ctx.reload).await {
        Ok(out) => agent
            .mark_applied(engine, &r.snippet.file)
            .await
            .map(|()| out),
        Err(e) => Err(e),
    };
    match reloaded {
        Ok(out) => {
            run.report.evidence.reload_output =
                format!("{}{}", out.stdout, out.stderr).trim().into();
            run.record(
                StepName::Switch,
                t,
                true,
                format!("{} → 127.0.0.1:{}, Caddy reloaded", r.snippet.path, r.port),
            );
        }
        Err(e) => {
            run.report.evidence.reload_output = e.to_string();
            run.record(StepName::Switch, t, false, e.to_string());
            return undo(
                run,
                &new_id,
                Some(previous),
                r,
                format!("the Caddy reload failed: {e}"),
                Outcome::RolledBack,
            )
            .await;
        }
    }

    // 6b. What the caller checks once traffic reaches the new container (deploy: the public
    // smoke test and its watch window). A failure puts the previous release back.
    let t = Instant::now();
    match hook.check(run.ctx.cancel).await {
        Ok(detail) => {
            if !detail.is_empty() {
                run.record(StepName::Smoke, t, true, detail);
            }
        }
        Err(why) => {
            let interrupted = run.ctx.cancel.is_cancelled();
            run.record(StepName::Smoke, t, false, why.clone());
            let outcome = if interrupted {
                Outcome::Interrupted
            } else {
                Outcome::RolledBack
            };
            let mut report = undo(run, &new_id, Some(previous), r, why.clone(), outcome).await;
            if report.outcome == Outcome::RolledBack {
                verify_restored(&mut report, hook, r, &why).await;
            }
            return report;
        }
    }

    // 7. Drain: the old container finishes what it was serving.
    let t = Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(r.drain) => {}
        _ = run.ctx.cancel.cancelled() => {
            run.record(StepName::Drain, t, false, "interrupted");
            return undo(run, &new_id, Some(previous), r, "interrupted".into(), Outcome::Interrupted).await;
        }
    }
    run.record(
        StepName::Drain,
        t,
        true,
        format!("{} ms", r.drain.as_millis()),
    );

    // 8. Retire the old release (kept stopped for rollback) and prune beyond `retain`.
    let t = Instant::now();
    if let Some(old) = &r.retire
        && r.remove_retired
    {
        match engine.remove_container(&old.id).await {
            Ok(()) => run.record(
                StepName::Retire,
                t,
                true,
                format!("removed {} (it stopped answering; not kept)", old.name),
            ),
            Err(e) => run.record(
                StepName::Retire,
                t,
                false,
                format!("{e} (the replacement serves; remove {} by hand)", old.name),
            ),
        }
    } else if let Some(old) = &r.retire {
        match engine.stop(&old.id, r.stop_grace).await {
            Ok(()) => run.record(
                StepName::Retire,
                t,
                true,
                format!("stopped {} (kept for rollback)", old.name),
            ),
            Err(e) => run.record(
                StepName::Retire,
                t,
                false,
                format!("{e} (the new release serves; stop {} by hand)", old.name),
            ),
        }
    }
    let t = Instant::now();
    let mut pruned = Vec::new();
    for c in &r.prune {
        if engine.remove_container(&c.id).await.is_ok() {
            pruned.push(c.name.clone());
        }
    }
    if !pruned.is_empty() {
        run.record(
            StepName::Prune,
            t,
            true,
            format!("removed {}", pruned.join(", ")),
        );
    }
    let message = format!(
        "{} serves {} (revision {}) on 127.0.0.1:{}",
        r.new.name(),
        plan.target.image,
        plan.revision,
        r.port
    );
    run.end(Outcome::Deployed, message)
}

/// Puts the host back: the previous snippet (when the switch happened) and a reload, then the
/// new container removed. `why` is what failed.
async fn undo(
    mut run: Run<'_>,
    new_id: &str,
    restore: Option<Option<String>>,
    r: &Rollout,
    why: String,
    outcome: Outcome,
) -> Report {
    let engine = run.ctx.engine;
    let t = Instant::now();
    if let Ok(Some(info)) = engine.inspect_container(new_id).await {
        run.report.evidence.health_log = info.health_log;
        run.report.evidence.log_tail = engine.log_tail(new_id, 20).await;
    }
    let serving = run.report.previous.as_ref().map_or(
        "nothing serves (there was no previous release)".to_string(),
        |a| format!("{} (revision {}) serves", a.name, a.revision),
    );
    if let Some(previous) = restore {
        let agent = run.ctx.agent;
        let restored = put_back(
            agent,
            engine,
            &r.snippet.file,
            previous.as_deref(),
            &run.ctx.reload,
        )
        .await;
        if let Err((stage, e)) = restored {
            run.record(StepName::Rollback, t, false, e.to_string());
            let switched = run
                .report
                .steps
                .iter()
                .any(|s| s.name == StepName::Switch && s.ok);
            let state = restore_failed(r, run.report.previous.as_ref(), switched, stage);
            let message = format!(
                "{why}; restoring the previous Caddy config failed too ({e}). State: {state}"
            );
            return run.end(Outcome::RollbackFailed, message);
        }
    }
    let removed = take_down(engine, new_id, r).await;
    let detail = match &removed {
        Ok(()) => format!("removed {}; {serving}", r.new.name()),
        Err(e) => format!(
            "{serving}, but {} is still there ({e}): remove it with `docker rm -f {}`",
            r.new.name(),
            r.new.name()
        ),
    };
    run.record(StepName::Rollback, t, removed.is_ok(), detail.clone());
    let verb = if outcome == Outcome::Interrupted {
        "interrupted"
    } else {
        "rolled back"
    };
    match removed {
        Ok(()) => run.end(outcome, format!("{verb}: {why}; {serving}")),
        Err(_) => run.end(outcome, format!("{verb}: {why}; {detail}")),
    }
}

/// `/dir/.web.caddy.applied` beside `/dir/web.caddy`.
fn record_path(snippet: &str) -> String {
    match snippet.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/.{file}.applied"),
        None => format!(".{snippet}.applied"),
    }
}

/// Which part of putting a snippet back failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutBack {
    Write,
    Reload,
    Record,
}

/// Writes `content` to the snippet, reloads, and records it as applied.
async fn put_back(
    agent: &HostAgent,
    engine: &Engine,
    file: &str,
    content: Option<&str>,
    reload: &[String],
) -> Result<(), (PutBack, crate::caddy::CaddyError)> {
    let at = |stage| move |e| (stage, e);
    agent
        .write(engine, file, content)
        .await
        .map_err(at(PutBack::Write))?;
    agent
        .reload(engine, reload)
        .await
        .map_err(at(PutBack::Reload))?;
    agent
        .mark_applied(engine, file)
        .await
        .map_err(at(PutBack::Record))
}

/// The host as a failed restore left it: what the file says, what Caddy serves, what runs, and
/// what to do. `switched`: the switch's reload had made Caddy serve the new container.
fn restore_failed(
    r: &Rollout,
    old: Option<&ContainerRef>,
    switched: bool,
    stage: PutBack,
) -> String {
    let new = format!("127.0.0.1:{} ({})", r.port, r.new.name());
    let prior = old.map_or("nothing (the placeholder)".to_string(), |o| {
        format!("127.0.0.1:{} ({})", o.port.unwrap_or_default(), o.name)
    });
    let file_says = match stage {
        PutBack::Write => new.clone(),
        PutBack::Reload | PutBack::Record => prior.clone(),
    };
    let serves = match stage {
        PutBack::Record => prior.clone(),
        _ if switched => new.clone(),
        _ => prior.clone(),
    };
    let running = old.map_or("there is no previous container".to_string(), |o| {
        format!("the previous container {} is still running", o.name)
    });
    let fix = match old {
        Some(o) => format!(
            "write `reverse_proxy 127.0.0.1:{}` to {} on the host and run `{}` (or fix what the reload reports and run `slipway reload`), then deploy again",
            o.port.unwrap_or_default(),
            r.snippet.path,
            r.reload_command
        ),
        None => format!(
            "write a comment-only placeholder to {} on the host and run `{}`, then deploy again",
            r.snippet.path, r.reload_command
        ),
    };
    let record = record_path(&r.snippet.path);
    format!(
        "{} routes to {file_says}; Caddy serves {serves}; {} is left running so nothing that may serve is lost; {running}. To fix: {fix}; once Caddy serves it, `cp {} {record}` so slipway knows what Caddy applied",
        r.snippet.path,
        r.new.name(),
        r.snippet.path
    )
}

/// Puts back what the last reload applied, so the file and Caddy agree again.
async fn recover(run: &Run<'_>, r: &Rollout, applied: &str) -> Result<(), String> {
    let (engine, agent) = (run.ctx.engine, run.ctx.agent);
    put_back(
        agent,
        engine,
        &r.snippet.file,
        Some(applied),
        &run.ctx.reload,
    )
    .await
    .map_err(|(_, e)| e.to_string())
}

/// Removes (or, for a retained release, stops) the new container for real: retried while the
/// engine does not answer (a dockerd restart brings it back under its restart policy), then
/// checked.
async fn take_down(engine: &Engine, id: &str, r: &Rollout) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..10u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(
                500 * u64::from(attempt.min(4)),
            ))
            .await;
        }
        let done = match &r.new {
            // A retained release goes back to being retained.
            NewContainer::Restart(_) => engine.stop(id, r.stop_grace).await,
            NewContainer::Create(_) => engine.remove_container(id).await,
        };
        match done {
            Err(e) => last = e.with_causes(),
            Ok(()) => match engine.inspect_container(id).await {
                Ok(None) => return Ok(()),
                Ok(Some(c)) if !c.running && matches!(r.new, NewContainer::Restart(_)) => {
                    return Ok(());
                }
                Ok(Some(_)) => last = "the engine still lists it".into(),
                Err(e) => last = e.with_causes(),
            },
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout_to(port: u16) -> Rollout {
        Rollout {
            pull: false,
            recover: None,
            remove_abandoned: Vec::new(),
            stop_stale: Vec::new(),
            leftovers: Vec::new(),
            new: NewContainer::Restart(old("web-b-2", 18002)),
            slot: 1,
            port,
            gate: super::super::Gate {
                docker: true,
                http: None,
                deadline: std::time::Duration::from_secs(1),
            },
            snippet: super::super::SnippetChange {
                file: "web.caddy".into(),
                path: "/etc/caddy/slipway/web.caddy".into(),
                content: String::new(),
                previous: Some(None),
            },
            reload_command: "systemctl reload caddy".into(),
            drain: std::time::Duration::ZERO,
            retire: None,
            remove_retired: false,
            stop_grace: std::time::Duration::ZERO,
            prune: Vec::new(),
            on_failure: Vec::new(),
        }
    }

    fn old(name: &str, port: u16) -> ContainerRef {
        ContainerRef {
            id: name.into(),
            name: name.into(),
            slot: Some(0),
            port: Some(port),
            digest: "sha256:1".into(),
            revision: "v1".into(),
        }
    }

    #[test]
    fn a_failed_restore_reports_the_real_file_and_what_caddy_serves() {
        let r = rollout_to(18002);
        let prev = old("web-a-1", 18001);
        // The write back failed after the switch: the file and Caddy both still name the new one.
        let s = restore_failed(&r, Some(&prev), true, PutBack::Write);
        assert!(s.contains("web.caddy routes to 127.0.0.1:18002 (web-b-2); Caddy serves 127.0.0.1:18002 (web-b-2)"), "{s}");
        // The file was restored but the reload failed: the file names the old, Caddy the new.
        let s = restore_failed(&r, Some(&prev), true, PutBack::Reload);
        assert!(s.contains("web.caddy routes to 127.0.0.1:18001 (web-a-1); Caddy serves 127.0.0.1:18002 (web-b-2)"), "{s}");
        // The switch's own reload had failed: Caddy never left the old one.
        let s = restore_failed(&r, Some(&prev), false, PutBack::Reload);
        assert!(s.contains("Caddy serves 127.0.0.1:18001 (web-a-1)"), "{s}");
        assert!(
            s.contains("To fix: write `reverse_proxy 127.0.0.1:18001`"),
            "{s}"
        );
        // Nothing served before: the placeholder is what to put back.
        let s = restore_failed(&r, None, true, PutBack::Record);
        assert!(s.contains("routes to nothing (the placeholder)"), "{s}");
        assert!(s.contains("placeholder"), "{s}");
    }
}
