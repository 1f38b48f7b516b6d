//! What an HTTP check expects and how a response is judged. Pure: shared by the health gate,
//! the smoke test and the watchdog.

use serde::Serialize;

use crate::image::registry::first_line;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub status: u16,
    /// `.a.b` path into a JSON body, and the value it must hold.
    pub json: Option<(String, String)>,
    pub body_contains: Option<String>,
    /// A regex over the body whose first capture group (or whole match) must equal the value.
    pub body_regex: Option<(String, String)>,
    /// A response header (name, value) that must be present with that value.
    pub header: Option<(String, String)>,
}

/// One response as seen (or the reason there was none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Observed {
    pub status: Option<u16>,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub error: Option<String>,
}

impl Observed {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the body regex captured: group 1, else the whole match.
pub fn regex_capture(pattern: &str, body: &str) -> Result<Option<String>, String> {
    let re = regex::Regex::new(pattern).map_err(|e| format!("bad regex `{pattern}`: {e}"))?;
    Ok(re.captures(body).map(|c| {
        c.get(1)
            .or_else(|| c.get(0))
            .map(|m| m.as_str().to_string())
            .unwrap_or_default()
    }))
}

impl Expect {
    /// `Ok` when the response meets every expectation; otherwise what differs.
    pub fn judge(&self, seen: &Observed) -> Result<(), String> {
        if let Some(err) = &seen.error
            && seen.status.is_none()
        {
            return Err(format!("no response: {err}"));
        }
        let body = || first_line(&seen.body, 120);
        if seen.status != Some(self.status) {
            return Err(format!(
                "status {} (expected {}); body: {}",
                seen.status.map_or("none".into(), |s| s.to_string()),
                self.status,
                body()
            ));
        }
        // A value read from the body, against `want`: `NAME VERB got` differs, `NAME ABSENT` none.
        let from_body =
            |got: Option<String>, want: &str, name: &str, verb: &str, absent: &str| match got {
                Some(got) if got == want => Ok(()),
                Some(got) => Err(format!("{name} {verb} `{got}` (expected `{want}`)")),
                None => Err(format!("{name} {absent} the body: {}", body())),
            };
        if let Some((path, want)) = &self.json {
            let got = json_field(&seen.body, path);
            from_body(got, want, path, "is", "not found in")?;
        }
        if let Some((pattern, want)) = &self.body_regex {
            let got = regex_capture(pattern, &seen.body)?;
            let name = format!("/{pattern}/");
            from_body(got, want, &name, "captured", "does not match")?;
        }
        if let Some((name, want)) = &self.header {
            match seen.header(name) {
                Some(got) if got == want => {}
                Some(got) => return Err(format!("header {name} is `{got}` (expected `{want}`)")),
                None => return Err(format!("header {name} is missing (expected `{want}`)")),
            }
        }
        if let Some(needle) = &self.body_contains
            && !seen.body.contains(needle.as_str())
        {
            return Err(format!("body lacks `{needle}`: {}", body()));
        }
        Ok(())
    }
}

/// The value at `.a.b` (or `a.b`) of a JSON document; strings unquoted, others as JSON text.
pub fn json_field(body: &str, path: &str) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    for key in path
        .trim_start_matches('.')
        .split('.')
        .filter(|k| !k.is_empty())
    {
        value = match value {
            serde_json::Value::Object(mut map) => map.remove(key)?,
            serde_json::Value::Array(mut items) => {
                let i: usize = key.parse().ok()?;
                (i < items.len()).then(|| items.swap_remove(i))?
            }
            _ => return None,
        };
    }
    Some(match value {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// The argv of a busybox/alpine `wget` that fetches `url` and prints the status line (-S) to
/// stderr and the body to stdout. `timeout` bounds it (some busybox builds crash on `wget -T`).
pub fn wget_argv(url: &str, host: Option<&str>, timeout_secs: u64) -> Vec<String> {
    let mut argv: Vec<String> = vec!["timeout".into(), timeout_secs.max(1).to_string()];
    argv.extend(["wget", "-q", "-S", "-O", "-"].map(String::from));
    if let Some(h) = host {
        argv.push("--header".into());
        argv.push(format!("Host: {h}"));
    }
    argv.push(url.into());
    argv
}

/// Reads what `wget -S` printed: the last `HTTP/x y` status line on stderr, the body on stdout.
pub fn parse_wget(code: i64, stdout: &str, stderr: &str) -> Observed {
    let status = stderr
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("HTTP/").or_else(|| {
                l.split_once("server returned error: HTTP/")
                    .map(|(_, rest)| rest)
            })?;
            rest.split_whitespace().nth(1)?.parse::<u16>().ok()
        })
        .next_back();
    let headers = stderr
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (!k.contains(' ') && !k.is_empty())
                .then(|| (k.to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    Observed {
        status,
        headers,
        body: stdout.to_string(),
        error: status.is_none().then(|| match stderr.trim() {
            "" if code == 143 || code == 124 => "timed out".to_string(),
            "" => format!("wget exited with code {code} and printed nothing"),
            text => first_line(text, 200),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_json(body: &str) -> Observed {
        Observed {
            status: Some(200),
            body: body.into(),
            ..Default::default()
        }
    }

    #[test]
    fn json_fields_are_found_by_path() {
        let body = r#"{"status":"ok","version":"abc","build":{"n":3},"tags":["x","y"]}"#;
        assert_eq!(json_field(body, ".version").as_deref(), Some("abc"));
        assert_eq!(json_field(body, "build.n").as_deref(), Some("3"));
        assert_eq!(json_field(body, ".tags.1").as_deref(), Some("y"));
        assert_eq!(json_field(body, ".missing"), None);
        assert_eq!(json_field("not json", ".version"), None);
    }

    #[test]
    fn a_response_is_judged_on_status_json_and_body() {
        let expect = Expect {
            status: 200,
            json: Some((".version".into(), "v2".into())),
            body_contains: Some("ok".into()),
            body_regex: Some((r#""version":"([^"]+)""#.into(), "v2".into())),
            header: None,
        };
        assert_eq!(
            expect.judge(&ok_json(r#"{"status":"ok","version":"v2"}"#)),
            Ok(())
        );
        let err = expect
            .judge(&ok_json(r#"{"status":"ok","version":"v1"}"#))
            .unwrap_err();
        assert_eq!(err, ".version is `v1` (expected `v2`)");
        let err = expect
            .judge(&Observed {
                status: Some(404),
                body: "nope".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.starts_with("status 404 (expected 200)"), "{err}");
        let err = expect
            .judge(&Observed {
                error: Some("connection refused".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err, "no response: connection refused");
        let header = Expect {
            status: 200,
            json: None,
            body_contains: None,
            body_regex: None,
            header: Some(("X-Version".into(), "v2".into())),
        };
        let mut seen = ok_json("{}");
        assert_eq!(
            header.judge(&seen).unwrap_err(),
            "header X-Version is missing (expected `v2`)"
        );
        seen.headers.push(("x-version".into(), "v1".into()));
        assert_eq!(
            header.judge(&seen).unwrap_err(),
            "header X-Version is `v1` (expected `v2`)"
        );
    }

    #[test]
    fn a_value_from_the_body_is_named_when_it_differs_or_is_absent() {
        let json = Expect {
            status: 200,
            json: Some((".version".into(), "v2".into())),
            body_contains: None,
            body_regex: None,
            header: None,
        };
        assert_eq!(
            json.judge(&ok_json("{}\nmore")).unwrap_err(),
            ".version not found in the body: {}"
        );
        let regex = Expect {
            json: None,
            body_regex: Some((r"v(\d)".into(), "2".into())),
            ..json
        };
        assert_eq!(
            regex.judge(&ok_json("v1")).unwrap_err(),
            r"/v(\d)/ captured `1` (expected `2`)"
        );
        assert_eq!(
            regex.judge(&ok_json("none\nmore")).unwrap_err(),
            r"/v(\d)/ does not match the body: none"
        );
        let contains = Expect {
            body_regex: None,
            body_contains: Some("ok".into()),
            ..regex
        };
        assert_eq!(
            contains.judge(&ok_json("nope")).unwrap_err(),
            "body lacks `ok`: nope"
        );
    }

    #[test]
    fn a_body_regex_compares_its_first_group() {
        assert_eq!(
            regex_capture(r"version (\S+)", "app version v7 up")
                .unwrap()
                .as_deref(),
            Some("v7")
        );
        assert_eq!(
            regex_capture(r"v\d", "app v7").unwrap().as_deref(),
            Some("v7")
        );
        assert!(regex_capture("(", "x").is_err());
    }

    #[test]
    fn wget_output_gives_status_and_body() {
        let seen = parse_wget(0, "{\"v\":1}", "  HTTP/1.1 200 OK\n  Content-Length: 7\n");
        assert_eq!(seen.status, Some(200));
        assert_eq!(seen.header("content-length"), Some("7"));
        assert_eq!(seen.body, "{\"v\":1}");
        let seen = parse_wget(
            1,
            "",
            "wget: server returned error: HTTP/1.1 404 Not Found\n",
        );
        assert_eq!(seen.status, Some(404));
        let seen = parse_wget(
            1,
            "",
            "wget: can't connect to remote host: Connection refused\n",
        );
        assert_eq!(seen.status, None);
        assert!(seen.error.unwrap().contains("Connection refused"));
        assert_eq!(parse_wget(143, "", "").error.as_deref(), Some("timed out"));
    }

    #[test]
    fn wget_sends_the_host_header_when_asked() {
        let argv = wget_argv("http://127.0.0.1:8080/health", Some("app.example"), 2);
        assert_eq!(
            argv.join(" "),
            "timeout 2 wget -q -S -O - --header Host: app.example http://127.0.0.1:8080/health"
        );
    }
}
