//! The one undo policy: whatever step failed, the host goes back by what had been done (the
//! snippet written, Caddy reloaded, the new container created), never by which step it was.

use super::backend::Backend;
use super::{ContainerRef, Rollout};

/// How far a rollout got: what an undo must take back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The new container (created, or the retained one restarted).
    pub new_id: Option<String>,
    /// The snippet names the new container.
    pub written: bool,
    /// The proxy took it in (reloaded, or showed it served).
    pub reloaded: bool,
    /// The proxy's own test refused it: the proxy still runs what it ran before the write.
    pub rejected: bool,
    /// New workers started: (id, a retained one restarted).
    pub workers: Vec<(String, bool)>,
}

/// Which part of putting a snippet back failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutBack {
    Write,
    Reload,
    Record,
}

/// Writes `content` to the proxy's file, has the proxy take it in, and records it as applied.
pub async fn put_back(
    b: &impl Backend,
    file: &str,
    content: Option<&str>,
) -> Result<(), (PutBack, String)> {
    let at = |stage| move |e| (stage, e);
    b.write_snippet(file, content)
        .await
        .map_err(at(PutBack::Write))?;
    b.check_config().await.map_err(at(PutBack::Reload))?;
    b.apply(content).await.map_err(at(PutBack::Reload))?;
    b.mark_applied(file).await.map_err(at(PutBack::Record))
}

/// After the proxy's test refused the new file: only the file goes back (the proxy never took
/// the new one in, and its applied record still says what it serves).
pub async fn write_back(
    b: &impl Backend,
    file: &str,
    content: Option<&str>,
) -> Result<(), (PutBack, String)> {
    b.write_snippet(file, content)
        .await
        .map_err(|e| (PutBack::Write, e))
}

/// Removes (or, for a retained release, stops) the new container for real: retried while the
/// engine does not answer (a dockerd restart brings it back under its restart policy), then
/// checked.
pub async fn take_down(
    b: &impl Backend,
    id: &str,
    retained: bool,
    grace: std::time::Duration,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..10u64 {
        if attempt > 0 {
            let wait = std::time::Duration::from_millis(500 * attempt.min(4));
            tokio::time::sleep(wait).await;
        }
        let done = if retained {
            b.stop(id, grace).await
        } else {
            b.remove(id).await
        };
        match done {
            Err(e) => last = e,
            Ok(()) => match b.inspect(id).await {
                Ok(None) => return Ok(()),
                Ok(Some(c)) if retained && !c.running => return Ok(()),
                Ok(Some(_)) => last = "the engine still lists it".into(),
                Err(e) => last = e,
            },
        }
    }
    Err(last)
}

/// `/dir/.web.caddy.applied` beside `/dir/web.caddy`.
fn record_path(snippet: &str) -> String {
    match snippet.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/.{file}.applied"),
        None => format!(".{snippet}.applied"),
    }
}

/// The host as a failed restore left it: what the file says, what Caddy serves, what runs, and
/// what to do. `reloaded`: the switch's reload had made Caddy serve the new container.
pub fn restore_failed(
    r: &Rollout,
    old: Option<&ContainerRef>,
    reloaded: bool,
    stage: PutBack,
) -> String {
    let new = format!("127.0.0.1:{} ({})", r.port, r.new.name());
    let prior = old.map_or("nothing (the placeholder)".to_string(), |o| {
        format!("127.0.0.1:{} ({})", o.port.unwrap_or_default(), o.name)
    });
    let proxy = r.snippet.proxy.name();
    let file_says = match stage {
        PutBack::Write => &new,
        PutBack::Reload | PutBack::Record => &prior,
    };
    let serves = match stage {
        PutBack::Record => &prior,
        _ if reloaded => &new,
        _ => &prior,
    };
    let running = old.map_or("there is no previous container".to_string(), |o| {
        format!("the previous container {} is still running", o.name)
    });
    let record = record_path(&r.snippet.path);
    format!(
        "{} routes to {file_says}; {proxy} serves {serves}; {} is left running so nothing that may serve is lost; {running}. To fix: {}; once {proxy} serves it, `cp {} {record}` so slipway knows what {proxy} applied",
        r.snippet.path,
        r.new.name(),
        manual_fix(r, old),
        r.snippet.path
    )
}

fn manual_fix(r: &Rollout, old: Option<&ContainerRef>) -> String {
    match old {
        Some(o) => format!(
            "write `{}` to {} on the host and run `{}` (or fix what the reload reports and run `slipway reload`), then deploy again",
            r.snippet.proxy.manual_route(o.port.unwrap_or_default()),
            r.snippet.path,
            r.reload_command
        ),
        None => format!(
            "write the placeholder `{}` to {} on the host and run `{}`, then deploy again",
            r.snippet.proxy.placeholder().trim().replace('\n', " "),
            r.snippet.path,
            r.reload_command
        ),
    }
}
