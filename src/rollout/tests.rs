use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::engine::ContainerInfo;
use crate::host::proxy::caddy;
use crate::image::reference::PinnedImage;
use crate::image::revision::Revision;
use crate::spec::ServiceSpec;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn spec() -> ServiceSpec {
    ServiceSpec::parse(
        Path::new("s.toml"),
        r#"
name = "web"
slots = [18001, 18002]
container_port = 8080
env = ["TOKEN"]
retain = 1
[health]
[health.http]
json_field = ".version"
[caddy]
snippet_dir = "/etc/caddy/slipway"
"#,
    )
    .unwrap()
}

fn target(digest: &str) -> Target {
    Target {
        image: PinnedImage::parse(&format!("127.0.0.1:5000/web@{digest}"))
            .unwrap()
            .into(),
        revision: Some(Revision::parse(&format!("rev-{}", &digest[7..9]), "test").unwrap()),
        reuse_retained: false,
        replace: None,
    }
}

fn app(id: &str, slot: usize, digest: &str, released: u64, running: bool) -> ContainerInfo {
    let labels: BTreeMap<String, String> = [
        (LABEL_SERVICE, "web".to_string()),
        (LABEL_SLOT, slot.to_string()),
        (LABEL_PORT, [18001, 18002][slot].to_string()),
        (LABEL_DIGEST, digest.to_string()),
        (LABEL_IMAGE, format!("127.0.0.1:5000/web@{digest}")),
        (LABEL_REVISION, format!("rev-{}", &digest[7..9])),
        (LABEL_RELEASED, released.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    ContainerInfo {
        id: id.into(),
        name: format!("web-{id}"),
        image_id: "sha256:cfg".into(),
        running,
        paused: false,
        status: if running { "running" } else { "exited" }.into(),
        health: running.then(|| "healthy".into()),
        exit_code: 0,
        pid: 1,
        created: String::new(),
        started_at: String::new(),
        finished_at: String::new(),
        labels,
        health_log: Vec::new(),
    }
}

fn facts(containers: Vec<ContainerInfo>, snippet_port: Option<u16>) -> Facts {
    Facts {
        containers,
        workers: Vec::new(),
        leftovers: Vec::new(),
        image: None,
        snippet: Some(crate::rollout::facts::SnippetState {
            file: snippet_port.map(snippet),
            applied: None,
            proxy: Default::default(),
        }),
        env: vec![("TOKEN".into(), "s3cr3t-value".into())],
        now_unix_ms: 1_700_000_000_000,
        run_url: "https://git.example/o/r/actions/runs/7".into(),
    }
}

fn snippet(port: u16) -> String {
    caddy::render_snippet(&caddy::SnippetValues {
        service: "web",
        port,
        digest: D1,
        revision: &Revision::parse("x", "test").unwrap(),
        options: &[],
    })
    .unwrap()
}

fn rollout(plan: &Plan) -> &Rollout {
    match &plan.action {
        Action::Rollout(r) => r,
        other => panic!("expected a rollout, got {other:?}"),
    }
}

#[test]
fn first_rollout_takes_slot_a_and_writes_a_new_snippet() {
    let plan = plan(
        &spec(),
        &target(D1),
        &facts(vec![], None),
        "systemctl reload caddy",
    );
    let r = rollout(&plan);
    assert_eq!((r.slot, r.port), (0, 18001));
    assert!(r.pull);
    assert_eq!(r.retire, None);
    assert_eq!(r.snippet.previous, Some(None));
    assert!(
        r.snippet
            .content
            .as_deref()
            .unwrap()
            .contains("reverse_proxy 127.0.0.1:18001")
    );
    let NewContainer::Create(c) = &r.new else {
        panic!()
    };
    assert_eq!(c.labels[LABEL_DIGEST], D1);
    assert_eq!(
        c.labels[LABEL_RUN],
        "https://git.example/o/r/actions/runs/7"
    );
    assert_eq!(c.name, "web-a-1700000000000");
    // The probe expects the revision by default.
    let http = r.gate.http.as_ref().unwrap();
    assert_eq!(http.expect.json, Some((".version".into(), "rev-11".into())));
}

#[test]
fn second_rollout_uses_the_other_slot_and_retires_the_active_one() {
    let f = facts(vec![app("old", 0, D1, 1, true)], Some(18001));
    let plan = plan(&spec(), &target(D2), &f, "systemctl reload caddy");
    let r = rollout(&plan);
    assert_eq!((r.slot, r.port), (1, 18002));
    assert_eq!(r.retire.as_ref().unwrap().id, "old");
    assert!(
        r.snippet
            .previous
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .contains("18001")
    );
    assert!(r.remove_abandoned.is_empty() && r.stop_stale.is_empty());
}

#[test]
fn the_digest_already_serving_is_a_no_op() {
    let f = facts(vec![app("cur", 1, D1, 1, true)], Some(18002));
    let plan = plan(&spec(), &target(D1), &f, "x");
    assert!(
        matches!(plan.action, Action::AlreadyServing { ref container } if container.id == "cur")
    );
}

#[test]
fn an_unhealthy_container_of_the_same_digest_is_replaced() {
    let mut cur = app("cur", 1, D1, 1, true);
    cur.health = Some("unhealthy".into());
    let plan = plan(&spec(), &target(D1), &facts(vec![cur], Some(18002)), "x");
    assert_eq!(rollout(&plan).slot, 0);
}

#[test]
fn a_run_that_died_is_reconciled_from_labels() {
    // Serving: old (slot a). A newer container in slot b was left running by a killed run; an
    // older release is running though not routed to.
    let f = facts(
        vec![
            app("stale", 1, D2, 1, true),
            app("old", 0, D1, 5, true),
            app("abandoned", 1, D2, 9, true),
        ],
        Some(18001),
    );
    let plan = plan(&spec(), &target(D2), &f, "x");
    let r = rollout(&plan);
    assert_eq!(plan.active.as_ref().unwrap().id, "old");
    assert_eq!(
        r.remove_abandoned
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["abandoned"]
    );
    assert_eq!(
        r.stop_stale
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["stale"]
    );
}

#[test]
fn stopped_releases_beyond_retain_are_pruned_newest_kept() {
    let f = facts(
        vec![
            app("cur", 0, D1, 10, true),
            app("prev", 1, D2, 8, false),
            app("older", 1, D1, 3, false),
        ],
        Some(18001),
    );
    let plan = plan(&spec(), &target(D2), &f, "x");
    // retain = 1: the container retired now is the one kept.
    let pruned: Vec<&str> = rollout(&plan).prune.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(pruned, ["prev", "older"]);
}

#[test]
fn rollback_returns_to_the_newest_retained_release_and_reuses_it_in_place() {
    let f = facts(
        vec![
            app("cur", 0, D2, 10, true),
            app("prev", 1, D1, 8, false),
            app("older", 1, D2, 3, false),
        ],
        Some(18001),
    );
    let back = rollback_target(&f).unwrap();
    assert_eq!(back.id, "prev");
    let mut t = target(D1);
    t.reuse_retained = true;
    let plan = plan(&spec(), &t, &f, "x");
    let r = rollout(&plan);
    assert!(matches!(&r.new, NewContainer::Restart(c) if c.id == "prev"));
    assert!(!r.prune.iter().any(|c| c.id == "prev"), "{:?}", r.prune);
}

#[test]
fn no_retained_release_means_nothing_to_roll_back_to() {
    let f = facts(vec![app("cur", 0, D1, 10, true)], Some(18001));
    assert!(rollback_target(&f).is_none());
}

#[test]
fn the_plan_names_env_but_never_holds_a_value() {
    let plan = plan(&spec(), &target(D1), &facts(vec![], None), "x");
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains("\"TOKEN\""), "{json}");
    assert!(!json.contains("s3cr3t-value"), "{json}");
}

#[test]
fn without_the_snippet_the_newest_running_container_is_taken_as_active() {
    let mut f = facts(
        vec![app("a", 0, D1, 1, true), app("b", 1, D2, 2, true)],
        None,
    );
    f.snippet = None;
    assert_eq!(active(&f).unwrap().id, "b");
}

#[test]
fn replacing_the_same_digest_starts_a_fresh_container_and_removes_the_stuck_one() {
    // The serving container runs D1, healthy as far as Docker knows, but stopped answering.
    let f = facts(
        vec![app("stuck", 1, D1, 10, true), app("prev", 0, D2, 5, false)],
        Some(18002),
    );
    assert!(matches!(
        plan(&spec(), &target(D1), &f, "x").action,
        Action::AlreadyServing { .. }
    ));
    let mut t = target(D1);
    t.replace = Some(Replace {
        history: vec![1_600_000_000_000],
    });
    let plan = plan(&spec(), &t, &f, "x");
    let r = rollout(&plan);
    assert_eq!((r.slot, r.port), (0, 18001));
    assert_eq!(r.retire.as_ref().unwrap().id, "stuck");
    assert!(r.remove_retired, "a stuck container is not kept");
    let NewContainer::Create(c) = &r.new else {
        panic!("a fresh container, not a retained one: {:?}", r.new)
    };
    assert_eq!(c.labels[LABEL_DIGEST], D1);
    assert_eq!(
        c.labels[LABEL_REPLACEMENTS], "1600000000000,1700000000000",
        "the history is carried forward with this replacement added"
    );
    // retain = 1 and the stuck one is removed, so the retained release stays.
    assert!(r.prune.is_empty(), "{:?}", r.prune);
    assert!(
        r.snippet
            .content
            .as_deref()
            .unwrap()
            .contains("reverse_proxy 127.0.0.1:18001")
    );
    // A plain rollout keeps the retired container and carries no history.
    let normal = plan_for_d2(&f);
    assert!(!normal.remove_retired);
    let NewContainer::Create(c) = &normal.new else {
        panic!()
    };
    assert!(!c.labels.contains_key(LABEL_REPLACEMENTS));
}

fn plan_for_d2(f: &Facts) -> Rollout {
    rollout(&plan(&spec(), &target(D2), f, "x")).clone()
}

#[test]
fn the_replacement_history_is_read_back_from_the_label() {
    let mut c = app("r", 0, D1, 1, true);
    assert!(Replace::history_of(&c).is_empty());
    c.labels
        .insert(LABEL_REPLACEMENTS.into(), "5,7, 9,garbage".into());
    assert_eq!(Replace::history_of(&c), [5, 7, 9]);
}

#[test]
fn a_hostile_image_revision_label_is_refused_before_anything_changes() {
    let mut f = facts(vec![app("a", 0, D1, 1, true)], Some(18001));
    f.image = Some(crate::engine::ImageInfo {
        id: "sha256:cfg".into(),
        repo_digests: vec![format!("127.0.0.1:5000/web@{D2}")],
        has_healthcheck: true,
        labels: [(
            REVISION_LABEL.to_string(),
            "a000000\nhandle_path /leak/* {root * /; file_server}".to_string(),
        )]
        .into(),
    });
    let mut t = target(D2);
    t.revision = None;
    let plan = plan(&spec(), &t, &f, "x");
    let Action::Refuse { reason, .. } = &plan.action else {
        panic!("{:?}", plan.action)
    };
    assert!(
        reason.contains("org.opencontainers.image.revision label"),
        "{reason}"
    );
    assert!(
        !reason.contains('\n'),
        "the refused value is shown escaped: {reason}"
    );
    // A clean label is taken as the revision.
    f.image
        .as_mut()
        .unwrap()
        .labels
        .insert(REVISION_LABEL.into(), "abc1234".into());
    assert_eq!(super::plan(&spec(), &t, &f, "x").revision, "abc1234");
}

#[test]
fn a_missing_snippet_while_releases_run_changes_nothing() {
    let f = facts(
        vec![app("a", 0, D1, 1, true), app("b", 1, D1, 2, true)],
        None,
    );
    let plan = plan(&spec(), &target(D2), &f, "x");
    let Action::HostContract { reason, hint } = &plan.action else {
        panic!("{:?}", plan.action)
    };
    assert!(
        reason.contains("/etc/caddy/slipway/web.caddy does not exist"),
        "{reason}"
    );
    assert!(reason.contains("web-a, web-b"), "{reason}");
    assert!(hint.contains("Day 0"), "{hint}");
    // With nothing running, a missing snippet is a first deploy.
    let first = super::plan(&spec(), &target(D2), &facts(vec![], None), "x");
    assert!(matches!(first.action, Action::Rollout(_)));
}

#[test]
fn a_run_killed_between_write_and_reload_is_reconciled_from_what_was_applied() {
    // The file names slot b (the killed run's new container); the last reload applied slot a.
    let mut f = facts(
        vec![app("old", 0, D1, 1, true), app("new", 1, D2, 2, true)],
        Some(18002),
    );
    f.snippet.as_mut().unwrap().applied = Some(snippet(18001));
    let plan = plan(&spec(), &target(D2), &f, "x");
    assert_eq!(
        plan.active.as_ref().unwrap().id,
        "old",
        "Caddy serves what it applied"
    );
    let r = rollout(&plan);
    assert_eq!(r.recover.as_deref(), Some(snippet(18001).as_str()));
    let abandoned: Vec<&str> = r.remove_abandoned.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        abandoned,
        ["new"],
        "only what Caddy does not route to is removed"
    );
    assert_eq!(r.retire.as_ref().unwrap().id, "old");
    assert_eq!(
        r.snippet.previous,
        Some(Some(snippet(18001))),
        "undo restores what is applied"
    );
    // File and applied agree: nothing to recover.
    f.snippet.as_mut().unwrap().file = Some(snippet(18001));
    assert_eq!(
        rollout(&super::plan(&spec(), &target(D2), &f, "x")).recover,
        None
    );
}

#[test]
fn each_proxy_plans_its_own_file_and_reads_its_own_route_back() {
    let tables = [
        (
            "[nginx]\nupstream_file = \"/etc/nginx/slipway/web.upstream\"\n",
            "web.upstream",
            "server 127.0.0.1:18002;",
            "nginx -t && systemctl reload nginx",
        ),
        (
            "[traefik]\ndynamic_dir = \"/etc/traefik/dynamic\"\nrule = \"Host(`web.test`)\"\nentrypoints = [\"websecure\"]\napi_url = \"http://127.0.0.1:8080\"\n",
            "web.yml",
            "- url: 'http://127.0.0.1:18002'",
            "confirmed at http://127.0.0.1:8080",
        ),
    ];
    for (table, file, route, apply) in tables {
        let text = format!(
            "name = \"web\"\nslots = [18001, 18002]\ncontainer_port = 8080\nenv = [\"TOKEN\"]\n[health]\n{table}"
        );
        let spec = ServiceSpec::parse(Path::new("s.toml"), &text).unwrap();
        let proxy = spec.proxy().unwrap();
        let driver = proxy.driver("web", None).unwrap();
        // What serves: v1 in slot 0, as this proxy's own file says it.
        let mut f = facts(vec![app("a", 0, D1, 1, true)], None);
        let values = crate::host::proxy::UpstreamValues {
            service: "web",
            port: 18001,
            digest: D1,
            revision: &Revision::parse("x", "test").unwrap(),
        };
        let serving = proxy.render(&values).unwrap();
        f.snippet = Some(crate::rollout::facts::SnippetState {
            file: Some(serving.clone()),
            applied: Some(serving.clone()),
            proxy: proxy.kind(),
        });
        let plan = plan(&spec, &target(D2), &f, &driver.text());
        let r = rollout(&plan);
        assert_eq!(plan.active.as_ref().map(|a| a.id.as_str()), Some("a"));
        assert_eq!((r.slot, r.snippet.file.as_str()), (1, file));
        let content = r.snippet.content.as_deref().unwrap();
        assert!(content.contains(route), "{content}");
        assert_eq!(r.snippet.previous, Some(Some(serving)));
        let text = render_plan(&plan);
        assert!(text.contains(apply), "{text}");
        assert!(!text.contains("Caddy"), "{text}");
    }
}

/// The engine's copy of the target, pinned by `digest`, with a HEALTHCHECK.
fn image_held(digest: &str) -> crate::engine::ImageInfo {
    crate::engine::ImageInfo {
        id: "sha256:cfg".into(),
        repo_digests: vec![format!("127.0.0.1:5000/web@{digest}")],
        has_healthcheck: true,
        labels: BTreeMap::new(),
    }
}

#[test]
fn a_first_plan_starts_early_only_when_nothing_else_comes_before_the_gate() {
    // The engine's facts alone (no snippet yet): v1 serves in slot a, v2 is held.
    let first = |f: &Facts, s: &ServiceSpec| plan(s, &target(D2), f, "x");
    let mut f = facts(vec![app("old", 0, D1, 1, true)], None);
    f.snippet = None;
    f.image = Some(image_held(D2));
    let p = first(&f, &spec());
    let spec_of = early::only_starts(&p, &f).map(|c| (c.host_port, c.name.clone()));
    assert_eq!(spec_of, Some((18002, "web-b-1700000000000".into())));
    // Not held (a pull comes first), held under another digest, a stale release still running,
    // a release command: nothing starts early.
    let mut absent = f.clone();
    absent.image = None;
    assert!(early::only_starts(&first(&absent, &spec()), &absent).is_none());
    let mut other = f.clone();
    other.image = Some(image_held(D1));
    assert!(early::only_starts(&first(&other, &spec()), &other).is_none());
    let mut stale = f.clone();
    stale.containers.push(app("stale", 1, D1, 0, true));
    assert!(early::only_starts(&first(&stale, &spec()), &stale).is_none());
    let text = r#"
name = "web"
slots = [18001, 18002]
container_port = 8080
release_command = ["bin/migrate"]
[health.http]
[caddy]
snippet_dir = "/etc/caddy/slipway"
"#;
    let with_release = ServiceSpec::parse(Path::new("s.toml"), text).unwrap();
    assert!(early::only_starts(&first(&f, &with_release), &f).is_none());
}

#[test]
fn the_snippet_keeps_an_early_container_only_for_the_same_rollout() {
    // v1 runs in slot a; the engine's facts alone take it as serving, so the first plan starts
    // v2 in slot b. The snippet then says what the proxy really routes to.
    let mut f = facts(vec![app("old", 0, D1, 1, true)], None);
    f.snippet = None;
    f.image = Some(image_held(D2));
    let first = plan(&spec(), &target(D2), &f, "x");
    assert!(early::only_starts(&first, &f).is_some());
    let confirmed = |file: Option<String>, applied: Option<String>| {
        let mut with = f.clone();
        with.snippet = Some(crate::rollout::facts::SnippetState {
            file,
            applied,
            proxy: Default::default(),
        });
        plan(&spec(), &target(D2), &with, "x")
    };
    // Routed to slot a: the same rollout (only the snippet to put back is new).
    assert!(early::same_rollout(
        &first,
        &confirmed(Some(snippet(18001)), None)
    ));
    // Routed nowhere: v1 is an abandoned run's container to remove first, v2 goes to slot a.
    let nowhere = crate::host::proxy::PLACEHOLDER.to_string();
    assert!(!early::same_rollout(
        &first,
        &confirmed(Some(nowhere), None)
    ));
    // A run died between its write and its reload: the applied content is put back first.
    let pending = confirmed(Some(snippet(18002)), Some(snippet(18001)));
    assert!(!early::same_rollout(&first, &pending));
    // No snippet while a release runs: the host contract, nothing is rolled out.
    assert!(!early::same_rollout(&first, &confirmed(None, None)));
}
