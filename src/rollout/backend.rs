//! What the executor asks of the engine and the host, as one seam: the live pair (the engine and
//! the host agent in the lock container), or a fake that records calls in the executor's tests.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::gate::{self, GateFailure, GateRun};
use crate::engine::{AppContainer, ContainerInfo, Engine, ImageInfo, ReleaseExit};
use crate::host::agent::HostAgent;
use crate::host::proxy::Driver;

/// Every call the executor makes that changes or reads the host. Errors are the one-line text a
/// report shows.
#[allow(async_fn_in_trait)] // used through generics inside this crate only
pub trait Backend {
    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, String>;
    async fn create(&self, spec: &AppContainer) -> Result<String, String>;
    async fn start(&self, id: &str) -> Result<(), String>;
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, String>;
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), String>;
    /// Like `stop`, but done once the process has exited; the engine's teardown goes on.
    async fn stop_until_exited(&self, id: &str, grace: Duration) -> Result<(), String>;
    async fn remove(&self, id: &str) -> Result<(), String>;
    async fn log_tail(&self, id: &str) -> String;
    async fn gate(&self, run: GateRun<'_>, cancel: &CancellationToken) -> Result<(), GateFailure>;
    async fn write_snippet(&self, file: &str, content: Option<&str>) -> Result<(), String>;
    /// The proxy's own test of the written file (`nginx -t`); a failure left the proxy as it
    /// was, serving what it served before the write.
    async fn check_config(&self) -> Result<(), String>;
    /// Makes the proxy serve `content` (the file just written; `None`: the placeholder): a
    /// reload, or a wait until the proxy shows it. Its output.
    async fn apply(&self, content: Option<&str>) -> Result<String, String>;
    async fn mark_applied(&self, file: &str) -> Result<(), String>;
    /// Runs the release command once; `Err` only when it could not run (`Err(None)`:
    /// interrupted).
    async fn run_release(
        &self,
        release: &super::Release,
        cancel: &CancellationToken,
    ) -> Result<ReleaseExit, Option<String>>;
}

/// The real engine and host agent.
pub struct Live<'a> {
    pub engine: &'a Engine,
    pub agent: &'a HostAgent,
    pub driver: &'a Driver,
}

impl Backend for Live<'_> {
    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, String> {
        self.engine
            .inspect_image(image)
            .await
            .map_err(|e| e.with_causes())
    }
    async fn create(&self, spec: &AppContainer) -> Result<String, String> {
        self.engine
            .create_app(spec)
            .await
            .map_err(|e| e.with_causes())
    }
    async fn start(&self, id: &str) -> Result<(), String> {
        self.engine.start(id).await.map_err(|e| e.with_causes())
    }
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, String> {
        self.engine
            .inspect_container(id)
            .await
            .map_err(|e| e.with_causes())
    }
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), String> {
        self.engine
            .stop(id, grace)
            .await
            .map_err(|e| e.with_causes())
    }
    async fn stop_until_exited(&self, id: &str, grace: Duration) -> Result<(), String> {
        self.engine
            .stop_until_exited(id, grace)
            .await
            .map_err(|e| e.with_causes())
    }
    async fn remove(&self, id: &str) -> Result<(), String> {
        self.engine
            .remove_container(id)
            .await
            .map_err(|e| e.with_causes())
    }
    async fn log_tail(&self, id: &str) -> String {
        self.engine.log_tail(id, 20).await
    }
    async fn gate(&self, run: GateRun<'_>, cancel: &CancellationToken) -> Result<(), GateFailure> {
        gate::pass(self.engine, self.agent, run, cancel).await
    }
    async fn write_snippet(&self, file: &str, content: Option<&str>) -> Result<(), String> {
        self.agent
            .write(self.engine, file, content, self.driver.kind().placeholder())
            .await
            .map_err(|e| e.to_string())
    }
    async fn check_config(&self) -> Result<(), String> {
        self.driver.check(self.engine, self.agent).await
    }
    async fn apply(&self, content: Option<&str>) -> Result<String, String> {
        self.driver.apply(self.engine, self.agent, content).await
    }
    async fn run_release(
        &self,
        release: &super::Release,
        cancel: &CancellationToken,
    ) -> Result<ReleaseExit, Option<String>> {
        let ran = self
            .engine
            .run_release(&release.container, &release.argv, release.deadline, cancel)
            .await;
        ran.map_err(|e| match e {
            crate::engine::EngineError::Interrupted { .. } => None,
            e => Some(e.with_causes()),
        })
    }
    async fn mark_applied(&self, file: &str) -> Result<(), String> {
        self.agent
            .mark_applied(self.engine, file)
            .await
            .map_err(|e| e.to_string())
    }
}
