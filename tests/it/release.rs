//! The release command (issue #14): once per deploy, in a one-shot container of the new image,
//! before any new container starts; a failure or a hang switches nothing.

use crate::service::{Svc, images};
use crate::support::{code, docker_ok, text};

const HEALTH: &str =
    "docker = true\n[health.http]\njson_field = \".version\"\ninterval = \"200ms\"";

/// A service whose release command appends a line to a host file, through a bind mount.
fn svc_with(name: &str, release: &str, extra: &str) -> Svc {
    let svc = Svc::new(name, "", HEALTH);
    let data = svc.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The fixture runs as a non-root user.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let top = format!(
        "volumes = [\"{}:/data\"]\nrelease_command = {release}\n{extra}",
        data.display()
    );
    svc.write_spec(&top, HEALTH);
    svc
}

fn runs(svc: &Svc) -> usize {
    std::fs::read_to_string(svc.dir.join("data/count"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn release_containers(svc: &Svc) -> Vec<String> {
    svc.containers()
        .into_iter()
        .filter(|c| c.contains("-release-"))
        .collect()
}

#[test]
fn a_release_command_runs_exactly_once_per_deploy_and_never_in_a_dry_run() {
    let img = images();
    let svc = svc_with("rel-once", r#"["sh", "-c", "echo ran >> /data/count"]"#, "");
    let out = svc.run(&["rollout", &img.v1, "--dry-run"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("run the release command `sh -c echo ran >> /data/count` once"),
        "{stdout}"
    );
    assert_eq!(runs(&svc), 0, "a dry run runs nothing");

    let out = svc.run(&["rollout", &img.v1], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert_eq!(runs(&svc), 1);
    svc.assert_serves("v1");
    let out = svc.run(&["rollout", &img.v2], &[]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(runs(&svc), 2, "once per deploy");
    // The digest already serves: nothing to deploy, nothing to migrate.
    let out = svc.run(&["rollout", &img.v2], &[]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(runs(&svc), 2);
    // A rollback returns to an image that has run: no release command.
    let out = svc.run(&["rollback"], &[]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(runs(&svc), 2);
    svc.assert_serves("v1");
    assert!(
        release_containers(&svc).is_empty(),
        "{:?}",
        svc.containers()
    );
}

#[test]
fn a_failing_release_command_stops_the_deploy_with_its_output_and_no_secret() {
    let img = images();
    let svc = svc_with(
        "rel-fail",
        r#"["sh", "-c", "echo migrating; echo token is $APP_HEALTH_TOKEN; exit 3"]"#,
        "",
    );
    let spec = std::fs::read_to_string(svc.spec_path())
        .unwrap()
        .replace("env = [", "env = [\"APP_HEALTH_TOKEN\", ");
    std::fs::write(svc.spec_path(), spec).unwrap();
    let secret = [("APP_HEALTH_TOKEN", "s3cr3t-release-value")];
    // Deploy v1 with a release command that passes, then break it for v2.
    let ok_spec = std::fs::read_to_string(svc.spec_path()).unwrap();
    std::fs::write(svc.spec_path(), ok_spec.replace("exit 3", "exit 0")).unwrap();
    let out = svc.run(&["rollout", &img.v1], &secret);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    std::fs::write(svc.spec_path(), ok_spec).unwrap();

    let before = svc.containers();
    let out = svc.run(&["rollout", &img.v2], &secret);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("exited 3"), "{all}");
    assert!(all.contains("migrating"), "the command's own output: {all}");
    assert!(all.contains("token is ***"), "{all}");
    assert!(!all.contains("s3cr3t-release-value"), "{all}");
    svc.assert_serves("v1");
    assert_eq!(svc.containers(), before, "nothing new started or left");
}

#[test]
fn a_hanging_release_command_is_killed_at_its_deadline() {
    let img = images();
    let svc = svc_with(
        "rel-hang",
        r#"["sleep", "600"]"#,
        "release_timeout = \"2s\"",
    );
    let out = svc.run(&["rollout", &img.v1], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("did not finish within 2s"),
        "{stdout}\n{stderr}"
    );
    assert!(svc.running_revisions().is_empty());
    assert!(
        release_containers(&svc).is_empty(),
        "{:?}",
        svc.containers()
    );
    let left = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        "label=dev.slipway.role=release",
        "--filter",
        &format!("label=dev.slipway.service={}", svc.name),
    ]);
    assert!(left.trim().is_empty(), "no release container left: {left}");
}

#[test]
fn a_release_command_as_a_shell_string_is_exit_2() {
    let img = images();
    let svc = svc_with("rel-shell", r#""bin/migrate --yes""#, "");
    let out = svc.run(&["rollout", &img.v1], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("release_command:"), "{stderr}");
    assert!(svc.containers().is_empty());
}
