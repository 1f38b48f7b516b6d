//! The executor against a fake backend that records every call: each failure point, and a
//! cancellation in each step, ends with the old release serving and nothing half done.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::engine::{AppContainer, ContainerInfo, ImageInfo};
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::rollout::facts::SnippetState;
use crate::rollout::{Facts, LABEL_DIGEST, LABEL_IMAGE, LABEL_PORT, LABEL_RELEASED, LABEL_SLOT};
use crate::rollout::{Target, plan};
use crate::spec::ServiceSpec;

const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// Records calls; fails each name in `fail` once (listed twice: twice); cancels at `cancel_at`.
struct Fake {
    calls: RefCell<Vec<String>>,
    fail: RefCell<Vec<&'static str>>,
    cancel_at: Option<&'static str>,
    cancel: CancellationToken,
    removed: RefCell<Vec<String>>,
    /// The engine cannot run the release command at all.
    release_unrunnable: bool,
}

impl Fake {
    fn new(fail: &[&'static str], cancel_at: Option<&'static str>) -> Fake {
        Fake {
            calls: RefCell::new(Vec::new()),
            fail: RefCell::new(fail.to_vec()),
            cancel_at,
            cancel: CancellationToken::new(),
            removed: RefCell::new(Vec::new()),
            release_unrunnable: false,
        }
    }

    fn call(&self, name: &'static str, detail: &str) -> Result<(), String> {
        let entry = if detail.is_empty() {
            name.to_string()
        } else {
            format!("{name}:{detail}")
        };
        if self.cancel_at == Some(name) {
            self.cancel.cancel();
        }
        let mut fail = self.fail.borrow_mut();
        let failed = fail
            .iter()
            .position(|f| *f == name || *f == entry)
            .map(|i| fail.remove(i));
        // A failed call is recorded with a `!`: it changed nothing.
        let mark = if failed.is_some() { "!" } else { "" };
        self.calls.borrow_mut().push(format!("{entry}{mark}"));
        match failed {
            Some(_) => Err(format!("{name} failed")),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn called(&self, entry: &str) -> bool {
        self.calls.borrow().iter().any(|c| c == entry)
    }
}

fn container(id: &str) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        name: id.into(),
        image_id: "sha256:cfg".into(),
        running: true,
        paused: false,
        status: "running".into(),
        health: Some("healthy".into()),
        exit_code: 0,
        pid: 42,
        created: String::new(),
        started_at: String::new(),
        finished_at: String::new(),
        labels: BTreeMap::new(),
        health_log: vec!["ok".into()],
    }
}

impl Backend for Fake {
    async fn inspect_image(&self, _: &str) -> Result<Option<ImageInfo>, String> {
        self.call("inspect_image", "")?;
        Ok(Some(ImageInfo {
            id: "sha256:cfg".into(),
            repo_digests: vec![format!("127.0.0.1:5000/web@{NEW}")],
            has_healthcheck: true,
            labels: BTreeMap::new(),
        }))
    }
    async fn create(&self, spec: &AppContainer) -> Result<String, String> {
        self.call("create", "")?;
        Ok(spec.name.clone())
    }
    async fn start(&self, id: &str) -> Result<(), String> {
        self.call("start", id)
    }
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, String> {
        self.call("inspect", id)?;
        Ok((!self.removed.borrow().iter().any(|r| r == id)).then(|| container(id)))
    }
    async fn stop(&self, id: &str, _: Duration) -> Result<(), String> {
        self.call("stop", id)
    }
    async fn stop_until_exited(&self, id: &str, _: Duration) -> Result<(), String> {
        self.call("stop", id)
    }
    async fn remove(&self, id: &str) -> Result<(), String> {
        self.call("remove", id)?;
        self.removed.borrow_mut().push(id.to_string());
        Ok(())
    }
    async fn log_tail(&self, _: &str) -> String {
        "app log".into()
    }
    async fn gate(&self, _: GateRun<'_>, cancel: &CancellationToken) -> Result<(), GateFailure> {
        match self.call("gate", "") {
            Err(e) => Err(GateFailure::Failed(e)),
            Ok(()) if cancel.is_cancelled() => Err(GateFailure::Interrupted),
            Ok(()) => Ok(()),
        }
    }
    async fn write_snippet(&self, _: &str, content: Option<&str>) -> Result<(), String> {
        let to = match content.and_then(crate::host::proxy::caddy::snippet_port) {
            Some(18001) => "old",
            Some(18002) => "new",
            _ => "placeholder",
        };
        self.call("write", to)
    }
    async fn check_config(&self) -> Result<(), String> {
        // Recorded only when a test asks it to fail: Caddy has no test before its reload.
        if self.fail.borrow().contains(&"check") {
            return self.call("check", "");
        }
        Ok(())
    }
    async fn apply(&self, _: Option<&str>) -> Result<String, String> {
        self.call("reload", "").map(|()| "reloaded".into())
    }
    async fn mark_applied(&self, _: &str) -> Result<(), String> {
        self.call("mark", "")
    }
    async fn run_release(
        &self,
        release: &crate::rollout::Release,
        cancel: &CancellationToken,
    ) -> Result<crate::engine::ReleaseExit, Option<String>> {
        let failed = self.call("release", "").is_err();
        if cancel.is_cancelled() {
            return Err(None);
        }
        if self.release_unrunnable {
            return Err(Some("the Docker engine did not answer".into()));
        }
        let secret = &release.container.env[0].1;
        Ok(crate::engine::ReleaseExit {
            code: if failed { Some(3) } else { Some(0) },
            output: format!("migrating with {secret}\ndone"),
            elapsed: Duration::from_millis(5),
        })
    }
}

/// The public check after the switch: passes, fails, or is interrupted (cancels the run).
struct Hook {
    check: Result<String, String>,
    cancel: Option<CancellationToken>,
    restored_checked: RefCell<bool>,
    restored: Result<String, String>,
}

impl Hook {
    fn passing() -> Hook {
        Hook {
            check: Ok("serves v2".into()),
            cancel: None,
            restored_checked: RefCell::new(false),
            restored: Ok("v1 again".into()),
        }
    }
}

impl AfterSwitch for Hook {
    async fn check(&self, _: &CancellationToken) -> Result<String, String> {
        if let Some(c) = &self.cancel {
            c.cancel();
        }
        self.check.clone()
    }
    async fn check_restored(&self, _: Option<&ContainerRef>) -> Result<String, String> {
        *self.restored_checked.borrow_mut() = true;
        self.restored.clone()
    }
}

fn old_release() -> ContainerInfo {
    let mut c = container("old");
    for (k, v) in [
        (crate::rollout::LABEL_SERVICE, "web"),
        (LABEL_SLOT, "0"),
        (LABEL_PORT, "18001"),
        (LABEL_DIGEST, OLD),
        (LABEL_RELEASED, "1"),
    ] {
        c.labels.insert(k.into(), v.into());
    }
    c.labels
        .insert(LABEL_IMAGE.into(), format!("127.0.0.1:5000/web@{OLD}"));
    c
}

const SPEC: &str = "name = \"web\"\nslots = [18001, 18002]\ncontainer_port = 8080\ndrain = \"1ms\"\nenv = [\"DB_PASSWORD\"]\nrelease_command = [\"bin/migrate\"]\n[health]\n[caddy]\nsnippet_dir = \"/etc/caddy/slipway\"\n";

/// v2 over a serving v1, planned as the real planner plans it.
fn the_plan() -> Plan {
    plan_for("")
}

/// The same with `extra` added to the spec (e.g. a worker).
fn plan_for(extra: &str) -> Plan {
    let text = format!("{SPEC}{extra}");
    let spec = ServiceSpec::parse(Path::new("s.toml"), &text).unwrap();
    let old_snippet = "# slipway\nreverse_proxy 127.0.0.1:18001\n".to_string();
    let facts = Facts {
        containers: vec![old_release()],
        image: Some(ImageInfo {
            id: "sha256:cfg".into(),
            repo_digests: vec![format!("127.0.0.1:5000/web@{NEW}")],
            has_healthcheck: true,
            labels: BTreeMap::new(),
        }),
        snippet: Some(SnippetState {
            file: Some(old_snippet.clone()),
            applied: Some(old_snippet),
            proxy: Default::default(),
        }),
        now_unix_ms: 2,
        env: vec![("DB_PASSWORD".into(), "hunter2-secret".into())],
        ..Facts::default()
    };
    let target = Target {
        image: PinnedImage::parse(&format!("127.0.0.1:5000/web@{NEW}"))
            .unwrap()
            .into(),
        revision: Some(Revision::parse("v2", "test").unwrap()),
        reuse_retained: false,
        replace: None,
    };
    plan(&spec, &target, &facts, "systemctl reload caddy")
}

fn new_name(plan: &Plan) -> String {
    match &plan.action {
        Action::Rollout(r) => r.new.name().to_string(),
        other => panic!("{other:?}"),
    }
}

async fn run_with(fake: &Fake, hook: &Hook) -> (Report, String) {
    let plan = the_plan();
    let report = run(fake, &fake.cancel, &plan, hook).await;
    (report, new_name(&plan))
}

/// What must hold after any failure before the old release was retired.
fn assert_old_serves(fake: &Fake, report: &Report, new: &str) {
    assert!(
        !fake.called("stop:old"),
        "the old release was stopped: {:?}",
        fake.calls()
    );
    if fake.called("write:new") {
        let calls = fake.calls();
        let restored = calls.iter().rposition(|c| c == "write:old");
        let switched = calls.iter().position(|c| c == "write:new");
        assert!(
            restored > switched,
            "the previous snippet is back: {calls:?}"
        );
    }
    if fake.called(&format!("start:{new}")) && report.outcome != Outcome::RollbackFailed {
        assert!(
            fake.called(&format!("remove:{new}")),
            "the new container is removed: {:?}",
            fake.calls()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_rollout_runs_its_steps_in_order_and_retires_the_old_last() {
    let fake = Fake::new(&[], None);
    let (report, new) = run_with(&fake, &Hook::passing()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{}", report.message);
    let order = [
        "inspect_image".to_string(),
        "release".into(),
        "create".into(),
        format!("start:{new}"),
        format!("inspect:{new}"),
        "gate".into(),
        "write:new".into(),
        "reload".into(),
        "mark".into(),
        "stop:old".into(),
    ];
    assert_eq!(fake.calls(), order);
    let names: Vec<StepName> = report.steps.iter().map(|s| s.name).collect();
    use StepName::*;
    let expected = [
        Image, Release, Start, Verify, Health, Switch, Smoke, Drain, Retire,
    ];
    assert_eq!(names, expected);
}

#[tokio::test(start_paused = true)]
async fn each_failure_point_leaves_the_old_release_serving() {
    for (fail, outcome) in [
        ("inspect_image", Outcome::Unavailable),
        ("release", Outcome::RolledBack),
        ("create", Outcome::Unavailable),
        ("start", Outcome::RolledBack),
        ("gate", Outcome::RolledBack),
        ("write", Outcome::RolledBack),
        ("reload", Outcome::RolledBack),
        ("mark", Outcome::RolledBack),
    ] {
        let fake = Fake::new(&[fail], None);
        let (report, new) = run_with(&fake, &Hook::passing()).await;
        assert_eq!(report.outcome, outcome, "{fail}: {}", report.message);
        assert_old_serves(&fake, &report, &new);
        if outcome == Outcome::RolledBack {
            assert!(
                report.message.contains("old (revision "),
                "{fail}: {}",
                report.message
            );
        }
        if outcome == Outcome::RolledBack && fail != "release" {
            assert_eq!(report.evidence.log_tail, "app log", "{fail}: evidence kept");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_smoke_test_restores_and_checks_the_previous_release() {
    let fake = Fake::new(&[], None);
    let hook = Hook {
        check: Err("the URL serves v1".into()),
        ..Hook::passing()
    };
    let (report, new) = run_with(&fake, &hook).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_old_serves(&fake, &report, &new);
    assert!(
        *hook.restored_checked.borrow(),
        "the previous release was checked"
    );
    assert!(
        report.message.contains("deployed and rolled back"),
        "{}",
        report.message
    );
    assert_eq!(report.steps.last().unwrap().name, StepName::VerifyRestored);
}

#[tokio::test(start_paused = true)]
async fn a_file_the_proxy_test_refuses_is_written_back_without_a_reload() {
    // nginx -t refused the new file: nginx never took it in, so only the file goes back.
    let fake = Fake::new(&["check"], None);
    let (report, new) = run_with(&fake, &Hook::passing()).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_old_serves(&fake, &report, &new);
    let calls = fake.calls();
    let after_check = &calls[calls.iter().position(|c| c == "check!").unwrap()..];
    assert!(
        !after_check.iter().any(|c| c == "reload" || c == "mark"),
        "{calls:?}"
    );
    assert!(report.message.contains("was refused"), "{}", report.message);
}

#[tokio::test(start_paused = true)]
async fn a_restore_that_fails_too_leaves_the_new_container_running_and_says_so() {
    let fake = Fake::new(&["reload", "reload"], None);
    let hook = Hook {
        restored: Err("serves nothing".into()),
        ..Hook::passing()
    };
    let (report, new) = run_with(&fake, &hook).await;
    assert_eq!(
        report.outcome,
        Outcome::RollbackFailed,
        "{}",
        report.message
    );
    assert!(!fake.called(&format!("remove:{new}")), "{:?}", fake.calls());
    assert!(report.message.contains("To fix:"), "{}", report.message);
}

/// A Caddyfile broken on the host: both reloads fail, Caddy keeps the config it had, and the
/// public URL proves the previous release serves: rolled back, the new container removed.
#[tokio::test(start_paused = true)]
async fn both_reloads_failing_with_the_previous_release_proven_serving_is_a_rollback() {
    let fake = Fake::new(&["reload", "reload"], None);
    let hook = Hook::passing();
    let (report, new) = run_with(&fake, &hook).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(*hook.restored_checked.borrow());
    assert!(fake.called(&format!("remove:{new}")), "{:?}", fake.calls());
}

#[tokio::test(start_paused = true)]
async fn a_failed_retire_keeps_the_release_and_says_what_to_do() {
    let fake = Fake::new(&["stop"], None);
    let (report, _) = run_with(&fake, &Hook::passing()).await;
    assert_eq!(report.outcome, Outcome::Deployed);
    let retire = report
        .steps
        .iter()
        .find(|s| s.name == StepName::Retire)
        .unwrap();
    assert!(
        !retire.ok && retire.detail.contains("stop old by hand"),
        "{retire:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_in_each_step_ends_interrupted_with_the_old_release_serving() {
    for at in [
        "inspect_image",
        "create",
        "start",
        "gate",
        "write",
        "reload",
        "mark",
    ] {
        let fake = Fake::new(&[], Some(at));
        let (report, new) = run_with(&fake, &Hook::passing()).await;
        assert_eq!(
            report.outcome,
            Outcome::Interrupted,
            "{at}: {}",
            report.message
        );
        assert_old_serves(&fake, &report, &new);
    }
    // In the smoke test and in the drain.
    for hook_cancels in [true, false] {
        let fake = Fake::new(&[], None);
        let hook = Hook {
            check: if hook_cancels {
                Err("interrupted".into())
            } else {
                Ok(String::new())
            },
            cancel: Some(fake.cancel.clone()),
            ..Hook::passing()
        };
        let (report, new) = run_with(&fake, &hook).await;
        assert_eq!(report.outcome, Outcome::Interrupted, "{}", report.message);
        assert_old_serves(&fake, &report, &new);
        assert!(
            !*hook.restored_checked.borrow(),
            "an interrupted run does not smoke-test again"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_image_without_a_healthcheck_and_no_probe_is_refused_by_the_plan() {
    let mut plan = the_plan();
    let Action::Rollout(r) = &mut plan.action else {
        panic!()
    };
    assert!(super::super::gate_for_image(&r.gate, false).is_err());
    r.gate.docker = false;
    assert!(super::super::gate_for_image(&r.gate, false).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failed_release_command_starts_nothing_and_shows_its_output_masked() {
    let fake = Fake::new(&["release"], None);
    let (report, _) = run_with(&fake, &Hook::passing()).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_eq!(
        fake.calls(),
        ["inspect_image", "release!"],
        "nothing started"
    );
    assert!(
        report.message.contains("`bin/migrate` exited 3"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("migrating with ***"),
        "{}",
        report.message
    );
    assert!(
        !format!("{report:?}").contains("hunter2-secret"),
        "the value is masked"
    );
}

#[test]
fn a_new_release_plans_its_release_command_without_env_values() {
    let plan = the_plan();
    let Action::Rollout(r) = &plan.action else {
        panic!()
    };
    assert_eq!(r.release.as_ref().unwrap().argv, ["bin/migrate"]);
    let json = serde_json::to_string(&plan).unwrap();
    assert!(!json.contains("hunter2-secret"), "{json}");
}

const WORKER: &str =
    "[workers.jobs]\ncommand = [\"bin/jobs\"]\n[workers.jobs.health]\nmin_uptime = \"1s\"\n";

#[tokio::test(start_paused = true)]
async fn workers_start_and_pass_their_gate_before_the_switch() {
    let plan = plan_for(WORKER);
    let fake = Fake::new(&[], None);
    let report = run(&fake, &fake.cancel, &plan, &Hook::passing()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{}", report.message);
    let calls = fake.calls();
    let worker = calls.iter().position(|c| c == "start:web-jobs-2").unwrap();
    let switch = calls.iter().position(|c| c == "write:new").unwrap();
    assert!(
        worker < switch,
        "the worker is gated before the switch: {calls:?}"
    );
    assert!(
        calls.contains(&"inspect:web-jobs-2".to_string()),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_fails_switches_nothing_and_removes_the_new_containers() {
    let plan = plan_for(WORKER);
    let fake = Fake::new(&["start:web-jobs-2"], None);
    let report = run(&fake, &fake.cancel, &plan, &Hook::passing()).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report.message.contains("worker web-jobs-2 failed"),
        "{}",
        report.message
    );
    assert!(
        !fake.called("write:new"),
        "nothing switched: {:?}",
        fake.calls()
    );
    assert!(fake.called("remove:web-jobs-2"), "{:?}", fake.calls());
    assert!(
        fake.called(&format!("remove:{}", new_name(&plan))),
        "{:?}",
        fake.calls()
    );
    assert!(!fake.called("stop:old"), "{:?}", fake.calls());
}

#[test]
fn a_worker_runs_its_own_argv_without_a_port_and_only_its_env() {
    let plan = plan_for("[workers.jobs]\ncommand = [\"bin/jobs\"]\nenv = [\"QUEUE_URL\"]\n");
    let Action::Rollout(r) = &plan.action else {
        panic!("{:?}", plan.action)
    };
    let NewContainer::Create(c) = &r.workers[0].new else {
        panic!()
    };
    assert_eq!(c.cmd, ["bin/jobs"]);
    assert!(!c.publish);
    assert_eq!(c.labels["dev.slipway.role"], "worker");
    assert!(!c.labels.contains_key(LABEL_PORT));
    let NewContainer::Create(web) = &r.new else {
        panic!()
    };
    assert!(web.publish && web.cmd.is_empty());
    let names: Vec<&str> = c.env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["DB_PASSWORD"],
        "the service's names and its own (QUEUE_URL unset here)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_command_the_engine_cannot_run_is_unavailable_and_starts_nothing() {
    let fake = Fake {
        release_unrunnable: true,
        ..Fake::new(&[], None)
    };
    let (report, _) = run_with(&fake, &Hook::passing()).await;
    assert_eq!(report.outcome, Outcome::Unavailable, "{}", report.message);
    assert!(
        report.message.contains("could not run the release command: the Docker engine did not answer; nothing was switched"),
        "{}",
        report.message
    );
    assert_eq!(
        fake.calls(),
        ["inspect_image", "release"],
        "nothing started"
    );
}

#[tokio::test(start_paused = true)]
async fn a_plan_for_an_image_not_built_yet_is_refused_before_any_call() {
    let fake = Fake::new(&[], None);
    let mut plan = the_plan();
    plan.target.image = crate::rollout::TargetImage::Unbuilt {
        repository: "127.0.0.1:5000/web".into(),
    };
    let report = run(&fake, &fake.cancel, &plan, &Hook::passing()).await;
    assert_eq!(report.outcome, Outcome::Refused, "{}", report.message);
    assert!(
        report
            .message
            .contains("127.0.0.1:5000/web@<built by this deploy> is not built yet"),
        "{}",
        report.message
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

/// The plan without its release command, run with its new container already started.
async fn run_adopted(fake: &Fake) -> (Report, String) {
    let mut plan = the_plan();
    if let Action::Rollout(r) = &mut plan.action {
        r.release = None;
    }
    let new = new_name(&plan);
    let adopted = Adopted {
        id: new.clone(),
        started: Instant::now(),
    };
    let report = run_adopting(fake, &fake.cancel, &plan, &Hook::passing(), Some(adopted)).await;
    (report, new)
}

#[tokio::test(start_paused = true)]
async fn an_adopted_container_is_verified_and_gated_not_created_again() {
    let fake = Fake::new(&[], None);
    let (report, new) = run_adopted(&fake).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{}", report.message);
    let order = [
        "inspect_image".to_string(),
        format!("inspect:{new}"),
        "gate".into(),
        "write:new".into(),
        "reload".into(),
        "mark".into(),
        "stop:old".into(),
    ];
    assert_eq!(fake.calls(), order);
    assert!(report.steps.iter().any(|s| s.name == StepName::Start));
}

#[tokio::test(start_paused = true)]
async fn any_stop_takes_an_adopted_container_down() {
    for fail in ["inspect_image", "gate", "write", "reload", "mark"] {
        let fake = Fake::new(&[fail], None);
        let (report, new) = run_adopted(&fake).await;
        assert_ne!(report.outcome, Outcome::Deployed, "{fail}");
        assert!(
            fake.called(&format!("remove:{new}")),
            "{fail}: the adopted container is removed: {:?}",
            fake.calls()
        );
        assert!(!fake.called("stop:old"), "{fail}: {:?}", fake.calls());
    }
    let fake = Fake::new(&[], Some("inspect_image"));
    let (report, new) = run_adopted(&fake).await;
    assert_eq!(report.outcome, Outcome::Interrupted, "{}", report.message);
    assert!(fake.called(&format!("remove:{new}")), "{:?}", fake.calls());
}
