//! The pure planner: from the spec, the target and the facts, every decision of a rollout as
//! data (which slot, what to reconcile, the gate the image allows, the snippet, what to prune,
//! what happens on failure), or a refusal. No I/O, no clock, no environment.

use super::containers::{app_container, container_ref, label, released};
use super::*;
use crate::engine::{AppContainer, ContainerInfo};
use crate::host::proxy::UpstreamValues;
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::spec::ServiceSpec;

/// What the proxy serves, as far as the host shows it: the content the last reload applied, else
/// the file. `None` when not read; `Some(None)` when there is no snippet.
pub fn routed(facts: &Facts) -> Option<Option<&str>> {
    let s = facts.snippet.as_ref()?;
    Some(s.applied.as_deref().or(s.file.as_deref()))
}

/// The applied content to put back when the file says something else (a run died before its
/// reload, or before it recorded it).
fn pending(facts: &Facts) -> Option<String> {
    let s = facts.snippet.as_ref()?;
    let applied = s.applied.as_ref()?;
    (s.file.as_ref() != Some(applied)).then(|| applied.clone())
}

/// The container that serves now: the running one the snippet routes to; without the snippet,
/// the newest running one.
pub fn active(facts: &Facts) -> Option<&ContainerInfo> {
    let running = facts.containers.iter().filter(|c| c.running);
    let kind = facts.snippet.as_ref().map(|s| s.proxy).unwrap_or_default();
    match routed(facts) {
        Some(snippet) => {
            let port = snippet.and_then(|s| kind.routed_port(s))?;
            running
                .into_iter()
                .find(|c| label(c, LABEL_PORT) == port.to_string())
        }
        None => running.max_by_key(|c| released(c)),
    }
}

/// The last good release before the one serving: the newest retained (stopped) container with
/// another digest.
pub fn rollback_target(facts: &Facts) -> Option<&ContainerInfo> {
    let current = active(facts).map(|a| label(a, LABEL_DIGEST));
    facts
        .containers
        .iter()
        .filter(|c| !c.running && Some(label(c, LABEL_DIGEST)) != current)
        .filter(|c| PinnedImage::parse(&label(c, LABEL_IMAGE)).is_ok())
        .max_by_key(|c| released(c))
}

/// The pure planner: no I/O, no clock, no environment.
pub fn plan(spec: &ServiceSpec, target: &Target, facts: &Facts, reload_command: &str) -> Plan {
    let active = active(facts);
    let stop = |revision: Revision, action: Action| Plan {
        service: spec.name.clone(),
        target: target.clone(),
        revision,
        active: active.map(container_ref),
        action,
    };
    let revision = match revision_of(target, facts) {
        Ok(r) => r,
        Err(e) => {
            let (reason, hint) = (e.to_string(), e.hint());
            let revision = Revision::of_digest(target.image.digest_shown());
            return stop(revision, Action::Refuse { reason, hint });
        }
    };
    if let Some((reason, hint)) = host_contract(spec, facts) {
        return stop(revision, Action::HostContract { reason, hint });
    }
    if let Some(a) = active.filter(|a| serves_target(spec, facts, a, target)) {
        let container = container_ref(a);
        return stop(revision, Action::AlreadyServing { container });
    }
    let planned = Planning {
        spec,
        target,
        facts,
        revision: &revision,
        active,
    }
    .rollout(reload_command);
    match planned {
        Ok(r) => stop(revision.clone(), Action::Rollout(Box::new(r))),
        Err((reason, hint)) => stop(revision.clone(), Action::Refuse { reason, hint }),
    }
}

/// The serving container already runs the target, healthy: nothing to do.
fn serves_target(
    spec: &ServiceSpec,
    facts: &Facts,
    active: &ContainerInfo,
    target: &Target,
) -> bool {
    let Some(digest) = target.image.digest() else {
        return false;
    };
    target.replace.is_none()
        && super::workers::workers_current(spec, facts, digest)
        && label(active, LABEL_DIGEST) == digest
        && active.health.as_deref() != Some("unhealthy")
        && !active.paused
}

/// One rollout being planned: its inputs, and one function per decision.
struct Planning<'a> {
    spec: &'a ServiceSpec,
    target: &'a Target,
    facts: &'a Facts,
    revision: &'a Revision,
    active: Option<&'a ContainerInfo>,
}

type Refusal = (String, String);

impl Planning<'_> {
    fn rollout(&self, reload_command: &str) -> Result<Rollout, Refusal> {
        let slot = match self
            .active
            .and_then(|a| label(a, LABEL_SLOT).parse::<usize>().ok())
        {
            Some(0) => 1,
            _ => 0,
        };
        let port = self.spec.slots[slot];
        let (stop_stale, remove_abandoned) = self.others();
        let new = self.new_container(slot, port);
        let prune = self.prune(&new, &stop_stale);
        let snippet = self.snippet(port)?;
        let (gate, health_note) = self.gate()?;
        let on_failure = self.on_failure(&new, &snippet);
        let refs = |v: Vec<&ContainerInfo>| v.into_iter().map(container_ref).collect();
        Ok(Rollout {
            pull: self.facts.image.is_none(),
            recover: pending(self.facts),
            remove_abandoned: refs(remove_abandoned),
            stop_stale: refs(stop_stale),
            leftovers: self
                .facts
                .leftovers
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            release: self.release(slot, port),
            workers: super::workers::plan_workers(
                self.spec,
                self.target,
                self.revision,
                self.facts,
                self.active
                    .map(|a| a.labels.get(LABEL_DIGEST).map_or("", String::as_str)),
            ),
            new,
            slot,
            port,
            gate,
            health_note,
            snippet,
            reload_command: reload_command.to_string(),
            drain: self.spec.drain,
            retire: self.active.map(container_ref),
            remove_retired: self.target.replace.is_some(),
            stop_grace: self.spec.stop_grace_period,
            prune,
            on_failure,
        })
    }

    /// Running containers besides the active one: older releases (stale, stopped and kept) and
    /// newer ones a run that died left (abandoned, removed: the proxy does not route to them).
    fn others(&self) -> (Vec<&ContainerInfo>, Vec<&ContainerInfo>) {
        let active_released = self.active.map(released).unwrap_or(0);
        self.facts
            .containers
            .iter()
            .filter(|c| c.running && Some(&c.id) != self.active.map(|a| &a.id))
            .partition(|c| self.active.is_some() && released(c) < active_released)
    }

    /// A retained container of the target in the free slot (rollback), else a new one.
    fn new_container(&self, slot: usize, port: u16) -> NewContainer {
        let digest = self.target.image.digest();
        let retained = self.facts.containers.iter().filter(|c| {
            !c.running
                && Some(label(c, LABEL_DIGEST).as_str()) == digest
                && label(c, LABEL_SLOT) == slot.to_string()
        });
        match retained
            .max_by_key(|c| released(c))
            .filter(|_| self.target.reuse_retained)
        {
            Some(c) => NewContainer::Restart(container_ref(c)),
            None => NewContainer::Create(Box::new(self.app_in(slot, port))),
        }
    }

    /// The target's app container for `slot`, published on `port`.
    fn app_in(&self, slot: usize, port: u16) -> AppContainer {
        app_container(
            self.spec,
            self.target,
            self.revision,
            self.facts,
            slot,
            port,
        )
    }

    /// The release command of a new release (not of a rollback or a replacement, which run an
    /// image that has run before).
    fn release(&self, slot: usize, port: u16) -> Option<Release> {
        let argv = self.spec.release_command.as_ref()?.argv()?.to_vec();
        if self.target.reuse_retained || self.target.replace.is_some() {
            return None;
        }
        let mut container = self.app_in(slot, port);
        container.name = format!("{}-release-{}", self.spec.name, self.facts.now_unix_ms);
        Some(Release {
            argv,
            deadline: self.spec.release_timeout,
            container,
        })
    }

    /// Stopped releases beyond `retain`, counting the one retired now (unless it is removed).
    fn prune(&self, new: &NewContainer, stale: &[&ContainerInfo]) -> Vec<ContainerRef> {
        let mut stopped: Vec<&ContainerInfo> = self
            .facts
            .containers
            .iter()
            .filter(|c| !c.running && c.name != new.name())
            .chain(stale.iter().copied())
            .collect();
        stopped.sort_by_key(|c| std::cmp::Reverse(released(c)));
        let retiring = self.active.is_some() && self.target.replace.is_none();
        let keep = self.spec.retain.saturating_sub(usize::from(retiring));
        stopped
            .iter()
            .skip(keep)
            .map(|c| container_ref(c))
            .collect()
    }

    fn snippet(&self, port: u16) -> Result<SnippetChange, Refusal> {
        let proxy = self.spec.proxy().ok_or_else(|| {
            let hint = "add the table of the proxy this host runs: [caddy], [traefik] or [nginx]";
            (
                "the spec names no proxy to switch".to_string(),
                hint.to_string(),
            )
        })?;
        let name = &self.spec.name;
        let render = |digest| {
            proxy
                .render(&UpstreamValues {
                    service: name,
                    port,
                    digest,
                    revision: self.revision,
                })
                .map_err(|e| {
                    let hint = "fix the value in the spec; docs/operator-guide.md lists what may be written";
                    (e.to_string(), hint.to_string())
                })
        };
        let content = self.target.image.digest().map(render).transpose()?;
        let previous = self
            .facts
            .snippet
            .as_ref()
            .map(|_| routed(self.facts).flatten().map(String::from));
        Ok(SnippetChange {
            proxy: proxy.kind(),
            path: proxy.path(name).display().to_string(),
            content,
            previous,
            file: proxy.file(name),
        })
    }

    /// The spec's gate, as the image allows it when the engine has the image.
    fn gate(&self) -> Result<(Gate, Option<String>), Refusal> {
        let spec_gate = Gate::from_spec(self.spec, self.revision.as_str());
        let Some(image) = &self.facts.image else {
            return Ok((spec_gate, None));
        };
        let gate = gate_for_image(&spec_gate, image.has_healthcheck).map_err(|why| {
            let hint = "add a HEALTHCHECK to the image or [health.http] to the spec";
            (format!("{} {why}", self.target.image), hint.to_string())
        })?;
        let note = (gate != spec_gate)
            .then(|| "the image has no HEALTHCHECK: the HTTP probe alone gates it".to_string());
        Ok((gate, note))
    }

    fn on_failure(&self, new: &NewContainer, snippet: &SnippetChange) -> Vec<String> {
        let serving = self.active.map_or(
            "nothing was serving before; the service stays down".to_string(),
            |a| format!("{} keeps serving", a.name),
        );
        vec![
            format!("before the switch: remove {} ({serving})", new.name()),
            format!(
                "after the switch: restore the previous {}, {}, check it, remove {}",
                snippet.file,
                snippet.proxy.apply_verb(),
                new.name()
            ),
            "if that restore fails: exit 3 with the state of the host and the commands to run"
                .into(),
        ]
    }
}

/// A missing snippet while releases run: the proxy may route to any of them, so none may be
/// touched. A plan that changes nothing, exit 4.
fn host_contract(spec: &ServiceSpec, facts: &Facts) -> Option<(String, String)> {
    let snippet = facts.snippet.as_ref()?;
    let running: Vec<&str> = facts
        .containers
        .iter()
        .filter(|c| c.running)
        .map(|c| c.name.as_str())
        .collect();
    if snippet.file.is_some() || running.is_empty() {
        return None;
    }
    let proxy = spec.proxy()?;
    let kind = proxy.kind();
    let path = proxy.path(&spec.name).display().to_string();
    let reason = format!(
        "{path} does not exist on the host, but {} of {} still run{}: {} may route to any of them, so slipway changes nothing",
        running.join(", "),
        spec.name,
        if running.len() == 1 { "s" } else { "" },
        kind.name()
    );
    let route = kind
        .manual_route(0)
        .replace(":0", ":<the serving slot's port>");
    let hint = format!(
        "restore the snippet (Day 0, docs/operator-guide.md step 3): write `{route}` to {path} as root on the host, {}, remove the stale record beside it (.{}.applied), then deploy again",
        kind.apply_verb(),
        proxy.file(&spec.name)
    );
    Some((reason, hint))
}

/// The gate an image allows: the spec's, without the Docker health check when the image has
/// none (the HTTP probe alone), or refused when nothing would be left to gate on.
pub fn gate_for_image(gate: &Gate, has_healthcheck: bool) -> Result<Gate, String> {
    if !gate.docker || has_healthcheck {
        return Ok(gate.clone());
    }
    if gate.http.is_none() {
        return Err(
            "has no HEALTHCHECK and the spec has no [health.http] probe: add one of them".into(),
        );
    }
    Ok(Gate {
        docker: false,
        ..gate.clone()
    })
}

/// The revision: given (checked where it entered), else the image's label, checked here: an
/// image label is written by whoever built the image, not by the host's operator.
pub fn revision_of(
    target: &Target,
    facts: &Facts,
) -> Result<Revision, crate::image::revision::RevisionError> {
    if let Some(r) = &target.revision {
        return Ok(r.clone());
    }
    match facts
        .image
        .as_ref()
        .and_then(|i| i.labels.get(REVISION_LABEL))
    {
        Some(label) => {
            Revision::parse(label, "the image's org.opencontainers.image.revision label")
        }
        None => Ok(Revision::of_digest(target.image.digest_shown())),
    }
}
