//! `.dockerignore` parsing and matching. The input is the file's text, then optionally a NUL
//! and paths to match, one a line; the file's own lines are matched as paths too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway::image::build::dockerignore::DockerIgnore;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, paths) = input.split_once('\0').unwrap_or((input, ""));
    let Ok(mut ignore) = DockerIgnore::parse(text) else {
        return;
    };
    let fixed = [".env", ".git", ".venv", "Dockerfile", "a/b/c", "."];
    for path in paths.lines().chain(text.lines()).chain(fixed) {
        let _ = ignore.is_excluded(path);
        let _ = ignore.must_descend(path);
    }
    ignore.keep_build_files("deploy/Dockerfile");
    let _ = ignore.is_excluded("deploy/Dockerfile");
});
