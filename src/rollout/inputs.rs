//! A service command's inputs, checked before the engine is touched: the spec, the host access,
//! the reload command, the env values, the engine; and what to roll out.

use std::collections::BTreeMap;

use crate::cli::{GlobalArgs, ServiceArgs, SiblingArgs};
use crate::engine::Engine;
use crate::exit::{Exit, Failure};
use crate::host::lock::Owner;
use crate::host::proxy::Driver;
use crate::host::{self, HostAccess};
use crate::image::revision::Revision;
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
    /// How the proxy takes the written file in.
    /// `None` only for a spec the proxy of which finds the tasks itself (a dnsrr swarm).
    pub driver: Option<Driver>,
    /// The same, as the plan shows it.
    pub reload_text: String,
    pub values: Vec<(String, String)>,
    pub engine: Engine,
    pub owner: Owner,
}

/// The privileged sibling's settings; an unpinned image is a usage error before anything runs.
pub fn host_access(s: &SiblingArgs) -> Result<HostAccess, Failure> {
    HostAccess::new(&s.reload_image, s.host_pid, s.reload_timeout).map_err(|e| {
        let hint = e.hint();
        Failure::usage(anyhow::Error::new(e).context("--reload-image is not usable"))
            .with_hint(hint)
    })
}

/// The reload command as argv; unbalanced quotes or nothing at all are a usage error.
pub fn reload_argv(line: &str) -> Result<Vec<String>, Failure> {
    host::split_command(line)
        .map_err(|e| Failure::usage(e).with_hint("e.g. --reload-command 'systemctl reload caddy'"))
}

/// The spec at `path` with `set` applied; a spec that does not load is a usage error (exit 2).
pub fn load_spec(path: &std::path::Path, set: &[String]) -> Result<ServiceSpec, Failure> {
    ServiceSpec::load(path, set).map_err(|e| {
        let hint = e.hint();
        Failure::usage(e).with_hint(hint)
    })
}

pub fn prepare(global: &GlobalArgs, args: &ServiceArgs) -> Result<Prepared, Failure> {
    let spec = load_spec(&args.config, &args.set)?;
    let over = spec.over_quota();
    if !over.is_empty() && !args.approve_over_quota {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} asks for more than this host's quota: {}",
            args.config.display(),
            over.join("; ")
        ))
        .with_hint("lower the limits, or approve on purpose with --approve-over-quota"));
    }
    let host = host_access(&args.sibling)?;
    let reload = args.reload_command.as_deref();
    let driver = (spec.proxy().is_some() || spec.swarm.is_none())
        .then(|| proxy_driver(&spec, reload))
        .transpose()?;
    let reload_text = driver.as_ref().map(Driver::text).unwrap_or_default();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let values = spec::resolve_env(&spec.all_env_names(), &env).map_err(|missing| {
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
        driver,
        reload_text,
        values,
        engine,
        owner,
    })
}

/// How the spec's proxy takes a file in; `--reload-command` replaces its reload command.
pub fn proxy_driver(spec: &ServiceSpec, reload_override: Option<&str>) -> Result<Driver, Failure> {
    let proxy = spec.proxy().ok_or_else(|| {
        Failure::usage(anyhow::anyhow!("the spec names no proxy to switch"))
            .with_hint("add the table of the proxy this host runs: [caddy], [traefik] or [nginx]")
    })?;
    proxy
        .driver(&spec.name, reload_override)
        .map_err(|e| Failure::usage(e).with_hint("e.g. --reload-command 'systemctl reload caddy'"))
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
    engine.version_once().await.map(|_| ()).map_err(|e| {
        Failure::new(Exit::Unavailable, e).with_hint(
            "is the Docker socket mounted into the job (/var/run/docker.sock)? `slipway doctor` checks every prerequisite",
        )
    })
}

/// A revision from outside (flag, environment, label): refused with exit 2 naming its source.
pub fn revision_arg(text: &str, source: &str) -> Result<Revision, Failure> {
    Revision::parse(text, source).map_err(|e| {
        let hint = e.hint();
        Failure::usage(e).with_hint(hint)
    })
}
