//! `slipway watch` against the real engine, registry and Caddy: a container frozen with
//! `docker pause` (alive, answering nothing) is replaced and Caddy serves the replacement; a
//! replacement that hangs again is backed off and capped; a healthy service is left alone; a
//! held deploy lock makes it wait; a deploy while it watches is not fought; an engine that goes
//! away is reconnected to.

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::service::{Svc, images};
use crate::support::{code, docker, docker_ok, sandbox, text};

/// Probes every 500 ms, each try bounded to 1 s; Docker's HEALTHCHECK and the HTTP probe gate a
/// replacement as they gate a rollout.
const HEALTH: &str = "docker = true\ndeadline = \"30s\"\n[health.http]\njson_field = \".version\"\ninterval = \"500ms\"\ntimeout = \"1s\"";
const INTERVAL: Duration = Duration::from_millis(500);
const TRY_TIMEOUT: Duration = Duration::from_secs(1);

fn deployed(svc: &Svc, image: &str) {
    let out = svc.run(&["rollout", image], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
}

fn pause(container: &str) {
    docker_ok(&["pause", container]);
}

fn inspect(container: &str, format: &str) -> Option<String> {
    let out = docker(&["inspect", "--format", format, container]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Events as they arrive, each with the moment it arrived; notified on each.
type Stream = Arc<(Mutex<Vec<(Instant, Value)>>, Condvar)>;

/// The running watchdog: its events as they arrive (with the moment each arrived), its stderr.
struct Watchdog {
    child: Option<Child>,
    events: Stream,
    stderr: Arc<Mutex<String>>,
    /// Events before this index were already matched by `next`.
    cursor: usize,
}

impl Watchdog {
    fn start(mut cmd: Command) -> Watchdog {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("slipway watch starts");
        let events: Stream = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout is JSON lines only, got `{line}`: {e}"));
                let (list, cv) = &*sink;
                list.lock().unwrap().push((Instant::now(), value));
                cv.notify_all();
            }
        });
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Watchdog {
            child: Some(child),
            events,
            stderr,
            cursor: 0,
        }
    }

    fn all(&self) -> Vec<Value> {
        self.events
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn of(&self, kind: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    fn log(&self) -> String {
        format!(
            "events:\n{}\nstderr:\n{}",
            self.all()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// The next event (after the last one `next` returned) of `kind` that `pred` accepts, and
    /// when it arrived.
    fn next(
        &mut self,
        kind: &str,
        pred: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> (Instant, Value) {
        let deadline = Instant::now() + within;
        let (list, cv) = &*self.events;
        let mut guard = list.lock().unwrap();
        loop {
            if let Some(i) = guard[self.cursor..]
                .iter()
                .position(|(_, e)| e["event"] == kind && pred(e))
            {
                let found = guard[self.cursor + i].clone();
                self.cursor += i + 1;
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(guard);
                panic!("no `{kind}` event within {within:?}\n{}", self.log());
            }
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// SIGTERM, then the exit code.
    fn stop(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let began = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the readers drain.
                std::thread::sleep(Duration::from_millis(100));
                return status.code().expect("exited, not killed");
            }
            if began.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!(
                    "slipway watch did not stop within 30 s of SIGTERM\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn watch(svc: &Svc, args: &[&str], env: &[(&str, &str)]) -> Watchdog {
    let mut all = vec!["watch"];
    all.extend_from_slice(args);
    Watchdog::start(svc.command(&all, env))
}

/// Probe siblings of `service` left on the engine.
fn probe_siblings(service: &str) -> Vec<String> {
    siblings(service, "-a")
}

fn running_probe_siblings(service: &str) -> Vec<String> {
    siblings(service, "--filter=status=running")
}

fn siblings(service: &str, which: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        which,
        "--filter",
        &format!("label=dev.slipway.service={service}"),
        "--filter",
        "label=dev.slipway.role=watch-probe",
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(String::from)
    .collect()
}

/// Polls the service through Caddy until it serves `version` again; when that first happened.
fn until_served(svc: &Svc, version: &str, within: Duration) -> Instant {
    let began = Instant::now();
    loop {
        let out = Command::new("curl")
            .args(["-s", "-m", "1"])
            .arg(svc.url("/version"))
            .output()
            .unwrap();
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == version {
            return Instant::now();
        }
        assert!(
            began.elapsed() < within,
            "Caddy did not serve {version} again within {within:?}: {:?}",
            svc.containers()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_frozen_container_is_replaced_and_caddy_serves_the_replacement() {
    let img = images();
    let svc = Svc::new("watch-frozen", "", HEALTH);
    deployed(&svc, &img.v1);
    let failures = 3u32;
    let mut w = watch(&svc, &["--failures", &failures.to_string()], &[]);
    let (_, watching) = w.next("watching", |_| true, Duration::from_secs(30));
    let stuck = watching["container"].as_str().unwrap().to_string();
    assert_eq!(watching["revision"], "v1");
    // Let it probe a healthy container a few times first.
    std::thread::sleep(INTERVAL * 4);
    assert!(w.of("probe_failed").is_empty(), "{}", w.log());

    pause(&stuck);
    let paused_at = Instant::now();
    // The public side, polled meanwhile: when does Caddy serve again?
    let served_again = until_served(&svc, "v1", Duration::from_secs(90));
    let (first_at, first) = w.next("probe_failed", |_| true, Duration::from_secs(30));
    assert_eq!(first["streak"], 1, "{}", w.log());
    assert_eq!(first["container"], stuck.as_str());
    for streak in 2..=failures {
        w.next(
            "probe_failed",
            |e| e["streak"] == streak,
            Duration::from_secs(30),
        );
    }
    w.next("replacing", |_| true, Duration::from_secs(30));
    let (replaced_at, replaced) = w.next("replaced", |_| true, Duration::from_secs(60));
    assert!(w.of("replace_failed").is_empty(), "{}", w.log());
    assert_eq!(replaced["old"], stuck.as_str());
    assert_eq!(replaced["revision"], "v1");
    let new = replaced["new"].as_str().unwrap().to_string();

    // Caddy serves the replacement, from the other slot; the stuck one is gone, not kept.
    svc.assert_serves("v1");
    assert!(
        svc.snippet()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", svc.slots[1])),
        "{:?}",
        svc.snippet()
    );
    assert_eq!(
        inspect(&new, "{{.State.Status}}").as_deref(),
        Some("running")
    );
    assert_eq!(
        inspect(&stuck, "{{.State.Status}}"),
        None,
        "the stuck container is removed"
    );
    assert_eq!(svc.running_revisions(), ["v1"], "{:?}", svc.containers());
    let history = inspect(
        &new,
        "{{index .Config.Labels \"dev.slipway.replacements\"}}",
    )
    .unwrap();
    assert_eq!(history.split(',').count(), 1, "{history}");
    // The env it was deployed with is passed on (values from the stuck container).
    let env = inspect(&new, "{{json .Config.Env}}").unwrap();
    assert!(env.contains("\"APP_HEALTH=ok\""), "{env}");

    // Within interval x N (each try of a frozen app lasts its timeout) plus the start time.
    let took = replaced_at - paused_at;
    let start = Duration::from_millis(replaced["start_to_healthy_ms"].as_u64().unwrap());
    let detect = (INTERVAL + TRY_TIMEOUT) * failures;
    let budget = detect + INTERVAL + start + Duration::from_secs(6);
    assert!(
        took <= budget,
        "replaced {took:?} after the pause; budget {budget:?}\n{}",
        w.log()
    );
    eprintln!(
        "watch figures: pause -> replaced event {} ms; first failed probe -> replacement serving {} ms (watchdog's own measure); pause -> Caddy serves again {} ms; first failure event -> replaced event {} ms; replacement start -> healthy {} ms; replacement took {} ms",
        took.as_millis(),
        replaced["first_failure_to_serving_ms"],
        (served_again - paused_at).as_millis(),
        (replaced_at - first_at).as_millis(),
        start.as_millis(),
        replaced["replace_ms"]
    );

    // It watches the replacement now, and SIGTERM stops it cleanly, leaving nothing behind.
    w.next(
        "watching",
        |e| e["container"] == new.as_str(),
        Duration::from_secs(30),
    );
    std::thread::sleep(INTERVAL * 3);
    assert_eq!(w.stop(), 0, "{}", w.log());
    w.next("stopped", |_| true, Duration::from_secs(5));
    assert!(
        probe_siblings(&svc.name).is_empty(),
        "{:?}",
        svc.containers()
    );
    assert!(
        !svc.containers().iter().any(|c| c.contains(" lock ")),
        "{:?}",
        svc.containers()
    );
    assert_eq!(
        w.of("replaced").len(),
        1,
        "one replacement, no more: {}",
        w.log()
    );
}

#[test]
fn a_replacement_that_hangs_again_is_backed_off_then_capped() {
    let img = images();
    let svc = Svc::new("watch-flap", "", HEALTH);
    deployed(&svc, &img.v1);
    let args = [
        "--failures",
        "2",
        "--backoff",
        "10s",
        "--cap",
        "2",
        "--window",
        "10m",
    ];
    let mut w = watch(&svc, &args, &[]);
    let (_, watching) = w.next("watching", |_| true, Duration::from_secs(30));
    pause(watching["container"].as_str().unwrap());
    let (first_at, first) = w.next("replaced", |_| true, Duration::from_secs(60));
    // The replacement hangs too, as soon as it serves.
    let new1 = first["new"].as_str().unwrap().to_string();
    pause(&new1);
    let (_, backoff) = w.next("backoff", |_| true, Duration::from_secs(60));
    assert_eq!(backoff["container"], new1.as_str(), "{}", w.log());
    assert_eq!(backoff["replacements"], 1);
    let wait = backoff["retry_in_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 10_000, "{backoff}");
    let (second_at, second) = w.next("replaced", |_| true, Duration::from_secs(60));
    assert_eq!(second["old"], new1.as_str());
    assert!(
        second_at - first_at >= Duration::from_secs(8),
        "the second replacement waited out the backoff: {:?}\n{}",
        second_at - first_at,
        w.log()
    );
    let new2 = second["new"].as_str().unwrap().to_string();
    let history = inspect(
        &new2,
        "{{index .Config.Labels \"dev.slipway.replacements\"}}",
    )
    .unwrap();
    assert_eq!(history.split(',').count(), 2, "carried forward: {history}");
    pause(&new2);
    let (_, capped) = w.next("capped", |_| true, Duration::from_secs(60));
    assert_eq!(capped["container"], new2.as_str());
    assert_eq!(capped["replacements"], 2);
    assert!(
        capped["message"]
            .as_str()
            .unwrap()
            .contains("crash-loop protection"),
        "{capped}"
    );
    // Past the cap: it goes on probing but replaces nothing more.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(w.of("replacing").len(), 2, "{}", w.log());
    assert_eq!(w.of("capped").len(), 1, "said once, loudly: {}", w.log());
    assert!(w.stderr.lock().unwrap().contains("CAPPED"), "{}", w.log());
    assert_eq!(
        inspect(&new2, "{{.State.Status}}").as_deref(),
        Some("paused")
    );
    assert_eq!(w.stop(), 0, "{}", w.log());

    // The history lives on the container, so `--once` knows too: exit 5, `capped`.
    let out = svc.run(
        &[
            "watch",
            "--once",
            "--failures",
            "2",
            "--cap",
            "2",
            "--window",
            "10m",
        ],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 5, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"event\":\"capped\""), "{stdout}");
    assert!(
        stdout.contains("replacement held back (capped)"),
        "{stdout}"
    );
    // With room under the cap but a long backoff: held back by the backoff, also exit 5.
    let out = svc.run(
        &[
            "watch",
            "--once",
            "--failures",
            "2",
            "--cap",
            "5",
            "--backoff",
            "1h",
            "--max-backoff",
            "2h",
        ],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 5, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"event\":\"backoff\""), "{stdout}");
    assert_eq!(
        inspect(&new2, "{{.State.Status}}").as_deref(),
        Some("paused")
    );
    // With the protection out of the way, `--once` repairs it: exit 0, and Caddy serves.
    let out = svc.run(
        &[
            "watch",
            "--once",
            "--failures",
            "2",
            "--cap",
            "5",
            "--backoff",
            "1s",
        ],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"event\":\"replaced\""), "{stdout}");
    svc.assert_serves("v1");
    assert!(
        probe_siblings(&svc.name).is_empty(),
        "{:?}",
        svc.containers()
    );
}

#[test]
fn a_healthy_service_is_left_alone() {
    let img = images();
    let svc = Svc::new("watch-healthy", "", HEALTH);
    deployed(&svc, &img.v1);
    // Another service on the host, deployed but not given at first: noted, not watched; its
    // spec dropped into --config-dir later is picked up without a restart.
    let other = Svc::new("watch-later", "", HEALTH);
    deployed(&other, &img.v1);
    let dir = svc.dir.join("specs.d");
    std::fs::create_dir_all(&dir).unwrap();
    let id_before = svc.containers();
    let args = [
        "-v",
        "--failures",
        "2",
        "--interval",
        "200ms",
        "--config-dir",
        dir.to_str().unwrap(),
    ];
    let mut w = watch(&svc, &args, &[]);
    let (_, watching) = w.next(
        "watching",
        |e| e["service"] == "watch-healthy",
        Duration::from_secs(30),
    );
    let id = inspect(watching["container"].as_str().unwrap(), "{{.Id}}").unwrap();
    assert_eq!(watching["id"], id.as_str());
    w.next(
        "unwatched",
        |e| e["service"] == "watch-later",
        Duration::from_secs(30),
    );
    std::fs::copy(other.spec_path(), dir.join("watch-later.toml")).unwrap();
    w.next(
        "watching",
        |e| e["service"] == "watch-later",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(w.stop(), 0, "{}", w.log());
    let answered = w
        .stderr
        .lock()
        .unwrap()
        .lines()
        .filter(|l| l.contains("watch-healthy: ") && l.contains(" answers ("))
        .count();
    assert!(
        answered >= 20,
        "it did probe, {answered} times\n{}",
        w.log()
    );
    let mine = |kind: &str| -> Vec<Value> {
        w.of(kind)
            .into_iter()
            .filter(|e| e["service"] == "watch-healthy")
            .collect()
    };
    for kind in [
        "probe_failed",
        "replacing",
        "replaced",
        "replace_failed",
        "backoff",
        "capped",
        "lock_held",
    ] {
        assert!(mine(kind).is_empty(), "{kind}: {}", w.log());
    }
    assert_eq!(mine("watching").len(), 1, "{}", w.log());
    assert_eq!(svc.containers(), id_before, "same containers");
    assert_eq!(
        inspect(&id, "{{.State.Status}}").as_deref(),
        Some("running")
    );
    svc.assert_serves("v1");
    // --once on a healthy service: exit 0, nothing changed.
    let out = svc.run(&["watch", "--once"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"result\":\"healthy\""), "{stdout}");
    assert_eq!(svc.containers(), id_before);
}

#[test]
fn a_held_deploy_lock_makes_it_wait() {
    let img = images();
    let svc = Svc::new("watch-locked", "", HEALTH);
    deployed(&svc, &img.v1);
    // The deploy's own lock may still be being removed (released once its process exited).
    svc.containers();
    // The lock as `slipway rollout` makes it (src/lock.rs): a running container of that name.
    let lock = format!("slipway-lock-{}", svc.name);
    let owner = "https://git.example/o/r/actions/runs/42";
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &lock,
        "--label",
        "dev.slipway.managed=true",
        "--label",
        "dev.slipway.role=lock",
        "--label",
        &format!("dev.slipway.service={}", svc.name),
        "--label",
        &format!("dev.slipway.lock.owner={owner}"),
        &sandbox().base_image,
        "sleep",
        "600",
    ]);
    let app = svc
        .containers()
        .into_iter()
        .find(|c| c.contains(" running app "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    pause(&app);
    let mut w = watch(&svc, &["--failures", "2"], &[]);
    let (_, held) = w.next("lock_held", |_| true, Duration::from_secs(30));
    assert_eq!(held["owner"], owner);
    // --once meanwhile: exit 4, nothing changed.
    let out = svc.run(&["watch", "--once", "--failures", "2"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"event\":\"lock_held\""), "{stdout}");
    // Several times what it takes to replace a frozen container, and nothing happens.
    std::thread::sleep((INTERVAL + TRY_TIMEOUT) * 2 * 4);
    for kind in ["probe_failed", "replacing", "replaced"] {
        assert!(
            w.of(kind).is_empty(),
            "{kind} while the lock is held: {}",
            w.log()
        );
    }
    assert_eq!(w.of("lock_held").len(), 1, "said once: {}", w.log());
    assert_eq!(
        inspect(&app, "{{.State.Status}}").as_deref(),
        Some("paused")
    );
    // The deploy is over: it probes, finds it stuck, and replaces it.
    docker_ok(&["rm", "-f", &lock]);
    w.next("probe_failed", |_| true, Duration::from_secs(30));
    let (_, replaced) = w.next("replaced", |_| true, Duration::from_secs(60));
    assert_eq!(replaced["old"], app.as_str());
    svc.assert_serves("v1");
    assert_eq!(w.stop(), 0, "{}", w.log());
}

#[test]
fn a_deploy_while_watching_is_not_fought_and_the_new_release_is_picked_up() {
    let img = images();
    // Gated on the HTTP probe alone: the image's HEALTHCHECK gives up on a 3 s start.
    let svc = Svc::new(
        "watch-deploy",
        "",
        &HEALTH.replace("docker = true", "docker = false"),
    );
    deployed(&svc, &img.v1);
    let mut w = watch(&svc, &["--failures", "2"], &[]);
    w.next(
        "watching",
        |e| e["revision"] == "v1",
        Duration::from_secs(30),
    );
    // A slow start: the new container answers nothing for 3 s while the rollout gates it.
    let out = svc.run(&["rollout", &img.v2], &[("APP_START_DELAY", "3")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    let (_, v2) = w.next(
        "watching",
        |e| e["revision"] == "v2",
        Duration::from_secs(30),
    );
    std::thread::sleep(INTERVAL * 4);
    for kind in ["probe_failed", "replacing", "replaced", "replace_failed"] {
        assert!(w.of(kind).is_empty(), "{kind} during a deploy: {}", w.log());
    }
    assert!(
        !w.of("lock_held").is_empty(),
        "it saw the deploy's lock and stood back: {}",
        w.log()
    );
    svc.assert_serves("v2");
    // The new release is watched like the old one was: frozen, it is replaced by the same digest.
    pause(v2["container"].as_str().unwrap());
    let (_, replaced) = w.next("replaced", |_| true, Duration::from_secs(60));
    assert_eq!(replaced["revision"], "v2");
    svc.assert_serves("v2");
    let digest = inspect(
        replaced["new"].as_str().unwrap(),
        "{{index .Config.Labels \"dev.slipway.digest\"}}",
    );
    assert_eq!(digest.as_deref(), v2["digest"].as_str(), "the same digest");
    // Killed outright, it leaves no probe sibling behind: the sibling's stdin is the watchdog's
    // attach, so it ends and removes itself.
    let new = replaced["new"].as_str().unwrap().to_string();
    w.next(
        "watching",
        |e| e["container"] == new.as_str(),
        Duration::from_secs(30),
    );
    let since = Instant::now();
    while running_probe_siblings(&svc.name).is_empty() {
        assert!(since.elapsed() < Duration::from_secs(10), "{}", w.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut child = w.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    while !probe_siblings(&svc.name).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the probe sibling outlived its watchdog: {:?}",
            svc.containers()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Killed between creating and starting it, a watchdog leaves a sibling that never ran:
    // the next rollout removes it with the other leftovers of dead runs.
    let labels = [
        "dev.slipway.managed=true",
        &format!("dev.slipway.service={}", svc.name),
        "dev.slipway.role=watch-probe",
    ];
    let base = sandbox().base_image;
    let mut create = vec!["create", "--name", "slipway-probe-watch-deploy-dead"];
    for l in &labels {
        create.extend(["--label", l]);
    }
    create.extend([base.as_str(), "true"]);
    docker_ok(&create);
    assert_eq!(probe_siblings(&svc.name).len(), 1);
    let out = svc.run(&["rollout", &img.v1], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(
        probe_siblings(&svc.name).is_empty(),
        "{:?}",
        svc.containers()
    );
    svc.assert_serves("v1");
}

/// A unix-socket forwarder to the sandbox's Docker socket that the test can cut and restore,
/// so the watchdog sees its engine go away and come back while the real one keeps running for
/// every other test.
struct EngineLink {
    path: PathBuf,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl EngineLink {
    fn new(path: &Path) -> EngineLink {
        let mut link = EngineLink {
            path: path.to_path_buf(),
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            accept: None,
        };
        link.restore();
        link
    }

    fn restore(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, conns) = (self.up.clone(), self.conns.clone());
        let target = PathBuf::from(sandbox().socket_path());
        self.accept = Some(std::thread::spawn(move || {
            for client in listener.incoming() {
                if !up.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(engine) = UnixStream::connect(&target) else {
                    continue;
                };
                let mut pairs = conns.lock().unwrap();
                pairs.push(client.try_clone().unwrap());
                pairs.push(engine.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), engine.try_clone().unwrap()),
                    (engine, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        }));
    }

    /// Refuses new connections and breaks the open ones.
    fn cut(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        std::fs::remove_file(&self.path).unwrap();
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for EngineLink {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.cut();
        }
    }
}

#[test]
fn an_engine_that_goes_away_is_reconnected_to_with_backoff() {
    let img = images();
    let svc = Svc::new("watch-engine", "", HEALTH);
    deployed(&svc, &img.v1);
    let socket = svc.dir.join("engine-link.sock");
    let mut link = EngineLink::new(&socket);
    let host = format!("unix://{}", socket.display());
    let mut w = watch(&svc, &["--failures", "2"], &[("DOCKER_HOST", &host)]);
    w.next("watching", |_| true, Duration::from_secs(30));
    link.cut();
    let (lost_at, lost) = w.next("engine_lost", |_| true, Duration::from_secs(30));
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains(&socket.display().to_string()),
        "{lost}"
    );
    std::thread::sleep(Duration::from_secs(4));
    link.restore();
    let (back_at, back) = w.next("engine_back", |_| true, Duration::from_secs(60));
    assert!(back["down_ms"].as_u64().unwrap() >= 3000, "{back}");
    assert!(back_at - lost_at >= Duration::from_secs(4));
    // An engine outage is nobody's probe failure.
    assert!(w.of("probe_failed").is_empty(), "{}", w.log());
    // And it works as before: a frozen container is still replaced.
    let app = w.of("watching")[0]["container"]
        .as_str()
        .unwrap()
        .to_string();
    pause(&app);
    let (_, replaced) = w.next("replaced", |_| true, Duration::from_secs(60));
    assert_eq!(replaced["old"], app.as_str());
    svc.assert_serves("v1");
    assert_eq!(w.stop(), 0, "{}", w.log());
}

#[test]
fn nothing_to_watch_and_bad_specs_are_usage_errors() {
    let svc = Svc::new("watch-usage", "", HEALTH);
    let out = crate::support::slipway(&["watch"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stderr.contains("--config PATH"), "{stderr}");
    // No engine behind the socket: exit 4, said as an event and as an error with a hint.
    let dead = svc.dir.join("dead.sock");
    drop(UnixListener::bind(&dead).unwrap());
    let host = format!("unix://{}", dead.display());
    let out = svc.run(&["watch", "--once"], &[("DOCKER_HOST", &host)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 4, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"event\":\"engine_lost\""), "{stdout}");
    assert!(stderr.contains("dead.sock"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    // No socket at all: --once says so (exit 2, as every command); the long-running mode waits
    // for the engine to appear (a host where it starts before dockerd) and SIGTERM ends it.
    let missing = format!("unix://{}", svc.dir.join("later.sock").display());
    let out = svc.run(&["watch", "--once"], &[("DOCKER_HOST", &missing)]);
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    let mut w = watch(&svc, &[], &[("DOCKER_HOST", &missing)]);
    w.next("engine_lost", |_| true, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(w.stop(), 0, "{}", w.log());
    w.next("stopped", |_| true, Duration::from_secs(5));
    // A spec without [health.http] cannot be watched: a note, and nothing left to watch.
    svc.write_spec("", "docker = true");
    let out = svc.run(&["watch", "--once"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"event\":\"unwatched\""), "{stdout}");
    assert!(stderr.contains("[health.http]"), "{stderr}");
    // Every problem at once: a broken file and a missing one.
    let broken = svc.dir.join("broken.toml");
    std::fs::write(&broken, "name = ").unwrap();
    let out = svc.run(
        &[
            "watch",
            "--config",
            broken.to_str().unwrap(),
            "--config",
            "/nonexistent.toml",
        ],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

#[test]
fn a_replacement_that_fails_its_gate_is_undone_and_once_exits_1() {
    let img = images();
    let svc = Svc::new("watch-failgate", "", HEALTH);
    deployed(&svc, &img.v1);
    let snippet = svc.snippet().unwrap();
    let app = svc
        .containers()
        .into_iter()
        .find(|c| c.contains(" running app "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    // The host's spec now gives a replacement 1 s to become healthy: the fixture needs more.
    svc.write_spec(
        "",
        &HEALTH.replace("deadline = \"30s\"", "deadline = \"1s\""),
    );
    pause(&app);
    let out = svc.run(&["watch", "--once", "--failures", "2"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    let failed: Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "replace_failed")
        .unwrap_or_else(|| panic!("no replace_failed: {stdout}"));
    assert_eq!(failed["outcome"], "rolled-back", "{failed}");
    assert!(
        failed["message"].as_str().unwrap().contains("health gate"),
        "{failed}"
    );
    assert!(
        failed["log_tail"]
            .as_str()
            .unwrap()
            .contains("serve: version v1"),
        "the replacement's log is the evidence: {failed}"
    );
    // Undone: the same snippet, the stuck container still there, no second app container.
    assert_eq!(svc.snippet().unwrap(), snippet);
    assert_eq!(
        inspect(&app, "{{.State.Status}}").as_deref(),
        Some("paused")
    );
    assert_eq!(
        svc.containers()
            .iter()
            .filter(|c| c.contains(" app "))
            .count(),
        1,
        "{:?}",
        svc.containers()
    );
    assert!(
        probe_siblings(&svc.name).is_empty(),
        "{:?}",
        svc.containers()
    );
}
