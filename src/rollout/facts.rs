//! Facts: what the engine says about a service, read without changing anything.

use super::{Facts, LABEL_SERVICE};
use crate::engine::{Engine, EngineError, LABEL_MANAGED, LABEL_ROLE};
use crate::reference::PinnedImage;

/// What `gather` reads, for any caller (the watchdog passes the env values of the container it
/// replaces and that container's run URL).
pub async fn gather_facts(
    engine: &Engine,
    service: &str,
    image: Option<&PinnedImage>,
    env: Vec<(String, String)>,
    run_url: String,
) -> Result<Facts, EngineError> {
    let all = engine
        .containers_with_labels(&[(LABEL_MANAGED, "true"), (LABEL_SERVICE, service)])
        .await?;
    let (containers, helpers): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|c| c.labels.get(LABEL_ROLE).map(String::as_str) == Some("app"));
    let leftovers = helpers
        .into_iter()
        .filter(|c| {
            matches!(
                c.labels.get(LABEL_ROLE).map(String::as_str),
                Some("agent" | "probe")
            )
        })
        .collect();
    let image = match image {
        Some(i) => engine.inspect_image(&i.to_string()).await?,
        None => None,
    };
    let now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    Ok(Facts {
        containers,
        leftovers,
        image,
        snippet: None,
        env,
        now_unix_ms,
        run_url,
    })
}
