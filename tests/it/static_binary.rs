use std::process::Command;

use crate::support::{code, docker, docker_ok, sandbox, slipway_bin, text};

#[test]
fn the_release_binary_is_statically_linked() {
    let bin = slipway_bin();
    assert!(
        std::env::var_os("SLIPWAY_BIN").is_some(),
        "SLIPWAY_BIN must name the static release build (scripts/test sets it)"
    );
    let file = Command::new("file").arg("-b").arg(&bin).output().unwrap();
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(
        file.contains("static-pie linked") || file.contains("statically linked"),
        "{}: {file}",
        bin.display()
    );
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "{ldd}"
    );
}

#[test]
fn runs_from_a_scratch_container_through_the_mounted_socket() {
    let s = sandbox();
    let context = tempfile::tempdir().unwrap();
    std::fs::copy(slipway_bin(), context.path().join("slipway")).unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY slipway /slipway\nENTRYPOINT [\"/slipway\"]\n",
    )
    .unwrap();
    let tag = "slipway-scratch:test";
    docker_ok(&["build", "-q", "-t", tag, context.path().to_str().unwrap()]);
    let mount = format!("{}:/var/run/docker.sock", s.socket_path());

    let out = docker(&["run", "--rm", "-v", &mount, tag, "--version"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("slipway {}", env!("CARGO_PKG_VERSION"))
    );

    // No DOCKER_HOST inside: slipway finds the socket where a CI job container has it.
    let _host = crate::support::host_settings();
    let out = docker(&[
        "run",
        "--rm",
        "-v",
        &mount,
        tag,
        "doctor",
        "--reload-image",
        &s.base_image,
        "--reload-command",
        &s.reload_command,
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("ok    engine") && stdout.contains("unix:///var/run/docker.sock"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    privileged-sibling"), "{stdout}");
    assert!(stdout.contains("ok    reload-command"), "{stdout}");
}
