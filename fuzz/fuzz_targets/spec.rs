//! The service spec parser (`ServiceSpec::parse_with`): the TOML text, then optionally a NUL
//! and `--set KEY.PATH=VALUE` overrides, one a line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use slipway::spec::ServiceSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, overrides) = input.split_once('\0').unwrap_or((input, ""));
    let overrides: Vec<String> = overrides.lines().map(String::from).collect();
    match ServiceSpec::parse_with(Path::new("fuzz.toml"), text, &overrides) {
        Ok(spec) => {
            let _ = spec.resources();
            let _ = spec.over_quota();
        }
        Err(e) => {
            let _ = (e.to_string(), e.hint());
        }
    }
});
