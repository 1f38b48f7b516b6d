//! `scripts/ci/publish-release`, release.yml's publishing step, against a stand-in for the Gitea
//! API on 127.0.0.1: it creates the release for the tag, uploads the binary and its .sha256 as
//! multipart attachments with the token in a header, and never replaces a published asset.

use std::process::{Command, Output};

use crate::action_install::{ASSET, AssetServer, script};
use crate::support::{code, text};

const TOKEN: &str = "t0ken-4-tests";
const API: &str = "/api/v1/repos/team/slipway";

fn publish(server: &AssetServer, tag: &str, files: &[&std::path::Path]) -> Output {
    Command::new(script("scripts/ci/publish-release"))
        .arg(tag)
        .args(files)
        .env("GITEA_TOKEN", TOKEN)
        .env("GITHUB_SERVER_URL", server.url())
        .env("GITHUB_REPOSITORY", "team/slipway")
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("publish-release runs")
}

fn assets(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = dir.join(ASSET);
    let sum = dir.join(format!("{ASSET}.sha256"));
    std::fs::write(&bin, b"\x7fELF pretend binary \x00\x01\x02").unwrap();
    std::fs::write(&sum, format!("{}  {ASSET}\n", "ab".repeat(32))).unwrap();
    (bin, sum)
}

#[test]
fn creates_the_release_and_uploads_both_assets() {
    let server = AssetServer::start();
    server.route(
        "POST",
        &format!("{API}/releases"),
        201,
        r#"{"id":7,"tag_name":"v0.1.0","assets":[]}"#,
    );
    for name in [ASSET.to_string(), format!("{ASSET}.sha256")] {
        server.route(
            "POST",
            &format!("{API}/releases/7/assets?name={name}"),
            201,
            format!(r#"{{"id":1,"name":"{name}"}}"#),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (bin, sum) = assets(dir.path());

    let out = publish(&server, "v0.1.0", &[&bin, &sum]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    let log = server.log();
    let calls: Vec<(String, String)> = log
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET".into(), format!("{API}/releases/tags/v0.1.0")),
            ("POST".into(), format!("{API}/releases")),
            (
                "POST".into(),
                format!("{API}/releases/7/assets?name={ASSET}")
            ),
            (
                "POST".into(),
                format!("{API}/releases/7/assets?name={ASSET}.sha256")
            ),
        ]
    );
    for r in &log {
        assert_eq!(
            r.header("Authorization"),
            Some(format!("token {TOKEN}").as_str()),
            "{} {}",
            r.method,
            r.path
        );
    }
    let created: serde_json::Value = serde_json::from_slice(&log[1].body).unwrap();
    assert_eq!(
        created,
        serde_json::json!({"tag_name": "v0.1.0", "name": "v0.1.0", "draft": false, "prerelease": false})
    );
    for (request, file) in [(&log[2], &bin), (&log[3], &sum)] {
        assert!(
            request
                .header("Content-Type")
                .is_some_and(|c| c.starts_with("multipart/form-data")),
            "{:?}",
            request.headers
        );
        let body = &request.body;
        let content = std::fs::read(file).unwrap();
        assert!(
            body.windows(content.len()).any(|w| w == content.as_slice()),
            "the upload carries the file's bytes"
        );
        assert!(
            String::from_utf8_lossy(body).contains("name=\"attachment\""),
            "the Gitea form field is `attachment`"
        );
    }
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "the token is never printed"
    );
}

#[test]
fn a_prerelease_tag_makes_a_prerelease() {
    let server = AssetServer::start();
    server.route(
        "POST",
        &format!("{API}/releases"),
        201,
        r#"{"id":9,"assets":[]}"#,
    );
    server.route(
        "POST",
        &format!("{API}/releases/9/assets?name={ASSET}"),
        201,
        "{}",
    );
    let dir = tempfile::tempdir().unwrap();
    let (bin, _) = assets(dir.path());
    let out = publish(&server, "v0.2.0-rc.1", &[&bin]);
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    let created: serde_json::Value = serde_json::from_slice(&server.log()[1].body).unwrap();
    assert_eq!(created["prerelease"], true);
}

#[test]
fn a_published_asset_is_never_replaced() {
    let server = AssetServer::start();
    server.route(
        "GET",
        &format!("{API}/releases/tags/v0.1.0"),
        200,
        format!(r#"{{"id":7,"assets":[{{"id":3,"name":"{ASSET}"}}]}}"#),
    );
    let dir = tempfile::tempdir().unwrap();
    let (bin, sum) = assets(dir.path());
    let out = publish(&server, "v0.1.0", &[&bin, &sum]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains("never replaced"), "{stderr}");
    assert!(
        server.log().iter().all(|r| r.method == "GET"),
        "nothing uploaded: {:?}",
        server.requests()
    );
}

#[test]
fn a_tag_that_is_not_a_version_and_a_failing_api_stop_it() {
    let server = AssetServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (bin, _) = assets(dir.path());
    let out = publish(&server, "main; rm -rf /", &[&bin]);
    assert_eq!(code(&out), 1);
    assert!(text(&out).1.contains("is not a release tag"));
    assert!(server.log().is_empty());

    server.route(
        "GET",
        &format!("{API}/releases/tags/v0.1.0"),
        401,
        r#"{"message":"token is required"}"#,
    );
    let out = publish(&server, "v0.1.0", &[&bin]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert_eq!(server.log().len(), 1, "stopped after the failed call");
}
