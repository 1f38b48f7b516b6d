//! `slipway deploy` against a real three-node Docker Swarm (scripts/swarm-cluster, brought up by
//! `scripts/test` with SANDBOX_SWARM=1): Caddy on the overlay finds the tasks over
//! `tasks.<service>` (dnsrr), Swarm gates each task on its health check, slipway judges by
//! `UpdateStatus.State` and the tasks' images, then the public URL.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::{code, slipway_bin, text};

struct Cluster {
    manager: String,
    registry: String,
    base: String,
    caddy_image: String,
    network: String,
    manager_ip: String,
    dir: std::path::PathBuf,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the swarm tests need the three-node cluster that `scripts/test` \
             brings up (SANDBOX_SWARM=1 scripts/sandbox cargo test); they never skip"
        )
    })
}

fn cluster() -> Cluster {
    Cluster {
        manager: var("SLIPWAY_SWARM_MANAGER"),
        registry: var("SLIPWAY_SWARM_REGISTRY"),
        base: var("SLIPWAY_SWARM_BASE_IMAGE"),
        caddy_image: var("SLIPWAY_SWARM_CADDY_IMAGE"),
        network: var("SLIPWAY_SWARM_OVERLAY"),
        manager_ip: var("SLIPWAY_SWARM_NODE_IPS")
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string(),
        dir: var("SLIPWAY_SWARM_DIR").into(),
    }
}

const SECRET: &str = "s3cr3t+/=>?~SwarmValue";

/// One swarm test at a time: they share three nodes on two cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn docker(c: &Cluster, args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", &c.manager)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fixture app at `version`, built on the manager and pushed to the cluster's registry.
fn image(version: &str) -> String {
    static BUILT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, img)) = built.iter().find(|(v, _)| v == version) {
        return img.clone();
    }
    let c = cluster();
    let tag = format!("{}/swarm-app:{version}", c.registry);
    let base = format!("BASE_IMAGE={}", c.base);
    let v = format!("VERSION={version}");
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app");
    // The docker CLI here has only the classic builder: the fixture's copy without mounts.
    let file = format!("{app}/Dockerfile.classic");
    docker(
        &c,
        &[
            "build",
            "-q",
            "-f",
            &file,
            "--build-arg",
            &base,
            "--build-arg",
            &v,
            "-t",
            &tag,
            app,
        ],
    );
    docker(&c, &["push", "-q", &tag]);
    let img = docker(
        &c,
        &["inspect", "--format", "{{index .RepoDigests 0}}", &tag],
    );
    built.push((version.to_string(), img.clone()));
    img
}

/// A service name and its Caddy (a swarm service on the manager, on the overlay, dynamic
/// upstreams over `tasks.<name>`, published in host mode on the manager's address).
struct Svc {
    name: String,
    port: u16,
    spec: std::path::PathBuf,
}

impl Svc {
    fn new(name: &str, port: u16) -> Svc {
        let c = cluster();
        let dir = c.dir.join(format!("test-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let caddyfile = format!(
            "{{\n\tadmin off\n\tauto_https off\n}}\n:80 {{\n\treverse_proxy {{\n\t\tdynamic a {{\n\t\t\tname tasks.{name}\n\t\t\tport 8080\n\t\t\trefresh 1s\n\t\t}}\n\t\tlb_try_duration 3s\n\t}}\n}}\n"
        );
        let file = dir.join("Caddyfile");
        std::fs::write(&file, caddyfile).unwrap();
        let config = format!("caddy-{name}");
        docker(&c, &["config", "create", &config, file.to_str().unwrap()]);
        let publish = format!("mode=host,target=80,published={port}");
        let cfg = format!("source={config},target=/etc/caddy/Caddyfile");
        docker(
            &c,
            &[
                "service",
                "create",
                "-d",
                "--name",
                &format!("caddy-{name}"),
                "--network",
                &c.network,
                "--constraint",
                "node.role==manager",
                "--publish",
                &publish,
                "--config",
                &cfg,
                &c.caddy_image,
            ],
        );
        let spec = dir.join("slipway.toml");
        std::fs::write(
            &spec,
            format!(
                "name = \"{name}\"\ncontainer_port = 8080\nenv = [\"APP_HEALTH\", \"APP_STOP_DRAIN\"]\n\n[health]\ndocker = true\ndeadline = \"30s\"\n\n[swarm]\nreplicas = 3\nnetwork = \"{}\"\nmonitor = \"3s\"\n",
                c.network
            ),
        )
        .unwrap();
        Svc {
            name: name.to_string(),
            port,
            spec,
        }
    }

    fn url(&self) -> String {
        format!("http://{}:{}/health", cluster().manager_ip, self.port)
    }

    fn deploy(&self, image: &str, env: &[(&str, &str)], extra: &[&str]) -> Output {
        let (spec, url) = (self.spec.to_str().unwrap().to_string(), self.url());
        let mut args = vec![
            "deploy",
            "--config",
            &spec,
            "--image",
            image,
            "--url",
            &url,
            "--watch",
            "1s",
            "--smoke-interval",
            "250ms",
        ];
        if !extra.contains(&"--smoke-deadline") {
            args.extend(["--smoke-deadline", "20s"]);
        }
        args.extend_from_slice(extra);
        self.slipway(&args, env)
    }

    fn slipway(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(slipway_bin())
            .args(args)
            .env_remove("SLIPWAY_LOG")
            .env("DOCKER_HOST", cluster().manager)
            .env("APP_HEALTH", "ok")
            .env("APP_STOP_DRAIN", "4")
            .env("APP_TOKEN", SECRET)
            .envs(env.iter().copied())
            .output()
            .expect("slipway runs")
    }

    /// What the public URL serves now (through Caddy on the overlay).
    fn served(&self) -> String {
        get(&self.url()).unwrap_or_else(|e| format!("<{e}>"))
    }

    fn wait_served(&self, version: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.served().contains(version) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{} never served {version}: {}", self.url(), self.served());
    }

    fn task_images_and_nodes(&self) -> Vec<String> {
        let out = docker(
            &cluster(),
            &[
                "service",
                "ps",
                &self.name,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}} {{.CurrentState}} {{.Image}}",
            ],
        );
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let c = cluster();
        for s in [format!("caddy-{}", self.name), self.name.clone()] {
            let _ = Command::new("docker")
                .args(["service", "rm", &s])
                .env("DOCKER_HOST", &c.manager)
                .output();
        }
        let _ = Command::new("docker")
            .args(["config", "rm", &format!("caddy-{}", self.name)])
            .env("DOCKER_HOST", &c.manager)
            .output();
    }
}

/// One GET on a new connection (`Connection: close`); the body.
fn get(url: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (addr, path) = rest.split_once('/').ok_or("no path")?;
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    match buf.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(buf.lines().next().unwrap_or("empty answer").to_string()),
    }
}

/// New-connection requests in threads until stopped: (requests, failures, first failures).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, u64, Vec<String>)>>,
}

impl Load {
    fn start(url: &str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.to_string());
                std::thread::spawn(move || {
                    let (mut n, mut failed, mut seen) = (0, 0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        if let Err(e) = get(&url) {
                            failed += 1;
                            if seen.len() < 5 {
                                seen.push(e);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    (n, failed, seen)
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = (0, 0, Vec::new());
        for t in self.threads {
            let (n, f, s) = t.join().unwrap();
            all.0 += n;
            all.1 += f;
            all.2.extend(s);
        }
        all
    }
}

fn assert_code(out: &Output, want: i32) {
    let (stdout, stderr) = text(out);
    assert_eq!(code(out), want, "stdout:\n{stdout}\nstderr:\n{stderr}");
}

#[test]
fn swarm_first_deploy_then_a_second_under_load_then_rollback_with_no_arguments() {
    let _one = serial();
    let svc = Svc::new("sw-web", 18201);
    let (v1, v2) = (image("sw1"), image("sw2"));
    // APP_TOKEN looks secret: it goes through a Swarm secret, never into a log or the task env.
    let spec = std::fs::read_to_string(&svc.spec).unwrap();
    std::fs::write(
        &svc.spec,
        spec.replace("\"APP_STOP_DRAIN\"]", "\"APP_STOP_DRAIN\", \"APP_TOKEN\"]"),
    )
    .unwrap();
    let token = [("APP_TOKEN", SECRET)];

    let plan = svc.slipway(
        &[
            "plan",
            "--config",
            svc.spec.to_str().unwrap(),
            "--image",
            &v1,
            "--url",
            &svc.url(),
        ],
        &[],
    );
    assert_code(&plan, 0);
    let (plan_out, _) = text(&plan);
    assert!(
        plan_out.contains("create the service") && plan_out.contains("replicas: 3"),
        "{plan_out}"
    );

    let t = Instant::now();
    let out = svc.deploy(&v1, &token, &[]);
    assert_code(&out, 0);
    eprintln!(
        "first deploy (create, 3 replicas): {} ms",
        t.elapsed().as_millis()
    );
    svc.wait_served("sw1");
    let tasks = svc.task_images_and_nodes();
    let nodes: std::collections::BTreeSet<_> =
        tasks.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert_eq!(nodes.len(), 3, "3 replicas across 3 nodes: {tasks:?}");
    assert!(
        tasks
            .iter()
            .all(|l| l.contains(v1.split_once('@').unwrap().1) || l.contains("swarm-app")),
        "{tasks:?}"
    );

    let load = Load::start(&svc.url(), 4);
    let slow_url = svc.url().replace("/health", "/cgi-bin/slow");
    assert!(
        get(&slow_url).is_ok_and(|b| b.contains("sw1")),
        "the 2 s endpoint answers"
    );
    let slow = Load::start(&slow_url, 4);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let out = svc.deploy(&v2, &token, &[]);
    let update_ms = t.elapsed().as_millis();
    std::thread::sleep(Duration::from_millis(500));
    let (requests, failures, seen) = load.stop();
    let (slow_requests, cut, cut_seen) = slow.stop();
    assert_code(&out, 0);
    eprintln!(
        "second deploy (start-first update of 3 replicas) under load: {update_ms} ms, {requests} new-connection requests, {failures} failed {seen:?}"
    );
    eprintln!("2 s requests during the update: {slow_requests}, cut {cut} {cut_seen:?}");
    assert!(requests > 50, "the load ran: {requests}");
    assert!(slow_requests >= 8, "the slow load ran: {slow_requests}");
    assert_eq!(cut, 0, "2 s requests cut during the update: {cut_seen:?}");
    assert_eq!(
        failures, 0,
        "failed new-connection requests during the update: {seen:?}"
    );
    assert!(svc.served().contains("sw2"), "{}", svc.served());
    let (stdout, stderr) = text(&out);
    assert!(
        !stdout.contains("APP_HEALTH=ok") && !stderr.contains("=ok"),
        "no env value printed"
    );
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "{stderr}"
    );
    let c = cluster();
    let secrets = docker(&c, &["secret", "ls", "--format", "{{.Name}}"]);
    assert!(secrets.contains("sw-web-app_token-sw2"), "{secrets}");
    let env = docker(
        &c,
        &[
            "service",
            "inspect",
            "sw-web",
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        ],
    );
    assert!(
        env.contains("APP_TOKEN_FILE=/run/secrets/APP_TOKEN") && !env.contains(SECRET),
        "{env}"
    );

    let out = svc.slipway(&["rollback", "--config", svc.spec.to_str().unwrap()], &[]);
    assert_code(&out, 0);
    svc.wait_served("sw1");
}

#[test]
fn swarm_an_unhealthy_update_is_rolled_back_by_swarm_and_exits_1() {
    let _one = serial();
    let svc = Svc::new("sw-sick", 18202);
    let (v1, v2) = (image("sw1"), image("sw2"));
    assert_code(&svc.deploy(&v1, &[], &[]), 0);
    svc.wait_served("sw1");
    let t = Instant::now();
    let out = svc.deploy(&v2, &[("APP_HEALTH", "fail")], &[]);
    eprintln!(
        "unhealthy update to exit 1 (Swarm's automatic rollback): {} ms",
        t.elapsed().as_millis()
    );
    assert_code(&out, 1);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("Swarm rolled the update back"), "{stderr}");
    assert!(
        svc.served().contains("sw1"),
        "the previous version serves: {}",
        svc.served()
    );
}

#[test]
fn swarm_a_public_mismatch_is_rolled_back_by_slipway_and_two_deploys_at_once_one_exits_4() {
    let _one = serial();
    let svc = Svc::new("sw-odd", 18203);
    let (v1, v2) = (image("sw1"), image("sw2"));
    assert_code(&svc.deploy(&v1, &[], &[]), 0);
    svc.wait_served("sw1");

    let out = svc.deploy(
        &v2,
        &[],
        &["--expect-version", "not-sw2", "--smoke-deadline", "3s"],
    );
    assert_code(&out, 1);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("public check failed"), "{stderr}");
    assert!(
        svc.served().contains("sw1"),
        "the previous version serves: {}",
        svc.served()
    );

    // Two deploys at once: one holds the cluster lock, the other exits 4 at once.
    let spec = svc.spec.to_str().unwrap().to_string();
    let url = svc.url();
    let spawn = |img: &str| {
        Command::new(slipway_bin())
            .args([
                "deploy",
                "--config",
                &spec,
                "--image",
                img,
                "--url",
                &url,
                "--watch",
                "1s",
                "--smoke-deadline",
                "20s",
            ])
            .env_remove("SLIPWAY_LOG")
            .env("DOCKER_HOST", cluster().manager)
            .env("APP_HEALTH", "ok")
            .env("APP_STOP_DRAIN", "4")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn(&v2);
    std::thread::sleep(Duration::from_millis(300));
    let b = spawn(&v2).wait_with_output().unwrap();
    let a = a.wait_with_output().unwrap();
    let mut codes = [code(&a), code(&b)];
    codes.sort();
    assert_eq!(codes, [0, 4], "a: {}\nb: {}", text(&a).1, text(&b).1);
    let loser = if code(&a) == 4 { &a } else { &b };
    assert!(
        text(loser).1.contains("holds the cluster lock"),
        "{}",
        text(loser).1
    );
    svc.wait_served("sw2");
}

/// `scripts/swarm-cluster stop-node|start-node DIR NODE`.
fn node(action: &str, name: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/swarm-cluster");
    let dir = cluster().dir;
    let out = Command::new(script)
        .args([action, dir.to_str().unwrap(), name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("scripts/swarm-cluster runs");
    assert!(out.status.success(), "{action} {name}: {}", text(&out).1);
}

fn wait_nodes_ready(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ls = docker(&cluster(), &["node", "ls", "--format", "{{.Status}}"]);
        if ls.lines().filter(|l| *l == "Ready").count() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the swarm did not get {n} Ready nodes back");
}

/// Run last of the host-mode test (a restarted node is slow to take host-mode tasks again).
fn a_node_stopped_mid_update_loses_nothing_served() {
    let svc = Svc::new("sw-node", 18204);
    let (v1, v2) = (image("sw1"), image("sw2"));
    assert_code(&svc.deploy(&v1, &[], &[]), 0);
    svc.wait_served("sw1");
    let spec = svc.spec.to_str().unwrap().to_string();
    let url = svc.url();
    let child = Command::new(slipway_bin())
        .args(["deploy", "--config", &spec, "--image", &v2, "--url", &url])
        .args(["--watch", "1s", "--smoke-deadline", "30s"])
        .env_remove("SLIPWAY_LOG")
        .env("DOCKER_HOST", cluster().manager)
        .env("APP_HEALTH", "ok")
        .env("APP_STOP_DRAIN", "4")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    node("stop-node", "n3");
    let out = child.wait_with_output().unwrap();
    node("start-node", "n3");
    wait_nodes_ready(3);
    let (_, stderr) = text(&out);
    eprintln!("deploy with n3 stopped mid-update: exit {}", code(&out));
    match code(&out) {
        0 => assert!(svc.served().contains("sw2"), "{}", svc.served()),
        1 => assert!(svc.served().contains("sw1"), "{}", svc.served()),
        other => panic!("exit {other}: a stopped node must end deployed or rolled back:\n{stderr}"),
    }
}

/// A child process stopped by PID when the test ends, panicking or not.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Host-mode published ports (replicas < nodes) with Caddy outside the swarm, pointed at every
/// node's port and health-checking each.
#[test]
fn swarm_host_mode_ports_behind_a_caddy_outside_the_swarm_then_a_node_stopped_mid_update() {
    let _one = serial();
    let c = cluster();
    let svc = Svc::new("sw-host", 18205);
    let spec = std::fs::read_to_string(&svc.spec)
        .unwrap()
        .replace("replicas = 3", "replicas = 2\npublish_port = 18206");
    std::fs::write(&svc.spec, spec).unwrap();
    let dir = c.dir.join("test-sw-host");
    let upstreams = var("SLIPWAY_SWARM_NODE_IPS")
        .split(',')
        .map(|ip| format!("{ip}:18206"))
        .collect::<Vec<_>>()
        .join(" ");
    let port = crate::service::free_port();
    let caddyfile = format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\nhttp://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\treverse_proxy {upstreams} {{\n\t\tlb_try_duration 3s\n\t\tfail_duration 5s\n\t\thealth_uri /health\n\t\thealth_interval 500ms\n\t}}\n}}\n"
    );
    std::fs::write(dir.join("Caddyfile.outside"), caddyfile).unwrap();
    let caddy = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.join("Caddyfile.outside"))
        .env("XDG_CONFIG_HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("caddy starts");
    let caddy = Stopped(caddy);
    let public = format!("http://127.0.0.1:{port}/health");
    let (v1, v2) = (image("sw1"), image("sw2"));
    let deploy = |img: &str| {
        let spec = svc.spec.to_str().unwrap().to_string();
        svc.slipway(
            &[
                "deploy", "--config", &spec, "--image", img, "--url", &public, "--watch", "1s",
            ],
            &[],
        )
    };
    let first = deploy(&v1);
    let second = deploy(&v2);
    let served = get(&public);
    drop(caddy);
    assert_code(&first, 0);
    assert_code(&second, 0);
    assert!(
        served.as_deref().unwrap_or_default().contains("sw2"),
        "{served:?}"
    );
    assert_eq!(svc.task_images_and_nodes().len(), 2);
    a_node_stopped_mid_update_loses_nothing_served();
}

#[test]
fn swarm_doctor_checks_the_manager_the_nodes_and_the_overlay() {
    // Serial: another swarm test stops a node for a while.
    let _one = serial();
    let c = cluster();
    let worker = var("SLIPWAY_SWARM_NODES")
        .split(',')
        .nth(1)
        .unwrap()
        .to_string();
    let doctor = |host: &str, network: &str| {
        Command::new(slipway_bin())
            .args(["doctor", "--swarm-network", network])
            .env_remove("SLIPWAY_LOG")
            .env("DOCKER_HOST", host)
            .output()
            .unwrap()
    };
    let out = doctor(&c.manager, &c.network);
    assert_code(&out, 0);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("all 3 node(s) Ready"), "{stdout}");
    assert!(stdout.contains("is a swarm overlay network"), "{stdout}");
    let out = doctor(&c.manager, "no-such-net");
    assert_code(&out, 4);
    assert!(text(&out).0.contains("there is no network no-such-net"));
    let out = doctor(&worker, &c.network);
    assert_code(&out, 4);
    assert!(
        text(&out).0.contains("point DOCKER_HOST at a manager"),
        "{}",
        text(&out).0
    );
}
