//! The build context: a tar of the context directory, less what `.dockerignore` leaves out,
//! written on a blocking thread and handed to the engine in chunks through a small bounded
//! channel. The tar is never held whole in memory: at most `CHUNKS_IN_FLIGHT` chunks of
//! `CHUNK_BYTES` wait for the engine, and the writer blocks until it reads on.
//!
//! Entries are as the Docker CLI writes them: paths relative to the root in lexical order,
//! modes and modification times kept, owner root (uid/gid 0), symlinks stored as links.

use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::mpsc;

use super::dockerignore::{DockerIgnore, DockerIgnoreError};

pub const CHUNK_BYTES: usize = 256 * 1024;
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// Where a Dockerfile from outside the context is put in the tar (as the Docker CLI does).
const OUTSIDE_DOCKERFILE: &str = ".dockerfile.slipway";

#[derive(Debug, Error)]
pub enum ContextError {
    #[error("the build context {} is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("the Dockerfile {} cannot be read", path.display())]
    Dockerfile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Ignore(#[from] DockerIgnoreError),
    #[error("cannot read {} while sending the build context", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the engine stopped reading the build context")]
    Closed,
}

impl ContextError {
    pub fn hint(&self) -> &'static str {
        match self {
            ContextError::NotADirectory { .. } => {
                "give the directory to build with --context (default: the working directory)"
            }
            ContextError::Dockerfile { .. } => {
                "give it with --file (relative to the working directory); the default is CONTEXT/Dockerfile"
            }
            ContextError::Ignore(e) => e.hint(),
            ContextError::Read { .. } => {
                "make the file readable, or leave it out of the context with .dockerignore"
            }
            ContextError::Closed => "the engine's own error says why",
        }
    }
}

/// What was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ContextStats {
    /// Entries in the tar: files, directories, links.
    pub entries: u64,
    /// Bytes of tar handed to the engine.
    pub bytes: u64,
    /// Entries `.dockerignore` left out (an excluded directory counts once).
    pub excluded: u64,
}

/// A context directory, checked and ready to be streamed.
#[derive(Debug, Clone)]
pub struct Context {
    dir: PathBuf,
    ignore: DockerIgnore,
    /// The `dockerfile` the engine is told: a path inside the tar.
    dockerfile: String,
    /// A Dockerfile that lives outside the context, added to the tar under `dockerfile`.
    outside: Option<PathBuf>,
}

/// The tar as a stream of chunks, and the writer's outcome.
pub struct ContextStream {
    pub body: std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    pub done: tokio::task::JoinHandle<Result<ContextStats, ContextError>>,
    /// Bytes handed over so far.
    pub sent: Arc<AtomicU64>,
}

impl Context {
    /// `dockerfile` is a path as the user gave it (relative to the working directory).
    pub fn new(dir: &Path, dockerfile: &Path) -> Result<Context, ContextError> {
        let not_a_dir = || ContextError::NotADirectory {
            dir: dir.to_path_buf(),
        };
        let root = dir.canonicalize().map_err(|_| not_a_dir())?;
        if !root.is_dir() {
            return Err(not_a_dir());
        }
        let file = dockerfile
            .canonicalize()
            .map_err(|source| ContextError::Dockerfile {
                path: dockerfile.to_path_buf(),
                source,
            })?;
        let (name, outside) = match file.strip_prefix(&root) {
            Ok(rel) => (rel.to_string_lossy().into_owned(), None),
            Err(_) => (OUTSIDE_DOCKERFILE.to_string(), Some(file)),
        };
        let mut ignore = DockerIgnore::read(&root)?;
        ignore.keep_build_files(&name);
        Ok(Context {
            dir: root,
            ignore,
            dockerfile: name,
            outside,
        })
    }

    /// The Dockerfile's path inside the tar, for the engine.
    pub fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// Starts writing the tar on a blocking thread.
    pub fn stream(self) -> ContextStream {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let done = tokio::task::spawn_blocking(move || {
            let result = self.write_tar(&tx, counter);
            if let Err(e) = &result {
                // Fails the request body, so the engine does not build a partial context.
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
            result
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        ContextStream {
            body: Box::pin(body),
            done,
            sent,
        }
    }

    fn write_tar(
        &self,
        tx: &mpsc::Sender<io::Result<Bytes>>,
        sent: Arc<AtomicU64>,
    ) -> Result<ContextStats, ContextError> {
        let writer = ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK_BYTES),
            sent,
        };
        let mut tar = tar::Builder::new(writer);
        let mut stats = ContextStats::default();
        self.walk(&mut tar, &self.dir, "", &mut stats)?;
        if let Some(outside) = &self.outside {
            let meta = std::fs::metadata(outside).map_err(read_error(outside))?;
            append(&mut tar, outside, &self.dockerfile, &meta)?;
            stats.entries += 1;
        }
        let mut writer = tar.into_inner().map_err(closed_or(&self.dir))?;
        writer.flush().map_err(closed_or(&self.dir))?;
        stats.bytes = writer.sent.load(Ordering::Relaxed);
        Ok(stats)
    }

    fn walk(
        &self,
        tar: &mut tar::Builder<ChannelWriter<'_>>,
        dir: &Path,
        rel: &str,
        stats: &mut ContextStats,
    ) -> Result<(), ContextError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_error(dir))?
            .collect::<Result<_, _>>()
            .map_err(read_error(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            let rel_path = if rel.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            let meta = std::fs::symlink_metadata(&path).map_err(read_error(&path))?;
            let is_dir = meta.is_dir();
            if self.ignore.is_excluded(&rel_path) {
                if is_dir && self.ignore.must_descend(&rel_path) {
                    // Not sent itself, but an exception may bring back something inside.
                    self.walk(tar, &path, &rel_path, stats)?;
                } else {
                    tracing::debug!(path = %rel_path, "left out by .dockerignore");
                    stats.excluded += 1;
                }
                continue;
            }
            let kind = meta.file_type();
            if kind.is_socket() || kind.is_fifo() || kind.is_block_device() || kind.is_char_device()
            {
                tracing::warn!(path = %rel_path, "not sent: not a file, directory or symlink");
                continue;
            }
            append(tar, &path, &rel_path, &meta)?;
            stats.entries += 1;
            if is_dir {
                self.walk(tar, &path, &rel_path, stats)?;
            }
        }
        Ok(())
    }
}

/// One entry: a directory, a symlink or a regular file (streamed from disk).
fn append(
    tar: &mut tar::Builder<ChannelWriter<'_>>,
    path: &Path,
    name: &str,
    meta: &Metadata,
) -> Result<(), ContextError> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    let failed = closed_or(path);
    if meta.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        tar.append_data(&mut header, format!("{name}/"), io::empty())
            .map_err(failed)
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(read_error(path))?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, name, target).map_err(failed)
    } else {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        let file = File::open(path).map_err(read_error(path))?;
        let exact = ExactLen {
            inner: file,
            left: meta.len(),
        };
        // Read in chunk-sized pieces: io::copy then moves a chunk per read, not 8 KiB.
        let reader = io::BufReader::with_capacity(CHUNK_BYTES, exact);
        tar.append_data(&mut header, name, reader).map_err(failed)
    }
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// A write that failed because the engine went away, or a read of `path` that failed.
fn closed_or(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::BrokenPipe {
            ContextError::Closed
        } else {
            ContextError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Reads exactly the size the header announced: a file that shrinks or grows while it is sent
/// would corrupt the tar, so it is an error instead.
struct ExactLen {
    inner: File,
    left: u64,
}

impl Read for ExactLen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("the file grew while it was being sent")),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other("the file shrank while it was being sent"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hands the tar to the async side in `CHUNK_BYTES` pieces, blocking while the channel is full.
struct ChannelWriter<'a> {
    tx: &'a mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    sent: Arc<AtomicU64>,
}

impl ChannelWriter<'_> {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK_BYTES)).freeze();
        let len = chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        self.sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

impl Write for ChannelWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let take = data.len().min(room);
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHUNK_BYTES {
            self.send()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use std::os::unix::fs::PermissionsExt;

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    async fn entries(
        context: Context,
    ) -> (Vec<(String, tar::EntryType, u32, Vec<u8>)>, ContextStats) {
        let stream = context.stream();
        let bytes: Vec<Bytes> = stream.body.try_collect().await.unwrap();
        let stats = stream.done.await.unwrap().unwrap();
        let all: Vec<u8> = bytes.concat();
        assert_eq!(stats.bytes, all.len() as u64);
        let mut archive = tar::Archive::new(&all[..]);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            out.push((
                entry.path().unwrap().to_string_lossy().into_owned(),
                header.entry_type(),
                header.mode().unwrap(),
                content,
            ));
        }
        (out, stats)
    }

    #[tokio::test]
    async fn sends_what_dockerignore_keeps_and_the_build_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", b"FROM scratch\n");
        write(
            root,
            ".dockerignore",
            b"Dockerfile\n.dockerignore\nbig\n**/*.log\n!keep.log\n.git\n",
        );
        write(root, "src/main.rs", b"fn main() {}\n");
        write(root, "src/debug.log", b"noise");
        write(root, "keep.log", b"kept");
        write(root, "big/blob.bin", &[0u8; 4096]);
        write(root, ".git/HEAD", b"ref: refs/heads/main\n");
        std::fs::set_permissions(
            root.join("src/main.rs"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        std::os::unix::fs::symlink("src/main.rs", root.join("link")).unwrap();

        let context = Context::new(root, &root.join("Dockerfile")).unwrap();
        assert_eq!(context.dockerfile(), "Dockerfile");
        let (got, stats) = entries(context).await;
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                ".dockerignore",
                "Dockerfile",
                "keep.log",
                "link",
                "src/",
                "src/main.rs"
            ]
        );
        let main = got.iter().find(|e| e.0 == "src/main.rs").unwrap();
        assert_eq!((main.2, main.3.as_slice()), (0o750, &b"fn main() {}\n"[..]));
        let link = got.iter().find(|e| e.0 == "link").unwrap();
        assert_eq!(link.1, tar::EntryType::Symlink);
        assert_eq!(stats.entries, 6);
        assert_eq!(stats.excluded, 3); // big, .git, src/debug.log
    }

    #[tokio::test]
    async fn an_excluded_directory_is_entered_for_an_exception_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", b"FROM scratch\n");
        write(root, ".dockerignore", b"vendor\n!vendor/keep/this.txt\n");
        write(root, "vendor/keep/this.txt", b"1");
        write(root, "vendor/keep/not.txt", b"2");
        write(root, "vendor/other.txt", b"3");
        let (got, _) = entries(Context::new(root, &root.join("Dockerfile")).unwrap()).await;
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [".dockerignore", "Dockerfile", "vendor/keep/this.txt"]
        );
    }

    #[tokio::test]
    async fn a_dockerfile_outside_the_context_is_added() {
        let ctx = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        write(ctx.path(), "app.txt", b"x");
        write(other.path(), "build.Dockerfile", b"FROM scratch\n");
        let context = Context::new(ctx.path(), &other.path().join("build.Dockerfile")).unwrap();
        assert_eq!(context.dockerfile(), OUTSIDE_DOCKERFILE);
        let (got, _) = entries(context).await;
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["app.txt", OUTSIDE_DOCKERFILE]);
        assert!(matches!(
            Context::new(ctx.path(), &ctx.path().join("Dockerfile")),
            Err(ContextError::Dockerfile { .. })
        ));
        assert!(matches!(
            Context::new(
                &ctx.path().join("app.txt"),
                &other.path().join("build.Dockerfile")
            ),
            Err(ContextError::NotADirectory { .. })
        ));
    }

    /// The writer runs ahead of the reader by the channel's few chunks, never by the context.
    #[tokio::test]
    async fn a_slow_reader_holds_the_writer_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", b"FROM scratch\n");
        let big = File::create(root.join("big.bin")).unwrap();
        big.set_len(32 * 1024 * 1024).unwrap();
        let mut stream = Context::new(root, &root.join("Dockerfile"))
            .unwrap()
            .stream();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let ahead = stream.sent.load(Ordering::Relaxed);
        assert!(
            ahead <= ((CHUNKS_IN_FLIGHT + 1) * CHUNK_BYTES) as u64,
            "{ahead} bytes queued without a reader"
        );
        let mut total = 0u64;
        while let Some(chunk) = stream.body.try_next().await.unwrap() {
            assert!(chunk.len() <= CHUNK_BYTES);
            total += chunk.len() as u64;
        }
        let stats = stream.done.await.unwrap().unwrap();
        assert_eq!(stats.bytes, total);
        assert!(total > 32 * 1024 * 1024);
    }

    #[tokio::test]
    async fn a_dropped_reader_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", b"FROM scratch\n");
        File::create(root.join("big.bin"))
            .unwrap()
            .set_len(16 * 1024 * 1024)
            .unwrap();
        let stream = Context::new(root, &root.join("Dockerfile"))
            .unwrap()
            .stream();
        drop(stream.body);
        assert!(matches!(
            stream.done.await.unwrap(),
            Err(ContextError::Closed)
        ));
    }

    /// A file that changes size while it is sent fails the stream and is named: never a tar
    /// whose header and contents disagree.
    #[tokio::test]
    async fn a_file_that_shrinks_while_sent_fails_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", b"FROM scratch\n");
        let path = root.join("data.bin");
        File::create(&path)
            .unwrap()
            .set_len(8 * 1024 * 1024)
            .unwrap();
        let mut stream = Context::new(root, &root.join("Dockerfile"))
            .unwrap()
            .stream();
        // The writer is now blocked part-way through data.bin, waiting for the reader.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let mut failed = false;
        loop {
            match stream.body.try_next().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "the body must fail, not end cleanly");
        let err = stream.done.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("data.bin"), "{err}");
        assert!(format!("{:?}", err).contains("shrank"), "{err:?}");
    }
}
