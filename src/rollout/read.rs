//! What a service command reads before it plans: the target its choice names, the facts the
//! engine (and, under the lock, the host) give, and the image pulled when the engine lacks it.

use super::inputs::{Choice, Prepared, revision_arg};
use super::{Facts, Target};
use crate::engine::{Engine, EngineError, ImageInfo};
use crate::exit::{Exit, Failure};
use crate::host::agent::{AgentError, HostAgent};
use crate::image::reference::PinnedImage;
use crate::rollout;
use crate::spec::ServiceSpec;

/// Why fresh facts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("reading the snippet on the host failed: {0}")]
    Snippet(#[from] AgentError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What the engine and the host say now, read under the lock (side by side): the proxy's file and
/// its applied record, the service's containers, the image if present.
pub async fn fresh_facts(
    engine: &Engine,
    agent: &HostAgent,
    spec: &ServiceSpec,
    image: Option<&PinnedImage>,
    env: Vec<(String, String)>,
    run_url: String,
) -> Result<Facts, FactsError> {
    let snippet = async {
        match spec.proxy() {
            Some(proxy) => {
                let read = agent.read(engine, &proxy.file(&spec.name)).await?;
                Ok::<_, FactsError>(Some(super::facts::SnippetState::of(read, proxy.kind())))
            }
            None => Ok(None),
        }
    };
    let engine_facts =
        async { Ok::<_, FactsError>(super::gather_facts(engine, &spec.name, image).await?) };
    let (snippet, facts) = tokio::try_join!(snippet, engine_facts)?;
    Ok(Facts {
        snippet,
        env,
        run_url,
        ..facts
    })
}

/// Read-only: the service's containers, leftovers of dead runs, the image if present.
pub async fn gather(p: &Prepared, image: Option<&PinnedImage>) -> Result<Facts, Failure> {
    let facts = rollout::gather_facts(&p.engine, &p.spec.name, image)
        .await
        .map_err(|e| Failure::new(Exit::Unavailable, e))?;
    Ok(Facts {
        env: p.values.clone(),
        run_url: p.owner.run.clone(),
        ..facts
    })
}

pub(crate) fn resolve_target(choice: &Choice, facts: &Facts) -> Result<Target, Failure> {
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
                image: image.into(),
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
                    .expect("rollback_target only returns pinned images")
                    .into(),
                revision: Some(revision_arg(&r.revision, &source)?),
                reuse_retained: true,
                replace: None,
            })
        }
    }
}

/// An image the engine lacks is pulled before planning, so the plan reads its revision label and
/// its HEALTHCHECK like any other image's; a failed pull changes nothing.
pub async fn with_image(
    engine: &Engine,
    image: Option<&PinnedImage>,
    facts: Facts,
) -> Result<Facts, Failure> {
    let Some(image) = image.filter(|_| facts.image.is_none()) else {
        return Ok(facts);
    };
    Ok(Facts {
        image: pulled(engine, image).await?,
        ..facts
    })
}

/// The image as the engine holds it, pulled by digest first when it is missing.
pub async fn pulled(engine: &Engine, image: &PinnedImage) -> Result<Option<ImageInfo>, Failure> {
    let unavailable = |e: EngineError| {
        let hint = e.hint().unwrap_or_else(|| {
            format!("push {image} to a registry the host's engine can reach, or `docker pull` it on the host")
        });
        let why =
            anyhow::Error::new(e).context(format!("could not pull {image}; nothing was changed"));
        Failure::new(Exit::Unavailable, why).with_hint(hint)
    };
    let name = image.to_string();
    engine.ensure_image(&name).await.map_err(unavailable)?;
    engine.inspect_image(&name).await.map_err(unavailable)
}
