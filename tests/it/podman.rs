//! Podman (Debian's 4.3) instead of dockerd, for real: the test starts `podman system service`
//! on a socket of its own, in its own PID namespace with tini as PID 1 (so the privileged
//! sibling's `nsenter -t 1` reaches the environment, as with the sandbox's dockerd) and its own
//! mount namespace (a tmpfs on /run and the test's directory on /var/lib, so nothing Podman
//! writes there reaches the machine; its network config in the test's directory too). Images come from the
//! sandbox registry, pulled by digest. Without systemd Podman never runs HEALTHCHECKs, so the
//! gate is the HTTP probe, and a spec that waits for a HEALTHCHECK is refused.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::service::{Svc, images};
use crate::support::{code, sandbox, slipway_with, text};

const HTTP_GATE: &str = "docker = false\ndeadline = \"20s\"\n[health.http]\njson_field = \".version\"\ninterval = \"200ms\"\ntimeout = \"1s\"";

/// A Podman service on its own socket; stopped (and everything it ran with it) on drop.
struct Podman {
    child: Child,
    host: String,
    dir: PathBuf,
}

impl Podman {
    fn start(name: &str) -> Podman {
        let dir = sandbox().dir.join(format!("podman-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let wrapper = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/runc-wrapper");
        let d = dir.display();
        std::fs::write(
            dir.join("containers.conf"),
            format!("[containers]\ndefault_ulimits = []\n[network]\nnetwork_config_dir = \"{d}/cni\"\n[engine]\nruntime = \"slipway\"\n[engine.runtimes]\nslipway = [\"{wrapper}\"]\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("registries.conf"),
            "[[registry]]\nlocation = \"127.0.0.1:5000\"\ninsecure = true\n",
        )
        .unwrap();
        let script = format!(
            "mkdir -p {d}/var-lib {d}/cni && mount -t tmpfs tmpfs /run && mount --bind {d}/var-lib /var/lib || exit 1; \
             exec tini -s -- podman --root {d}/root --runroot {d}/run system service --time=0 unix://{d}/podman.sock"
        );
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--", "sh", "-c", &script])
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("podman.log")).unwrap())
            .spawn()
            .expect("podman system service starts");
        let podman = Podman {
            child,
            host: format!("unix://{d}/podman.sock"),
            dir,
        };
        let up = Instant::now();
        while !podman.dir.join("podman.sock").exists() {
            assert!(
                up.elapsed() < Duration::from_secs(20),
                "podman system service did not come up: {}",
                std::fs::read_to_string(podman.dir.join("podman.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        podman
    }

    /// `slipway ARGS` for `svc` through this Podman.
    fn run(&self, svc: &Svc, args: &[&str], env: &[(&str, &str)], expect: i32) -> String {
        let mut all = vec![("DOCKER_HOST", self.host.as_str())];
        all.extend_from_slice(env);
        let out = svc.run(args, &all);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            code(&out),
            expect,
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        format!("{stdout}{stderr}")
    }

    /// Running app containers of `svc` on this Podman, as their revisions.
    fn running(&self, svc: &Svc) -> Vec<String> {
        let out = Command::new("docker")
            .args(["-H", &self.host, "ps", "--filter"])
            .arg(format!("label=dev.slipway.service={}", svc.name))
            .args(["--filter", "label=dev.slipway.role=app", "--format"])
            .arg("{{.Label \"dev.slipway.revision\"}}")
            .output()
            .expect("docker ps runs");
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // SIGTERM to tini (PID 1 of the namespace): Podman stops, and every process left in the
        // namespace (conmon, containers) goes with it.
        let unshare = self.child.id().to_string();
        let tini = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        for pid in tini.split_whitespace() {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
        }
        let began = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && began.elapsed() < Duration::from_secs(15)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn podman_deploys_rolls_back_and_refuses_a_gate_it_cannot_run() {
    let img = images();
    let podman = Podman::start("basic");
    let svc = Svc::new("pm-basic", "", HTTP_GATE);

    let base = sandbox().base_image;
    let reload = svc.reload_command();
    let out = slipway_with(
        &["doctor", "--format", "json", "--reload-command", &reload],
        &[
            ("DOCKER_HOST", &podman.host),
            ("SLIPWAY_RELOAD_IMAGE", &base),
        ],
    );
    let (doctor, _) = text(&out);
    assert_eq!(code(&out), 4, "{doctor}");
    assert!(
        doctor.contains("Podman 4."),
        "doctor names the engine: {doctor}"
    );
    assert!(doctor.contains("podman-healthchecks"), "{doctor}");

    // Pulled by this rollout before it plans: the `.version` gate expects the image's label.
    podman.run(&svc, &["rollout", &img.v1], &[], 0);
    svc.assert_serves("v1");
    podman.run(&svc, &["rollout", &img.v2, "--revision", "v2"], &[], 0);
    svc.assert_serves("v2");
    assert_eq!(podman.running(&svc), ["v2"]);

    let bad = ["rollout", &img.v1, "--revision", "v1"];
    let out = podman.run(&svc, &bad, &[("APP_HEALTH", "fail")], 1);
    assert!(out.contains("rolled back"), "{out}");
    svc.assert_serves("v2");
    assert_eq!(podman.running(&svc), ["v2"]);

    podman.run(&svc, &["rollback"], &[], 0);
    svc.assert_serves("v1");
    assert_eq!(podman.running(&svc), ["v1"]);

    svc.write_spec(
        "",
        "docker = true\n[health.http]\njson_field = \".version\"",
    );
    let out = podman.run(&svc, &["rollout", &img.v2], &[], 4);
    assert!(out.contains("never run"), "{out}");
    assert!(out.contains("health.docker = false"), "{out}");
    svc.assert_serves("v1");
}
