//! The service commands: `rollout`, `rollback`, `reload`, `lock`. Each gathers facts read-only,
//! plans, then (unless --dry-run) takes the lock and hands the plan to the one executor.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, LockAction, LockArgs, ReloadArgs, ServiceArgs};
use crate::engine::Engine;
use crate::exit::{Exit, Failure};
use crate::host::agent::{self, HostAgent};
use crate::host::lock::{self, LockRequest, LockState, Owner};
use crate::host::{self, HostAccess};
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::output;
use crate::rollout::{self, Facts, Plan, Report, Target};
use crate::spec::{self, ServiceSpec};

/// What to roll out: a given image, or the last good release.
pub enum Choice {
    Image {
        image: String,
        revision: Option<Revision>,
    },
    LastGood,
}

/// Everything a service command needs, checked before the engine is touched.
pub struct Prepared {
    pub spec: ServiceSpec,
    pub host: HostAccess,
    pub reload: Vec<String>,
    pub reload_text: String,
    pub values: Vec<(String, String)>,
    pub engine: Engine,
    pub owner: Owner,
}

/// The privileged sibling's settings; an unpinned image is a usage error before anything runs.
fn host_access(
    image: &str,
    pid: u32,
    deadline: std::time::Duration,
) -> Result<HostAccess, Failure> {
    HostAccess::new(image, pid, deadline).map_err(|e| {
        let hint = e.hint();
        Failure::usage(anyhow::Error::new(e).context("--reload-image is not usable"))
            .with_hint(hint)
    })
}

pub fn prepare(global: &GlobalArgs, args: &ServiceArgs) -> Result<Prepared, Failure> {
    let spec = ServiceSpec::load(&args.config, &args.set).map_err(|e| {
        let hint = e.hint();
        Failure::usage(e).with_hint(hint)
    })?;
    let over = spec.over_quota();
    if !over.is_empty() && !args.approve_over_quota {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} asks for more than this host's quota: {}",
            args.config.display(),
            over.join("; ")
        ))
        .with_hint("lower the limits, or approve on purpose with --approve-over-quota"));
    }
    let host = host_access(&args.reload_image, args.host_pid, args.reload_timeout)?;
    let reload_text = args
        .reload_command
        .clone()
        .unwrap_or_else(|| spec.caddy.reload_command.clone());
    let reload = host::split_command(&reload_text).map_err(|e| {
        Failure::usage(e).with_hint("e.g. --reload-command 'systemctl reload caddy'")
    })?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let values = spec::resolve_env(&spec.env, &env).map_err(|missing| {
        Failure::usage(anyhow::anyhow!(
            "the spec passes {} from the job's environment, but {} not set",
            missing.join(", "),
            if missing.len() == 1 {
                "it is"
            } else {
                "they are"
            }
        ))
        .with_hint(
            "set them in the job (e.g. `env:` from secrets), or remove them from `env` in the spec",
        )
    })?;
    let engine = connect(global)?;
    let owner = Owner::current(&env);
    Ok(Prepared {
        spec,
        host,
        reload,
        reload_text,
        values,
        engine,
        owner,
    })
}

/// The engine at --docker-host / DOCKER_HOST; a socket that is not there is "unavailable" (4).
pub fn connect(global: &GlobalArgs) -> Result<Engine, Failure> {
    Engine::connect(&global.docker_host()).map_err(|e| {
        Failure::new(Exit::Unavailable, e).with_hint(
            "is dockerd running, and is this the right socket? Set --docker-host or DOCKER_HOST (a CI job container needs the host's /var/run/docker.sock mounted)",
        )
    })
}

pub async fn reachable(engine: &Engine) -> Result<(), Failure> {
    engine.version().await.map(|_| ()).map_err(|e| {
        Failure::new(Exit::Unavailable, e).with_hint(
            "is the Docker socket mounted into the job (/var/run/docker.sock)? `slipway doctor` checks every prerequisite",
        )
    })
}

/// Read-only: the service's containers, leftovers of dead runs, the image if present.
pub async fn gather(p: &Prepared, image: Option<&PinnedImage>) -> Result<Facts, Failure> {
    rollout::gather_facts(
        &p.engine,
        &p.spec.name,
        image,
        p.values.clone(),
        p.owner.run.clone(),
    )
    .await
    .map_err(|e| Failure::new(Exit::Unavailable, e))
}

fn resolve_target(choice: &Choice, facts: &Facts) -> Result<Target, Failure> {
    match choice {
        Choice::Image { image, revision } => {
            let image = PinnedImage::parse(image).map_err(|e| {
                let hint = e.hint();
                Failure::usage(
                    anyhow::Error::new(e).context("the image to roll out must be pinned"),
                )
                .with_hint(hint)
            })?;
            Ok(Target {
                image,
                revision: revision.clone(),
                reuse_retained: false,
                replace: None,
            })
        }
        Choice::LastGood => {
            let back = rollout::rollback_target(facts).ok_or_else(|| {
                Failure::usage(anyhow::anyhow!(
                    "there is no retained release to roll back to"
                ))
                .with_hint("rollback returns to a previous release kept stopped on this host (see `retain` in the spec); roll out a pinned image instead")
            })?;
            let r = rollout::container_ref(back);
            let source = format!("the dev.slipway.revision label of {}", r.name);
            Ok(Target {
                image: PinnedImage::parse(&back.labels[rollout::LABEL_IMAGE])
                    .expect("rollback_target only returns pinned images"),
                revision: Some(revision_arg(&r.revision, &source)?),
                reuse_retained: true,
                replace: None,
            })
        }
    }
}

/// A revision from outside (flag, environment, label): refused with exit 2 naming its source.
pub fn revision_arg(text: &str, source: &str) -> Result<Revision, Failure> {
    Revision::parse(text, source).map_err(|e| {
        let hint = e.hint();
        Failure::usage(e).with_hint(hint)
    })
}

/// `rollout` and `rollback`.
pub async fn run(
    global: &GlobalArgs,
    args: &ServiceArgs,
    choice: Choice,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    if let Choice::Image { image, .. } = &choice {
        // Refused before anything else, engine included.
        resolve_target(
            &Choice::Image {
                image: image.clone(),
                revision: None,
            },
            &Facts::default(),
        )?;
    }
    let p = prepare(global, args)?;
    reachable(&p.engine).await?;
    if args.dry_run {
        let plan = plan_only(&p, &choice).await?;
        output::print(args.format, &plan, render_plan)?;
        return Ok(Exit::Success);
    }
    let report = execute_locked(&p, args, &choice, &rollout::execute::NoCheck, cancel).await?;
    output::print(args.format, &report, render_report)?;
    let exit = report.outcome.exit();
    if exit != Exit::Success {
        eprintln!("error: {}", report.message);
    }
    Ok(exit)
}

/// Read-only: facts, then the plan. What `--dry-run` prints.
pub async fn plan_only(p: &Prepared, choice: &Choice) -> Result<Plan, Failure> {
    let facts = gather(p, None).await?;
    let target = resolve_target(choice, &facts)?;
    let facts = gather(p, Some(&target.image)).await?;
    Ok(rollout::plan(&p.spec, &target, &facts, &p.reload_text))
}

/// Takes the lock (whose container is the host agent), plans from fresh facts, executes, and
/// releases the lock on every path.
pub async fn execute_locked(
    p: &Prepared,
    args: &ServiceArgs,
    choice: &Choice,
    hook: &impl rollout::execute::AfterSwitch,
    cancel: &CancellationToken,
) -> Result<Report, Failure> {
    let request = LockRequest {
        service: &p.spec.name,
        host: &p.host,
        snippet_dir: &p.spec.caddy.snippet_dir,
        owner: &p.owner,
        ttl: args.lock_ttl,
        wait: args.lock_wait,
    };
    let body = async |agent: &HostAgent| locked(p, agent, choice, hook, cancel).await;
    rollout::locked::with_lock(&p.engine, &request, cancel, body)
        .await
        .map_err(|e| {
            let exit = match e {
                lock::LockError::Interrupted { .. } => Exit::Interrupted,
                _ => Exit::Unavailable,
            };
            let hint = e.hint();
            Failure::new(exit, e).with_hint(hint)
        })?
}

async fn locked(
    p: &Prepared,
    agent: &HostAgent,
    choice: &Choice,
    hook: &impl rollout::execute::AfterSwitch,
    cancel: &CancellationToken,
) -> Result<Report, Failure> {
    let facts = gather(p, None).await?;
    let target = resolve_target(choice, &facts)?;
    let facts = rollout::locked::fresh_facts(
        &p.engine,
        agent,
        &p.spec.name,
        Some(&target.image),
        p.values.clone(),
        p.owner.run.clone(),
    )
    .await
    .map_err(|e| {
        Failure::new(Exit::Unavailable, e).with_hint("check caddy.snippet_dir in the spec")
    })?;
    let plan = rollout::plan(&p.spec, &target, &facts, &p.reload_text);
    tracing::info!("{}", render_plan(&plan).lines().next().unwrap_or_default());
    let ctx = rollout::execute::Context {
        engine: &p.engine,
        agent,
        reload: p.reload.clone(),
        cancel,
    };
    Ok(rollout::execute(&ctx, &plan, hook).await)
}

pub fn render_plan(plan: &Plan) -> String {
    render_plan_as(plan, &plan.target.image.to_string())
}

/// The plan as text, naming its target image `image` (the deploy's plan names an image it
/// builds `REPOSITORY@<built by this deploy>`).
pub fn render_plan_as(plan: &Plan, image: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "plan for {}: {image} (revision {})",
        plan.service, plan.revision
    );
    match &plan.active {
        Some(a) => {
            let _ = writeln!(
                s,
                "  serving now: {} on 127.0.0.1:{} ({}, revision {})",
                a.name,
                a.port.unwrap_or_default(),
                a.digest,
                a.revision
            );
        }
        None => s.push_str("  serving now: nothing\n"),
    }
    match &plan.action {
        rollout::Action::HostContract { reason, hint }
        | rollout::Action::Refuse { reason, hint } => {
            let _ = writeln!(
                s,
                "  refused: {reason}\n  hint: {hint}\n  nothing will be changed"
            );
        }
        rollout::Action::AlreadyServing { container } => {
            let _ = writeln!(
                s,
                "  nothing to do: {} already serves this digest",
                container.name
            );
        }
        rollout::Action::Rollout(r) => render_rollout(&mut s, r, image),
    }
    s
}

/// The steps of a rollout, numbered, then what happens on failure.
fn render_rollout(s: &mut String, r: &rollout::Rollout, image: &str) {
    let mut n = 0;
    let mut step = |s: &mut String, text: String| {
        n += 1;
        let _ = writeln!(s, "  {n}. {text}");
    };
    step(s, "take the deploy lock".into());
    if r.pull {
        step(s, format!("pull {image} by digest"));
    }
    for c in &r.remove_abandoned {
        step(s, format!("remove {} (left by a run that died)", c.name));
    }
    for c in &r.stop_stale {
        step(
            s,
            format!("stop {} (an older release still running)", c.name),
        );
    }
    match &r.new {
        rollout::NewContainer::Create(c) => {
            let env: Vec<&str> = c.env.iter().map(|(k, _)| k.as_str()).collect();
            step(
                s,
                format!(
                    "create {} on 127.0.0.1:{} -> :{} (slot {}); env: [{}]; volumes: [{}]; memory: {}; cpus: {}; pids: {}; restart: {}; read-only: {}",
                    c.name,
                    r.port,
                    c.container_port,
                    r.slot,
                    env.join(", "),
                    c.volumes.join(", "),
                    c.memory_bytes
                        .map_or("unlimited".into(), |b| format!("{} MiB", b >> 20)),
                    c.nano_cpus
                        .map_or("unlimited".into(), |n| format!("{:.2}", n as f64 / 1e9)),
                    c.pids.map_or("unlimited".into(), |p| p.to_string()),
                    c.restart,
                    c.read_only
                ),
            );
        }
        rollout::NewContainer::Restart(c) => step(
            s,
            format!("start the retained {} on 127.0.0.1:{}", c.name, r.port),
        ),
    }
    step(
        s,
        "check the running container's image is that digest".into(),
    );
    let mut gate = Vec::new();
    if r.gate.docker {
        gate.push("Docker HEALTHCHECK healthy".to_string());
    }
    if let Some(h) = &r.gate.http {
        gate.push(format!(
            "GET {}{} -> {}{} x{}",
            h.url,
            h.host
                .as_ref()
                .map_or(String::new(), |h| format!(" (Host: {h})")),
            h.expect.status,
            h.expect
                .json
                .as_ref()
                .map_or(String::new(), |(f, v)| format!(", {f} == {v}")),
            h.successes
        ));
    }
    step(
        s,
        format!(
            "gate: {} within {}",
            gate.join(", then "),
            humantime::format_duration(r.gate.deadline)
        ),
    );
    step(
        s,
        format!(
            "write {} -> reverse_proxy 127.0.0.1:{} and run `{}` on the host via the privileged sibling",
            r.snippet.path, r.port, r.reload_command
        ),
    );
    step(s, format!("drain {}", humantime::format_duration(r.drain)));
    if let Some(old) = r.retire.as_ref().filter(|_| r.remove_retired) {
        step(
            s,
            format!("remove {} (it stopped answering; not kept)", old.name),
        );
    } else if let Some(old) = &r.retire {
        step(
            s,
            format!(
                "stop {} (SIGTERM, {} grace) and keep it for rollback",
                old.name,
                humantime::format_duration(r.stop_grace)
            ),
        );
    }
    for c in &r.prune {
        step(s, format!("remove {} (beyond `retain`)", c.name));
    }
    step(s, "release the deploy lock".into());
    s.push_str("  on failure:\n");
    for f in &r.on_failure {
        let _ = writeln!(s, "    - {f}");
    }
}

pub fn render_report(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: {}", output::outcome_text(r.outcome), r.message);
    for step in &r.steps {
        let _ = writeln!(
            s,
            "  {:4} {:9} {:>6} ms  {}",
            if step.ok { "ok" } else { "FAIL" },
            step.name,
            step.duration_ms,
            step.detail
        );
    }
    if !r.evidence.health_log.is_empty() {
        s.push_str("  health log:\n");
        for l in &r.evidence.health_log {
            let _ = writeln!(s, "    {l}");
        }
    }
    if !r.evidence.log_tail.is_empty() {
        s.push_str("  container log (tail):\n");
        for l in r.evidence.log_tail.lines() {
            let _ = writeln!(s, "    {l}");
        }
    }
    if r.outcome != rollout::Outcome::Deployed && !r.evidence.reload_output.is_empty() {
        let _ = writeln!(s, "  reload output: {}", r.evidence.reload_output);
    }
    s
}

/// `slipway reload`.
pub async fn reload(
    global: &GlobalArgs,
    args: &ReloadArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let host = host_access(&args.reload_image, args.host_pid, args.reload_timeout)?;
    let argv = host::split_command(&args.reload_command).map_err(|e| {
        Failure::usage(e).with_hint("e.g. --reload-command 'systemctl reload caddy'")
    })?;
    let engine = connect(global)?;
    reachable(&engine).await?;
    match agent::reload_once(&engine, &host, &argv, cancel).await {
        Ok(out) => {
            eprintln!(
                "reloaded: `{}` on the host took {} ms",
                args.reload_command,
                out.elapsed.as_millis()
            );
            Ok(Exit::Success)
        }
        Err(agent::AgentError::Engine(crate::engine::EngineError::Interrupted { .. })) => {
            Ok(Exit::Interrupted)
        }
        Err(e @ agent::AgentError::Reload { .. }) => Err(Failure::new(Exit::Unavailable, e)
            .with_hint("run the command on the host by hand to see why; `slipway doctor` checks the sibling and the command")),
        Err(e) => Err(Failure::new(Exit::Unavailable, e)),
    }
}

/// `slipway lock status|release`.
pub async fn lock_command(global: &GlobalArgs, args: &LockArgs) -> Result<Exit, Failure> {
    let (LockAction::Status(t) | LockAction::Release(t)) = &args.action;
    let spec = ServiceSpec::load(&t.config, &[]).map_err(|e| {
        let hint = e.hint();
        Failure::usage(e).with_hint(hint)
    })?;
    let engine = connect(global)?;
    reachable(&engine).await?;
    let unavailable = |e: crate::engine::EngineError| Failure::new(Exit::Unavailable, e);
    match &args.action {
        LockAction::Status(_) => {
            let state = lock::status(&engine, &spec.name)
                .await
                .map_err(unavailable)?;
            let text = match &state {
                LockState::Free => format!("{}: free\n", spec.name),
                LockState::Held {
                    owner,
                    host,
                    pid,
                    since,
                    ttl_secs,
                } => format!(
                    "{}: held by {owner} (host {host}, pid {pid}) since {since}; expires {ttl_secs}s after its last heartbeat\n",
                    spec.name
                ),
                LockState::Expired { owner, at } => format!(
                    "{}: expired (held by {owner}; heartbeat stopped at {at}); the next run takes it over\n",
                    spec.name
                ),
            };
            output::print(t.format, &state, |_| text)?;
        }
        LockAction::Release(_) => {
            let existed = lock::force_release(&engine, &spec.name)
                .await
                .map_err(unavailable)?;
            eprintln!(
                "{}: {}",
                spec.name,
                if existed {
                    "lock released"
                } else {
                    "there was no lock"
                }
            );
        }
    }
    Ok(Exit::Success)
}
