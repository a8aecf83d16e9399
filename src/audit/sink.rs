//! Where the writer thread puts its lines: standard output, or a file
//! opened for appending (created if missing; its directory must exist).
//!
//! Opening a file that already holds a chain continues it: the last complete
//! line gives the next `seq` and `prev`. A last line cut short (a crash in
//! the middle of a write) is ended with a newline and left as it is, so
//! `audit verify` names it; the chain continues from the line before it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::chain::ChainState;

/// The first read of a file's tail; doubled until it holds the last line.
const TAIL_CHUNK: u64 = 64 * 1024;

/// An open sink.
pub enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    /// Standard output: a new chain each run (an earlier run's lines are out
    /// of reach).
    pub fn stdout() -> Sink {
        Sink::Stdout
    }

    /// Opens (or creates) the file and reads where its chain stands.
    pub fn open_file(path: &Path) -> io::Result<(Sink, ChainState)> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: its directory {} does not exist", path.display(), dir.display()),
                ));
            }
        }
        let mut file = open_append(path).map_err(named)?;
        let state = continue_chain(&mut file, path).map_err(named)?;
        Ok((
            Sink::File {
                path: path.to_path_buf(),
                file,
            },
            state,
        ))
    }

    /// Writes a batch of whole lines and flushes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            // A `File` has no user-space buffer: one write per batch.
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    /// Asks the kernel to put the file's data on disk (at checkpoints and
    /// at the stop, not at every batch: that would cost a disk round trip per
    /// batch).
    pub fn sync(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout => Ok(()),
            Sink::File { file, .. } => file.sync_data(),
        }
    }

    /// Opens the path again (logrotate moved the file away): later lines go
    /// to the file now at the path, created if missing.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { path, file } = self {
            let _ = file.sync_data();
            *file = open_append(path)?;
        }
        Ok(())
    }

    /// After a failed write: opens the path again and reads where the chain
    /// stands in it (a write may have put part of a batch there). `None`
    /// for standard output (nothing to read back).
    pub fn resync(&mut self) -> io::Result<Option<ChainState>> {
        match self {
            Sink::Stdout => Ok(None),
            Sink::File { path, file } => {
                let mut reopened = open_append(path)?;
                let state = continue_chain(&mut reopened, path)?;
                *file = reopened;
                Ok(Some(state))
            }
        }
    }

    /// The path written, for log lines.
    pub fn describe(&self) -> String {
        match self {
            Sink::Stdout => "standard output".into(),
            Sink::File { path, .. } => path.display().to_string(),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        // The trail names subjects and clients: not for every local user.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options.open(path)
}

/// Reads the file's last complete line and returns the chain state after
/// it; a cut-short last line is ended with a newline first.
fn continue_chain(file: &mut File, path: &Path) -> io::Result<ChainState> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(ChainState::genesis());
    }
    let mut chunk = TAIL_CHUNK.min(length);
    loop {
        let start = length - chunk;
        let mut tail = vec![0; chunk as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut tail)?;
        // The end of the last complete line.
        let end = match tail.iter().rposition(|&b| b == b'\n') {
            Some(end) => end,
            None if start > 0 => {
                chunk = (chunk * 2).min(length);
                continue;
            }
            None => {
                // Nothing but a cut-short line: end it, start a new chain.
                terminate_partial_line(file, path)?;
                return Ok(ChainState::genesis());
            }
        };
        let line_start = match tail[..end].iter().rposition(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None if start > 0 => {
                chunk = (chunk * 2).min(length);
                continue;
            }
            None => 0,
        };
        let state = ChainState::from_line(&tail[line_start..end]).map_err(|problem| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("its last line {problem}: move the file aside to start a new chain"),
            )
        })?;
        if end + 1 != tail.len() {
            terminate_partial_line(file, path)?;
        }
        return Ok(state);
    }
}

fn terminate_partial_line(file: &mut File, path: &Path) -> io::Result<()> {
    log::warn!(
        "the audit log {} ends with a line cut short (a crash while writing?): ended it; \
         the chain continues from the line before, and `audit verify` will name that line",
        path.display()
    );
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_lines() -> (Vec<u8>, ChainState) {
        let mut state = ChainState::genesis();
        let mut out = Vec::new();
        state.append(&mut out, "T", "i", br#"{"event":"a"}"#);
        state.append(&mut out, "T", "i", br#"{"event":"b"}"#);
        (out, state)
    }

    #[test]
    fn opening_an_existing_file_continues_from_its_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (bytes, state) = two_lines();
        std::fs::write(&path, &bytes).unwrap();
        let (_, opened) = Sink::open_file(&path).unwrap();
        assert_eq!(opened, state);
        assert_eq!(opened.seq, 2);
    }

    #[test]
    fn a_new_file_starts_a_new_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (_, opened) = Sink::open_file(&dir.path().join("new.jsonl")).unwrap();
        assert_eq!(opened, ChainState::genesis());
        assert!(dir.path().join("new.jsonl").exists());
    }

    #[test]
    fn a_line_cut_short_is_ended_and_the_chain_continues_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (mut bytes, state) = two_lines();
        bytes.extend_from_slice(br#"{"time":"T","event":"c"#);
        std::fs::write(&path, &bytes).unwrap();
        let (_, opened) = Sink::open_file(&path).unwrap();
        assert_eq!(opened, state);
        assert!(std::fs::read(&path).unwrap().ends_with(b"\"c\n"));
    }

    #[test]
    fn a_file_whose_last_line_is_not_an_audit_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "hello\n").unwrap();
        let error = Sink::open_file(&path).err().expect("refused");
        assert!(error.to_string().contains("move the file aside"), "{error}");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere").join("audit.jsonl");
        let error = Sink::open_file(&path).err().expect("refused");
        assert!(error.to_string().contains("does not exist"), "{error}");
    }

    #[test]
    fn a_long_last_line_is_found_past_the_first_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut state = ChainState::genesis();
        let mut out = Vec::new();
        state.append(&mut out, "T", "i", br#"{"event":"a"}"#);
        let long = format!(r#"{{"event":"b","reason":"{}"}}"#, "x".repeat(200_000));
        state.append(&mut out, "T", "i", long.as_bytes());
        std::fs::write(&path, &out).unwrap();
        let (_, opened) = Sink::open_file(&path).unwrap();
        assert_eq!(opened, state);
    }
}
