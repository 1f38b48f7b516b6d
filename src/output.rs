//! The one way a result reaches stdout: as text, or as JSON with `--format json`. Progress and
//! CI markers go to stderr (see `ci`); stdout stays the command's result.

use std::io::Write as _;

use anyhow::Context as _;

use crate::cli::Format;
use crate::exit::{Exit, Failure};

/// Writes `data` to stdout: `text(data)` with `--format text`, pretty JSON with `--format json`.
/// A stdout that cannot be written to is "unavailable" (4).
pub fn print<T: serde::Serialize>(
    format: Format,
    data: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<(), Failure> {
    let out = render(format, data, text);
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("writing to stdout")
        .map_err(|e| Failure::new(Exit::Unavailable, e))
}

/// What [`print`] writes.
fn render<T: serde::Serialize>(
    format: Format,
    data: &T,
    text: impl FnOnce(&T) -> String,
) -> String {
    match format {
        Format::Text => text(data),
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(data).expect("plain data serializes")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_or_pretty_json() {
        #[derive(serde::Serialize)]
        struct R {
            a: u8,
        }
        assert_eq!(
            render(Format::Text, &R { a: 1 }, |r| format!("a={}\n", r.a)),
            "a=1\n"
        );
        assert_eq!(
            render(Format::Json, &R { a: 1 }, |_| unreachable!()),
            "{\n  \"a\": 1\n}\n"
        );
    }
}
