//! The new container started while the lock's agent starts (ADR 0010). The lock is taken first
//! (its container created: from then on nobody else can take it); then, side by side, its agent
//! starts and the engine's facts give a first plan. When that plan only starts a container of an
//! image the engine holds with the target digest (nothing to reconcile, no release command, no
//! workers), that container starts at once. Once the agent runs, the snippet completes the facts
//! and the plan is made again: the same rollout keeps the container (the executor adopts it);
//! any other removes it, never having been routed to, and the executor runs the new plan.
//! (Starting the agent after the container instead was measured: equal on a quiet host, ~0.5 s
//! later to the switch on a loaded one, where the gate's probe then waits for the agent.)

use tokio::time::Instant;

use super::execute::Adopted;
use super::inputs::{Choice, Prepared};
use super::read::{FactsError, gather, resolve_target, with_image};
use super::render::render_plan;
use super::{Action, Facts, NewContainer, Plan, SnippetState, Target};
use crate::engine::AppContainer;
use crate::exit::{Exit, Failure};
use crate::host::agent::HostAgent;

/// The first plan, made from the engine's facts before the snippet was read, and the container
/// started for it when that is all it does before the gate.
pub struct First {
    target: Target,
    facts: Facts,
    plan: Plan,
    early: Option<Adopted>,
}

/// Under the created lock, while its agent starts: the first plan, from the engine's facts.
/// `None`: no first plan (not a given image, or the facts could not be read: the locked sequence
/// reads them again and says why).
pub async fn first_plan(p: &Prepared, choice: &Choice) -> Option<First> {
    let Choice::Image { .. } = choice else {
        return None;
    };
    let target = resolve_target(choice, &Facts::default()).ok()?;
    let facts = gather(p, target.image.pinned()).await.ok()?;
    let plan = super::plan(&p.spec, &target, &facts, &p.reload_text);
    tracing::debug!("the engine's facts are read: a first plan");
    Some(First {
        target,
        facts,
        plan,
        early: None,
    })
}

/// Creates and starts the container; `None` (nothing left behind) when either fails.
async fn start_app(p: &Prepared, spec: &AppContainer) -> Option<Adopted> {
    let id = p.engine.create_app(spec).await.ok()?;
    let started = Instant::now();
    if let Err(e) = p.engine.start(&id).await {
        tracing::debug!(
            "the early start of {} failed ({e}); the executor starts it",
            spec.name
        );
        let _ = p.engine.remove_container(&id).await;
        return None;
    }
    tracing::debug!("{} started while the lock's agent starts", spec.name);
    Some(Adopted { id, started })
}

/// The new container's spec when the plan does nothing before it starts, and the engine holds
/// the image with the target digest and a health check the gate allows.
pub(super) fn only_starts<'a>(plan: &'a Plan, facts: &Facts) -> Option<&'a AppContainer> {
    let Action::Rollout(r) = &plan.action else {
        return None;
    };
    let NewContainer::Create(spec) = &r.new else {
        return None;
    };
    let nothing_before = !r.pull
        && r.recover.is_none()
        && r.remove_abandoned.is_empty()
        && r.stop_stale.is_empty()
        && r.leftovers.is_empty()
        && r.release.is_none()
        && r.workers.is_empty();
    let image = facts.image.as_ref()?;
    let digest = plan.target.image.digest()?;
    let pinned = image
        .repo_digests
        .iter()
        .any(|d| d.ends_with(&format!("@{digest}")));
    let gated = super::gate_for_image(&r.gate, image.has_healthcheck).is_ok();
    (nothing_before && pinned && gated).then_some(spec)
}

impl First {
    /// Starts the plan's new container when that is all the plan does before the gate.
    pub async fn start_early(&mut self, p: &Prepared) {
        if let Some(spec) = only_starts(&self.plan, &self.facts) {
            self.early = start_app(p, spec).await;
        }
    }

    /// With the agent running: the snippet read, the plan made again from the same engine facts
    /// plus the snippet. A container started early is kept (returned to adopt) when the rollout
    /// is the same, and removed otherwise.
    pub async fn confirm(
        self,
        p: &Prepared,
        agent: &HostAgent,
    ) -> Result<(Plan, Option<Adopted>), Failure> {
        let snippet = match p.spec.proxy() {
            Some(proxy) => match agent.read(&p.engine, &proxy.file(&p.spec.name)).await {
                Ok(read) => Some(SnippetState::of(read, proxy.kind())),
                Err(e) => {
                    self.abandon(p).await;
                    let hint = format!("check {} in the spec", proxy.dir_key());
                    return Err(
                        Failure::new(Exit::Unavailable, FactsError::Snippet(e)).with_hint(hint)
                    );
                }
            },
            None => None,
        };
        let facts = Facts {
            snippet,
            ..self.facts.clone()
        };
        // No container starts early without the image, so a pull here leaves nothing behind.
        let facts = with_image(&p.engine, self.target.image.pinned(), facts).await?;
        let plan = super::plan(&p.spec, &self.target, &facts, &p.reload_text);
        tracing::info!("{}", render_plan(&plan).lines().next().unwrap_or_default());
        if self.early.is_some() && same_rollout(&self.plan, &plan) {
            return Ok((plan, self.early));
        }
        if self.early.is_some() {
            tracing::info!("the snippet changed the plan: the container started early is removed");
            self.abandon(p).await;
        }
        Ok((plan, None))
    }

    /// Removes the container started early, if any: nothing ever routed to it.
    pub async fn abandon(&self, p: &Prepared) {
        let Some(early) = &self.early else {
            return;
        };
        if let Err(e) = p.engine.remove_container(&early.id).await {
            tracing::warn!("could not remove {}: {e}", early.id);
        }
    }
}

/// The same rollout, but for what only the snippet adds (the snippet to put back on failure,
/// and the failure text naming it).
pub(super) fn same_rollout(first: &Plan, now: &Plan) -> bool {
    let (Action::Rollout(a), Action::Rollout(b)) = (&first.action, &now.action) else {
        return false;
    };
    let mut b = (**b).clone();
    b.snippet.previous = a.snippet.previous.clone();
    b.on_failure = a.on_failure.clone();
    first.active == now.active && first.revision == now.revision && **a == b
}
