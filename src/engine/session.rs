//! A shell exec'd once into a running container with stdin attached, running one command per
//! line sent: a host step costs a write and a read instead of a `docker exec` each (create,
//! start, inspect, and a runc exec the engine pays for).

use std::sync::Mutex;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};

use super::{Engine, EngineError, OneShotExit, ProbeSession};

impl Engine {
    /// Starts `sh -s` in container `id` with stdin, stdout and stderr attached.
    pub async fn exec_session(&self, id: &str) -> Result<ProbeSession, EngineError> {
        let op = |what: &str| format!("{what} a shell session in {id}");
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(vec!["sh".to_string(), "-s".to_string()]),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(EngineError::api(op("preparing")))?;
        match self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(EngineError::api(op("starting")))?
        {
            StartExecResults::Attached { output, input } => Ok(ProbeSession {
                id: id.to_string(),
                marker: format!("@@slipway-step-end-{}@@", exec.id),
                io: Mutex::new((input, output)),
            }),
            StartExecResults::Detached => Err(EngineError::Api {
                op: op("attaching to"),
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 500,
                    message: "the engine started the session detached".into(),
                },
            }),
        }
    }
}

impl ProbeSession {
    /// Runs `argv` (no shell parses it: it is quoted) in an exec session, stdin closed; its
    /// exit code and output, within `deadline`. Any error leaves the session unusable.
    pub async fn command(
        &mut self,
        argv: &[String],
        deadline: Duration,
    ) -> Result<OneShotExit, EngineError> {
        let line = session_line(argv, &self.marker).map_err(|e| EngineError::Api {
            op: format!("quoting `{}`", argv.join(" ")),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 400,
                message: e,
            },
        })?;
        self.send(line.as_bytes(), deadline).await
    }
}

/// One command for `sh -s`, ending its answer on stdout and on stderr with
/// `\n<marker> <exit code>\n`.
fn session_line(argv: &[String], marker: &str) -> Result<String, String> {
    let command = shlex::try_join(argv.iter().map(String::as_str)).map_err(|e| e.to_string())?;
    Ok(format!(
        "{command} </dev/null; rc=$?; printf '\\n%s %s\\n' '{marker}' \"$rc\"; printf '\\n%s %s\\n' '{marker}' \"$rc\" >&2\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_line_quotes_the_command_and_marks_its_end() {
        let argv: Vec<String> = ["sh", "-c", "printf '%s' \"$1\" > f", "sh", "a\nb 'c'"]
            .map(String::from)
            .to_vec();
        let line = session_line(&argv, "@@m@@").unwrap();
        let (command, rest) = line.split_once(" </dev/null; rc=$?;").unwrap();
        assert_eq!(shlex::split(command).unwrap(), argv, "{line}");
        assert!(rest.ends_with("'@@m@@' \"$rc\" >&2\n"), "{rest}");
    }
}
