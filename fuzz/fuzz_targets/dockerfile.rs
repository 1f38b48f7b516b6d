//! Dockerfile parsing, stages and the whole lint (`lint::check` takes text only).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway::image::build::dockerignore::DockerIgnore;
use slipway::image::dockerfile::{self, Stages};
use slipway::image::lint::{self, LintOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let instructions = dockerfile::parse(text);
    for ins in &instructions {
        let _ = ins.exec_form();
        let _ = ins.flags();
        let _ = ins.mount_sources();
        let _ = dockerfile::assignments(ins);
    }
    let build_args = vec![("BASE".to_string(), "alpine:3.20".to_string())];
    let stages = Stages::new(&instructions, &build_args);
    let _ = stages.final_stage(Some("build"));
    let ignore = DockerIgnore::parse(".env\n.git\n.venv\n").ok();
    for options in [
        LintOptions::default(),
        LintOptions {
            build_args,
            target: Some("build".into()),
            health_probe: true,
            ..Default::default()
        },
    ] {
        if let Ok(findings) = lint::check(
            "Dockerfile",
            text,
            ".dockerignore",
            ignore.as_ref(),
            &options,
        ) {
            for finding in findings {
                let _ = finding.render();
            }
        }
    }
});
