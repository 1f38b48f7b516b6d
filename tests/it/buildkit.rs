//! BuildKit against the sandbox's engine: the cache mount outlives a build, a `# syntax=` line an
//! offline engine cannot fetch, and the classic builder kept for Dockerfiles without mounts.
//! (The fixture app, built with cache and bind mounts, is deployed and served by the deploy
//! tests; a failing `RUN --mount` step is `build::a_failing_step_fails_with_its_output...`.)

use std::path::Path;

use crate::build::{FIXTURE, build_args, fixture_copy, run, skopeo_inspect, step_end, unique_sha};
use crate::support::sandbox;

#[test]
fn the_cache_mount_outlives_the_build_and_an_unchanged_step_is_cached() {
    let s = sandbox();
    let app = fixture_copy();
    let (exit, _, stderr) = run(
        &build_args(&s, app.path(), &s.registry, "it/kit-cache", &unique_sha()),
        &[],
    );
    assert_eq!(exit, 0, "{stderr}");
    // A new dependency reruns the step: what earlier builds downloaded is still in the cache.
    let extra = format!("extra-{}", &unique_sha()[24..]);
    let deps = app.path().join("deps.txt");
    let listed = std::fs::read_to_string(&deps).unwrap();
    std::fs::write(&deps, format!("{listed}{extra} 1.0.0\n")).unwrap();
    let (exit, _, stderr) = run(
        &build_args(&s, app.path(), &s.registry, "it/kit-cache", &unique_sha()),
        &[],
    );
    assert_eq!(exit, 0, "{stderr}");
    let step = step_end(&stderr, "RUN --mount=type=cache");
    assert!(step.contains(": DONE "), "the step ran again: {step}");
    let number = step
        .split_whitespace()
        .find(|w| w.starts_with('#'))
        .unwrap();
    for line in [
        "cache hit: greeting-lib 1.2.0".to_string(),
        "cache hit: tiny-json 0.4.1".into(),
        format!("downloaded: {extra} 1.0.0"),
        "installed 3 dependencies: 2 from the cache, 1 downloaded".into(),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.ends_with(&format!("{number} {line}"))),
            "{line}: {stderr}"
        );
    }
    // The same inputs again: the step is not run at all.
    let (exit, _, stderr) = run(
        &build_args(&s, app.path(), &s.registry, "it/kit-cache", &unique_sha()),
        &[],
    );
    assert_eq!(exit, 0, "{stderr}");
    let step = step_end(&stderr, "RUN --mount=type=cache");
    assert!(step.ends_with(": CACHED"), "{step}");
}

#[test]
fn a_syntax_line_the_engine_cannot_fetch_fails_with_4_and_says_how_to_proceed() {
    let s = sandbox();
    let app = fixture_copy();
    let dockerfile = app.path().join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(&dockerfile, format!("# syntax=docker/dockerfile:1\n{text}")).unwrap();
    let sha = unique_sha();
    let (exit, stdout, stderr) = run(
        &build_args(&s, app.path(), &s.registry, "it/kit-syntax", &sha),
        &[],
    );
    assert_eq!(exit, 4, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("error: the engine could not fetch the Dockerfile frontend docker/dockerfile:1 that the `# syntax=` line names: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: drop the `# syntax=` line to build with the engine's built-in Dockerfile frontend")
            && stderr.contains("or make docker/dockerfile:1 available to the engine"),
        "{stderr}"
    );
    assert!(skopeo_inspect(&format!("{}/it/kit-syntax:{sha}", s.registry), None).is_err());
}

#[test]
fn the_classic_builder_builds_a_dockerfile_without_mounts_and_refuses_one_with() {
    let s = sandbox();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS build\nARG VERSION\nRUN mkdir /out && echo \"$VERSION\" >/out/version\nFROM ${BASE_IMAGE}\nCOPY --from=build /out /out\nUSER 10001\nHEALTHCHECK CMD [\"true\"]\nCMD [\"true\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".dockerignore"), ".env\n.git\n.venv\n").unwrap();
    let sha = unique_sha();
    let mut args = build_args(&s, dir.path(), &s.registry, "it/classic", &sha);
    args.extend(["--builder", "classic"].map(String::from));
    let (exit, stdout, stderr) = run(&args, &[]);
    assert_eq!(exit, 0, "{stderr}");
    assert!(stderr.contains("with the classic builder"), "{stderr}");
    assert!(
        stderr.contains("Step 1/"),
        "the classic builder's progress: {stderr}"
    );
    let seen = skopeo_inspect(&format!("{}/it/classic:{sha}", s.registry), None).unwrap();
    assert_eq!(
        format!(
            "{}/it/classic@{}",
            s.registry,
            seen["Digest"].as_str().unwrap()
        ),
        stdout.trim()
    );
    // The canonical fixture needs BuildKit: the classic builder (here from the environment)
    // refuses its mounts, and the hint says what to drop.
    let (exit, _, stderr) = run(
        &build_args(
            &s,
            Path::new(FIXTURE),
            &s.registry,
            "it/classic",
            &unique_sha(),
        ),
        &[("SLIPWAY_BUILDER", "classic")],
    );
    assert_eq!(exit, 2, "{stderr}");
    assert!(
        stderr.contains("the --mount option requires BuildKit"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("hint: this Dockerfile needs BuildKit (RUN --mount): drop --builder classic"),
        "{stderr}"
    );
}
