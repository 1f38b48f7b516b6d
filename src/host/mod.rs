//! Reaching the host from a job container: a digest-pinned privileged sibling with the host's
//! PID namespace runs `nsenter -t PID -m -u -n -p -i -- COMMAND`.

pub mod agent;
pub mod lock;
pub mod proxy;

use std::time::Duration;

use thiserror::Error;

use crate::engine::OneShot;
use crate::image::reference::{PinnedImage, ReferenceError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAccess {
    pub image: PinnedImage,
    pub pid: u32,
    pub deadline: Duration,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("the reload command `{0}` has unbalanced quotes")]
    Quoting(String),
    #[error("the reload command is empty")]
    Empty,
}

/// Splits a command line the way a POSIX shell would, without running one.
pub fn split_command(line: &str) -> Result<Vec<String>, CommandError> {
    let argv = shlex::split(line).ok_or_else(|| CommandError::Quoting(line.to_string()))?;
    if argv.is_empty() {
        return Err(CommandError::Empty);
    }
    Ok(argv)
}

impl HostAccess {
    pub fn new(image: &str, pid: u32, deadline: Duration) -> Result<HostAccess, ReferenceError> {
        Ok(HostAccess {
            image: PinnedImage::parse(image)?,
            pid,
            deadline,
        })
    }

    /// `nsenter -t PID -m -u -n -p -i -- COMMAND...`
    pub fn nsenter_argv(&self, command: &[String]) -> Vec<String> {
        let mut cmd: Vec<String> = ["nsenter", "-t", &self.pid.to_string()]
            .into_iter()
            .chain(["-m", "-u", "-n", "-p", "-i", "--"])
            .map(String::from)
            .collect();
        cmd.extend(command.iter().cloned());
        cmd
    }

    /// The privileged sibling that runs `command` in the host's namespaces.
    pub fn nsenter(&self, purpose: &str, command: &[String]) -> OneShot {
        let cmd = self.nsenter_argv(command);
        OneShot {
            name: format!("slipway-{purpose}"),
            image: self.image.to_string(),
            cmd,
            privileged: true,
            pid_host: true,
            mounts: Vec::new(),
            labels: vec![("dev.slipway.purpose".into(), purpose.into())],
            network: None,
            deadline: self.deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "127.0.0.1:5000/busybox@sha256:932bf9c60aafaebea43bbc56087d75c83f423ae074e2e4c086b7e20046d58d9b";

    #[test]
    fn nsenter_sibling_is_privileged_pid_host_and_pinned() {
        let host = HostAccess::new(IMAGE, 1, Duration::from_secs(60)).unwrap();
        let shot = host.nsenter("reload", &split_command("systemctl reload caddy").unwrap());
        assert_eq!(
            shot.cmd.join(" "),
            "nsenter -t 1 -m -u -n -p -i -- systemctl reload caddy"
        );
        assert!(shot.privileged && shot.pid_host);
        assert_eq!(shot.image, IMAGE);
    }

    #[test]
    fn a_tag_is_refused_before_anything_runs() {
        assert!(HostAccess::new("alpine:3.20", 1, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            split_command(r#"caddy reload --config "/etc/caddy/My File""#).unwrap(),
            ["caddy", "reload", "--config", "/etc/caddy/My File"]
        );
        assert_eq!(split_command("  "), Err(CommandError::Empty));
        assert!(matches!(
            split_command("a 'b"),
            Err(CommandError::Quoting(_))
        ));
    }
}
