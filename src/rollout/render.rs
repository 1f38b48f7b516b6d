//! A plan and a report as text: what `slipway plan` and the rollout commands print.

use std::fmt::Write as _;

use crate::rollout::{self, Plan, Report};

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
pub(crate) fn render_rollout(s: &mut String, r: &rollout::Rollout, image: &str) {
    let steps = [
        steps_before_start(r, image),
        steps_gate(r),
        steps_workers_and_switch(r),
        steps_after_switch(r),
    ];
    for (n, text) in steps.iter().flatten().enumerate() {
        let _ = writeln!(s, "  {}. {text}", n + 1);
    }
    s.push_str("  on failure:\n");
    for f in &r.on_failure {
        let _ = writeln!(s, "    - {f}");
    }
}

/// Taking the lock, reconciling, the release command, the new container.
fn steps_before_start(r: &rollout::Rollout, image: &str) -> Vec<String> {
    let mut v = Vec::new();
    v.push("take the deploy lock".into());
    if r.pull {
        v.push(format!("pull {image} by digest"));
    }
    for c in &r.remove_abandoned {
        v.push(format!("remove {} (left by a run that died)", c.name));
    }
    for c in &r.stop_stale {
        v.push(format!("stop {} (an older release still running)", c.name));
    }
    for w in &r.workers {
        for c in &w.remove {
            v.push(format!(
                "remove worker {} (not the serving release's)",
                c.name
            ));
        }
    }
    if let Some(rel) = &r.release {
        v.push(format!(
                "run the release command `{}` once in a one-shot container of {image} (same env names, network and volumes; killed after {}); anything but exit 0 stops here, nothing switched",
                rel.argv.join(" "),
                humantime::format_duration(rel.deadline)
            ),
        );
    }
    match &r.new {
        rollout::NewContainer::Create(c) => {
            let env: Vec<&str> = c.env.iter().map(|(k, _)| k.as_str()).collect();
            v.push(format!(
                    "create {} on 127.0.0.1:{} -> :{} (slot {}); env: [{}]; volumes: [{}]; memory: {}; cpus: {}; pids: {}; restart: {}; read-only: {}",
                    c.name,
                    r.port,
                    c.container_port,
                    r.slot,
                    env.join(", "),
                    c.volumes.join(", "),
                    c.resources
                        .memory_bytes
                        .map_or("unlimited".into(), |b| format!("{} MiB", b >> 20)),
                    c.resources
                        .nano_cpus
                        .map_or("unlimited".into(), |n| format!("{:.2}", n as f64 / 1e9)),
                    c.resources.pids.map_or("unlimited".into(), |p| p.to_string()),
                    c.restart,
                    c.read_only
                ),
            );
        }
        rollout::NewContainer::Restart(c) => v.push(format!(
            "start the retained {} on 127.0.0.1:{}",
            c.name, r.port
        )),
    }
    v
}

/// Checking the digest, then the health gate.
fn steps_gate(r: &rollout::Rollout) -> Vec<String> {
    let mut v = Vec::new();
    v.push("check the running container's image is that digest".into());
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
    v.push(format!(
        "gate: {} within {}{}",
        gate.join(", then "),
        humantime::format_duration(r.gate.deadline),
        r.health_note
            .as_ref()
            .map_or(String::new(), |n| format!(" ({n})"))
    ));
    v
}

/// The workers, then the switch.
fn steps_workers_and_switch(r: &rollout::Rollout) -> Vec<String> {
    let mut v = Vec::new();
    for w in &r.workers {
        let what = match &w.new {
            rollout::NewContainer::Create(c) => format!(
                "start worker {} (`{}`, no port; env: [{}])",
                c.name,
                c.cmd.join(" "),
                c.env
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            rollout::NewContainer::Restart(c) => format!("start the retained worker {}", c.name),
        };
        let gate = format!(
            "{}still running {} after its start, within {}",
            if w.gate.docker {
                "HEALTHCHECK healthy, "
            } else {
                ""
            },
            humantime::format_duration(w.gate.min_uptime),
            humantime::format_duration(w.gate.deadline)
        );
        v.push(format!("{what}; gate: {gate}; a failure switches nothing"));
    }
    let route = r.snippet.proxy.manual_route(r.port);
    v.push(match r.snippet.proxy {
        crate::host::proxy::ProxyKind::Traefik => {
            format!("write {} -> {route}; {}", r.snippet.path, r.reload_command)
        }
        _ => format!(
            "write {} -> {route} and run `{}` on the host via the privileged sibling",
            r.snippet.path, r.reload_command
        ),
    });
    v
}

/// The drain, the old release, pruning, the lock.
fn steps_after_switch(r: &rollout::Rollout) -> Vec<String> {
    let mut v = Vec::new();
    v.push(format!("drain {}", humantime::format_duration(r.drain)));
    if let Some(old) = r.retire.as_ref().filter(|_| r.remove_retired) {
        v.push(format!(
            "remove {} (it stopped answering; not kept)",
            old.name
        ));
    } else if let Some(old) = &r.retire {
        v.push(format!(
            "stop {} (SIGTERM, {} grace) and keep it for rollback",
            old.name,
            humantime::format_duration(r.stop_grace)
        ));
    }
    for c in &r.prune {
        v.push(format!("remove {} (beyond `retain`)", c.name));
    }
    v.push("release the deploy lock".into());
    v
}

pub fn render_report(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: {}", r.outcome.as_str(), r.message);
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
    if !r.evidence.release_output.is_empty() {
        s.push_str("  release command output (tail):\n");
        for l in r.evidence.release_output.lines() {
            let _ = writeln!(s, "    {l}");
        }
    }
    if r.outcome != rollout::Outcome::Deployed && !r.evidence.reload_output.is_empty() {
        let _ = writeln!(s, "  reload output: {}", r.evidence.reload_output);
    }
    s
}
