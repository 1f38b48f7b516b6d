//! The last step of a rollout, past the drain: the old release stopped (kept for rollback), its
//! workers stopped, and stopped releases beyond `retain` removed. They touch different
//! containers, so they run side by side; each is recorded with its own time.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::backend::Backend;
use super::report::StepName;
use super::{ContainerRef, Rollout};

/// One part of the last step, done: what the report records.
pub(super) struct Done {
    pub name: StepName,
    pub started: Instant,
    pub took: Duration,
    pub ok: bool,
    pub detail: String,
}

/// Retires and prunes side by side; what was done, the web release first.
pub(super) async fn retire_and_prune<B: Backend>(b: &B, r: &Rollout) -> Vec<Done> {
    let old_workers = r.workers.iter().flat_map(|w| &w.retire);
    let (web, workers, pruned) = tokio::join!(
        web(b, r),
        join_all(old_workers.map(|old| worker(b, old, r.stop_grace))),
        prune(b, r)
    );
    web.into_iter().chain(workers).chain(pruned).collect()
}

/// The serving release: stopped and kept (done once its process exited; the engine tears it
/// down after), or removed when it is being replaced.
async fn web<B: Backend>(b: &B, r: &Rollout) -> Option<Done> {
    let old = r.retire.as_ref()?;
    let started = Instant::now();
    let (done, kept) = if r.remove_retired {
        (
            b.remove(&old.id).await,
            "removed {} (it stopped answering; not kept)",
        )
    } else {
        (
            b.stop_until_exited(&old.id, r.stop_grace).await,
            "stopped {} (kept for rollback)",
        )
    };
    let (ok, detail) = match done {
        Ok(()) => (true, kept.replace("{}", &old.name)),
        Err(e) => {
            let what = if r.remove_retired { "remove" } else { "stop" };
            let detail = format!("{e} (the new release serves; {what} {} by hand)", old.name);
            (false, detail)
        }
    };
    Some(Done {
        name: StepName::Retire,
        started,
        took: started.elapsed(),
        ok,
        detail,
    })
}

/// One of the serving release's workers: stopped once the new ones run, kept for rollback.
async fn worker<B: Backend>(b: &B, old: &ContainerRef, grace: Duration) -> Done {
    let started = Instant::now();
    let (ok, detail) = match b.stop(&old.id, grace).await {
        Ok(()) => (
            true,
            format!("stopped worker {} (kept for rollback)", old.name),
        ),
        Err(e) => (false, format!("{e} (stop worker {} by hand)", old.name)),
    };
    Done {
        name: StepName::Retire,
        started,
        took: started.elapsed(),
        ok,
        detail,
    }
}

/// Stopped releases (and their workers) beyond `retain`; one record naming those removed.
async fn prune<B: Backend>(b: &B, r: &Rollout) -> Option<Done> {
    let started = Instant::now();
    let old_workers = r.workers.iter().flat_map(|w| &w.prune);
    let removals = r
        .prune
        .iter()
        .chain(old_workers)
        .map(|c| async move { b.remove(&c.id).await.ok().map(|()| c.name.clone()) });
    let pruned: Vec<String> = join_all(removals).await.into_iter().flatten().collect();
    (!pruned.is_empty()).then(|| Done {
        name: StepName::Prune,
        started,
        took: started.elapsed(),
        ok: true,
        detail: format!("removed {}", pruned.join(", ")),
    })
}
