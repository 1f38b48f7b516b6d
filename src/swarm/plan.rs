//! The Swarm plan, pure: the service template slipway asks for, and what changes against the
//! service the manager runs now. No I/O, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::engine::{HealthTemplate, SecretMount, ServiceState, ServiceTemplate, UpdatePolicy};
use crate::image::lint::looks_secret_name;
use crate::image::revision::Revision;
use crate::rollout::TargetImage;
use crate::rollout::{LABEL_IMAGE, LABEL_REVISION, LABEL_SERVICE};
use crate::spec::{ServiceSpec, SwarmSpec};

/// What the deploy does to the service.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SwarmAction {
    /// There is no service yet.
    Create,
    /// A start-first update from `from` (its image).
    Update { from: String },
    /// The service already runs this image with this spec.
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwarmPlan {
    pub service: String,
    pub revision: String,
    pub action: SwarmAction,
    pub template: ServiceTemplate,
    /// Env names passed as plain values (never the values).
    pub env_names: Vec<String>,
    /// The lines `plan` shows for the diff: image, replicas, update config.
    pub changes: Vec<String>,
    /// How long to wait for Swarm's verdict.
    pub deadline_secs: u64,
    pub on_failure: Vec<String>,
}

/// The file a secret-named variable arrives in (`NAME_FILE` holds its path).
pub fn secret_target(name: &str) -> String {
    name.to_string()
}

/// The Swarm secret's name for `var` of `service` at `revision` (never derived from the value).
pub fn secret_name(service: &str, var: &str, revision: &Revision) -> String {
    let name = format!(
        "{service}-{}-{}",
        var.to_ascii_lowercase(),
        revision.as_str()
    );
    name.chars().take(64).collect()
}

pub fn plan(
    spec: &ServiceSpec,
    sw: &SwarmSpec,
    image: &TargetImage,
    revision: &Revision,
    values: &[(String, String)],
    current: Option<&ServiceState>,
) -> SwarmPlan {
    let mut template = template(spec, sw, image, revision, values);
    if let Some(c) = current.filter(|c| c.image != template.image) {
        let previous = crate::engine::LABEL_PREVIOUS_IMAGE.to_string();
        template.labels.insert(previous, c.image.clone());
    }
    let action = match current {
        None => SwarmAction::Create,
        Some(c) if c.image == template.image && c.replicas == sw.replicas => SwarmAction::Unchanged,
        Some(c) => SwarmAction::Update {
            from: c.image.clone(),
        },
    };
    let batches = sw.replicas.div_ceil(sw.update_parallelism);
    let per_batch = spec.health.deadline + sw.update_delay;
    let deadline = per_batch * batches as u32 + sw.monitor + Duration::from_secs(30);
    SwarmPlan {
        service: spec.name.clone(),
        revision: revision.to_string(),
        changes: changes(&template, current),
        env_names: template.env.iter().map(|(k, _)| k.clone()).collect(),
        on_failure: on_failure(&action),
        action,
        template,
        deadline_secs: deadline.as_secs(),
    }
}

fn template(
    spec: &ServiceSpec,
    sw: &SwarmSpec,
    image: &TargetImage,
    revision: &Revision,
    values: &[(String, String)],
) -> ServiceTemplate {
    let mut labels: BTreeMap<String, String> = spec.labels.clone();
    labels.insert(LABEL_SERVICE.into(), spec.name.clone());
    labels.insert(LABEL_REVISION.into(), revision.to_string());
    labels.insert(LABEL_IMAGE.into(), image.to_string());
    labels.insert(crate::engine::LABEL_MANAGED.into(), "true".into());
    let (secret, plain): (Vec<_>, Vec<_>) = values
        .iter()
        .cloned()
        .partition(|(name, _)| looks_secret_name(name));
    let mut env = plain;
    let mut secrets = Vec::new();
    for (name, _) in &secret {
        env.push((format!("{name}_FILE"), format!("/run/secrets/{name}")));
        secrets.push(SecretMount {
            secret_id: String::new(),
            secret_name: secret_name(&spec.name, name, revision),
            target: secret_target(name),
        });
    }
    let r = spec.limits.resources();
    ServiceTemplate {
        name: spec.name.clone(),
        image: image.to_string(),
        labels,
        env,
        secrets,
        replicas: sw.replicas,
        network: sw.network.clone(),
        endpoint_mode: sw.endpoint_mode.clone(),
        publish: sw.publish_port.map(|p| (p, spec.container_port)),
        constraints: sw.constraints.clone(),
        update: UpdatePolicy {
            parallelism: sw.update_parallelism,
            delay: sw.update_delay,
            monitor: sw.monitor,
        },
        health: health(spec),
        memory_bytes: r.memory_bytes,
        nano_cpus: r.nano_cpus,
        pids: r.pids,
        user: spec.user.clone(),
        read_only: spec.read_only,
        stop_grace: spec.stop_grace_period,
        volumes: spec.volumes.clone(),
    }
}

/// `[health.http]` becomes the task's health check (busybox/wget in the image); without it the
/// image's own HEALTHCHECK gates each task.
fn health(spec: &ServiceSpec) -> Option<HealthTemplate> {
    let h = spec.health.http.as_ref()?;
    let port = h.port.unwrap_or(spec.container_port);
    let secs = h.timeout.as_secs().max(1);
    Some(HealthTemplate {
        test: vec![
            "CMD-SHELL".into(),
            format!(
                "timeout {secs} wget -q -O /dev/null http://127.0.0.1:{port}{}",
                h.path
            ),
        ],
        interval: h.interval,
        timeout: h.timeout + Duration::from_secs(1),
        retries: h.successes.max(2),
        start_period: Duration::ZERO,
    })
}

fn changes(t: &ServiceTemplate, current: Option<&ServiceState>) -> Vec<String> {
    let u = &t.update;
    let update = format!(
        "update: start-first, {} at a time, delay {}, monitor {}, failure action rollback",
        u.parallelism,
        humantime::format_duration(u.delay),
        humantime::format_duration(u.monitor)
    );
    let endpoint = match t.publish {
        Some((p, target)) => format!(
            "endpoint: {}, host-mode port {p} -> {target}",
            t.endpoint_mode
        ),
        None => format!("endpoint: {} on network {}", t.endpoint_mode, t.network),
    };
    let (image, replicas) = match current {
        None => (
            format!("image: {} (new service)", t.image),
            format!("replicas: {}", t.replicas),
        ),
        Some(c) if c.image == t.image => (
            format!("image: {} (unchanged)", t.image),
            format!("replicas: {} -> {}", c.replicas, t.replicas),
        ),
        Some(c) => (
            format!("image: {} -> {}", c.image, t.image),
            format!("replicas: {} -> {}", c.replicas, t.replicas),
        ),
    };
    vec![image, replicas, update, endpoint]
}

fn on_failure(action: &SwarmAction) -> Vec<String> {
    match action {
        SwarmAction::Create => vec!["remove the new service (nothing served before)".into()],
        SwarmAction::Update { from } => vec![
            format!(
                "Swarm rolls back by itself if a task fails its health gate; after a failed public check: service rollback to {from}"
            ),
            "verify the previous version is served".into(),
        ],
        SwarmAction::Unchanged => Vec::new(),
    }
}

/// The plan as text, for `slipway plan` and `--dry-run`.
pub fn render(plan: &SwarmPlan) -> String {
    let action = match &plan.action {
        SwarmAction::Create => "create the service".to_string(),
        SwarmAction::Update { .. } => "update the service by digest".to_string(),
        SwarmAction::Unchanged => "nothing to change".to_string(),
    };
    let mut out = format!(
        "swarm plan for {} (revision {}): {action}\n",
        plan.service, plan.revision
    );
    for c in &plan.changes {
        out.push_str(&format!("  {c}\n"));
    }
    if !plan.env_names.is_empty() {
        out.push_str(&format!("  env: {}\n", plan.env_names.join(", ")));
    }
    for s in &plan.template.secrets {
        out.push_str(&format!(
            "  secret: {} as /run/secrets/{}\n",
            s.secret_name, s.target
        ));
    }
    out.push_str(&format!(
        "  wait for Swarm's verdict: at most {}s\n",
        plan.deadline_secs
    ));
    for f in &plan.on_failure {
        out.push_str(&format!("  on failure: {f}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec::parse(
            std::path::Path::new("s.toml"),
            "name = \"web\"\ncontainer_port = 8080\nenv = [\"MODE\", \"DB_PASSWORD\"]\n\
             [health]\ndocker = true\n\
             [swarm]\nreplicas = 3\nnetwork = \"apps\"\n",
        )
        .unwrap()
    }

    #[test]
    fn a_dnsrr_swarm_spec_needs_no_caddy_and_no_slots() {
        let s = spec();
        assert_eq!(s.swarm.as_ref().unwrap().endpoint_mode, "dnsrr");
        let err = ServiceSpec::parse(
            std::path::Path::new("s.toml"),
            "name = \"web\"\ncontainer_port = 8080\n[health]\n[swarm]\nreplicas = 2\nnetwork = \"apps\"\nendpoint_mode = \"vip\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("proxy: no [caddy], [traefik] or [nginx] table"),
            "{err}"
        );
        let err = ServiceSpec::parse(
            std::path::Path::new("s.toml"),
            "name = \"web\"\ncontainer_port = 8080\n[health]\n[swarm]\nreplicas = 0\nnetwork = \"apps\"\nendpoint_mode = \"x\"\nupdate_parallelism = 0\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "swarm.replicas:",
            "swarm.endpoint_mode:",
            "swarm.update_parallelism:",
        ] {
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn secret_values_become_swarm_secrets_and_never_reach_the_plan() {
        let s = spec();
        let image = crate::image::reference::PinnedImage::parse(&format!(
            "r/web@sha256:{}",
            "ab".repeat(32)
        ))
        .unwrap();
        let rev = Revision::parse("c0ffee1", "test").unwrap();
        let values = vec![
            ("MODE".to_string(), "prod".to_string()),
            ("DB_PASSWORD".to_string(), "hunter2-very-secret".to_string()),
        ];
        let p = plan(
            &s,
            s.swarm.as_ref().unwrap(),
            &image.clone().into(),
            &rev,
            &values,
            None,
        );
        assert_eq!(p.action, SwarmAction::Create);
        let text = render(&p);
        let json = serde_json::to_string(&p).unwrap();
        for out in [&text, &json] {
            assert!(!out.contains("hunter2"), "{out}");
            assert!(!out.contains("prod\""), "{out}");
        }
        assert!(
            text.contains("secret: web-db_password-c0ffee1 as /run/secrets/DB_PASSWORD"),
            "{text}"
        );
        assert!(
            p.template
                .env
                .contains(&("DB_PASSWORD_FILE".into(), "/run/secrets/DB_PASSWORD".into()))
        );
        assert!(!p.template.env.iter().any(|(_, v)| v.contains("hunter2")));
        let current = ServiceState {
            image: format!("r/web@sha256:{}", "cd".repeat(32)),
            replicas: 3,
            ..Default::default()
        };
        let p = plan(
            &s,
            s.swarm.as_ref().unwrap(),
            &image.clone().into(),
            &rev,
            &values,
            Some(&current),
        );
        assert!(matches!(p.action, SwarmAction::Update { .. }));
        assert!(
            render(&p).contains("image: r/web@sha256:cdcd"),
            "{}",
            render(&p)
        );
    }
}
