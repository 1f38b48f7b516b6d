//! `slipway rollout`, `rollback`, `reload` and `lock`: arguments in, the rollout core called, the
//! result out.

use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, LockAction, LockArgs, ReloadArgs, ServiceArgs};
use crate::exit::{Exit, Failure};
use crate::host::agent::{self};
use crate::host::lock::{self, LockState};
use crate::host::proxy::Driver;
use crate::output;
use crate::rollout::inputs::{host_access, load_spec};
use crate::rollout::read::resolve_target;
use crate::rollout::{
    self, Choice, Facts, connect, execute_locked, plan_only, prepare, reachable, render_plan,
    render_report,
};

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
    if p.spec.swarm.is_some() {
        return swarm_run(&p, args, choice, cancel).await;
    }
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

/// `rollout` and `rollback` of a `[swarm]` spec (ADR 0011).
async fn swarm_run(
    p: &rollout::Prepared,
    args: &ServiceArgs,
    choice: Choice,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let hook = rollout::execute::NoCheck;
    let report = match choice {
        Choice::LastGood => crate::swarm::rollback(p, args.lock_ttl).await?,
        Choice::Image { image, revision } => {
            let image = crate::image::reference::PinnedImage::parse(&image)
                .map_err(|e| Failure::usage(anyhow::Error::new(e)))?;
            let revision = revision.ok_or_else(|| {
                Failure::usage(anyhow::anyhow!("a swarm rollout needs --revision"))
                    .with_hint("pass --revision (SLIPWAY_REVISION)")
            })?;
            crate::swarm::deploy(p, args.lock_ttl, &image, &revision, &hook, cancel).await?
        }
    };
    output::print(args.format, &report, render_report)?;
    let exit = report.outcome.exit();
    if exit != Exit::Success {
        eprintln!("error: {}", report.message);
    }
    Ok(exit)
}

/// `slipway reload`: the proxy's test (nginx), then its reload, each run on the host.
pub async fn reload(
    global: &GlobalArgs,
    args: &ReloadArgs,
    cancel: &CancellationToken,
) -> Result<Exit, Failure> {
    let host = host_access(&args.sibling)?;
    let target = super::proxy_target(args)?;
    let Some(Driver::Reload { kind, test, reload }) = target.driver else {
        let why = match (&target.driver, &target.dir) {
            (Some(d), Some((dir, _))) => format!("{} watches {dir} itself", d.kind().name()),
            _ => "the spec names no proxy".to_string(),
        };
        eprintln!("nothing to reload: {why}");
        return Ok(Exit::Success);
    };
    let engine = connect(global)?;
    reachable(&engine).await?;
    let name = kind.name();
    if let Some(test) = &test {
        let ms = on_host(
            &engine,
            &host,
            test,
            cancel,
            &format!("{name}'s config test"),
        )
        .await
        .map_err(|f| {
            f.with_hint(format!(
                "fix {name}'s config on the host: nothing was reloaded"
            ))
        })?;
        eprintln!("tested: `{}` on the host took {ms} ms", test.join(" "));
    }
    let ms = on_host(
        &engine,
        &host,
        &reload,
        cancel,
        &format!("the {name} reload"),
    )
    .await?;
    eprintln!("reloaded: `{}` on the host took {ms} ms", reload.join(" "));
    Ok(Exit::Success)
}

/// Runs `argv` on the host in a short-lived sibling; its time in ms, or why it failed.
async fn on_host(
    engine: &crate::engine::Engine,
    host: &crate::host::HostAccess,
    argv: &[String],
    cancel: &CancellationToken,
    what: &str,
) -> Result<u128, Failure> {
    match agent::reload_once(engine, host, argv, cancel).await {
        Ok(out) => Ok(out.elapsed.as_millis()),
        Err(agent::AgentError::Engine(e @ crate::engine::EngineError::Interrupted { .. })) => {
            Err(Failure::new(Exit::Interrupted, e))
        }
        Err(agent::AgentError::Reload { code, output }) => Err(Failure::new(
            Exit::Unavailable,
            anyhow::anyhow!("{what} (`{}`) failed on the host (exit {code}): {output}", argv.join(" ")),
        )
        .with_hint("run it on the host by hand to see why; `slipway doctor --config SPEC` checks the sibling and the commands")),
        Err(e) => Err(Failure::new(Exit::Unavailable, e)),
    }
}

/// `slipway lock status|release`.
pub async fn lock_command(global: &GlobalArgs, args: &LockArgs) -> Result<Exit, Failure> {
    let (LockAction::Status(t) | LockAction::Release(t)) = &args.action;
    let spec = load_spec(&t.config, &[])?;
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
                LockState::Releasing { owner, .. } => format!(
                    "{}: released by {owner}, being removed by the engine; free in a moment\n",
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
