//! The one way bootenv runs another program.
//!
//! Every command is logged before it runs, gets a null stdin unless given input, may carry a
//! timeout, and on failure yields an error that names the command line, how it ended and the
//! tail of its stderr, so that an operator reading the console sees why without a second try.
//! Besides [`Cmd::output`] (captured), a command can stream its stdout into a writer or its
//! stdin from a reader (`zfs send`, `zfs receive`), or run attached to the terminal
//! ([`Runner`]: the operator's command inside `bootenv upgrade`, with its stdout sent to
//! bootenv's stderr so that bootenv's own stdout carries only the outcome).

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How many bytes of stderr an error keeps.
const STDERR_TAIL: usize = 1024;

/// A command to run.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Option<Duration>,
    heartbeat: Option<(Duration, String)>,
    input: Option<Vec<u8>>,
}

/// What a finished command left behind.
#[derive(Clone, Debug)]
pub struct Output {
    /// The exit code, or `None` when a signal ended it.
    pub code: Option<i32>,
    /// Its standard output, lossily decoded.
    pub stdout: String,
    /// Its standard error, lossily decoded.
    pub stderr: String,
    /// Whether bootenv killed it at the timeout.
    pub timed_out: bool,
}

/// A command that could not be started or did not succeed.
#[derive(Clone, Debug)]
pub struct CmdError {
    /// The command line, as logged.
    pub cmdline: String,
    /// What went wrong: the exit status, the signal, the timeout, or why it could not start.
    pub what: String,
    /// The last bytes of its stderr.
    pub stderr_tail: String,
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.cmdline, self.what)?;
        let tail = self.stderr_tail.trim();
        if !tail.is_empty() {
            write!(f, ": {}", tail.replace('\n', " | "))?;
        }
        Ok(())
    }
}

impl std::error::Error for CmdError {}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

fn tail(s: &str) -> String {
    if s.len() <= STDERR_TAIL {
        return s.to_owned();
    }
    let mut start = s.len() - STDERR_TAIL;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

impl Cmd {
    /// A command running `program` (looked up in `PATH` unless it holds a `/`).
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout: None,
            heartbeat: None,
            input: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, k: &str, v: &str) -> Cmd {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Kills the command when it runs longer than `t`.
    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = Some(t);
        self
    }

    /// While the command runs, logs `what` and how long it has been running every `every`,
    /// so that a slow step (a large pool's import) is never a silent wait on the console.
    pub fn heartbeat(mut self, every: Duration, what: impl Into<String>) -> Cmd {
        self.heartbeat = Some((every, what.into()));
        self
    }

    /// Feeds `data` to the command's stdin.
    pub fn input(mut self, data: Vec<u8>) -> Cmd {
        self.input = Some(data);
        self
    }

    /// The command line as it is logged.
    pub fn cmdline(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                s.push_str(&format!("{a:?}"));
            } else {
                s.push_str(a);
            }
        }
        s
    }

    /// Runs the command to its end; only a failure to start it is an error.
    pub fn output(&self) -> Result<Output, CmdError> {
        let cmdline = self.cmdline();
        log::debug!("$ {cmdline}");
        let started = Instant::now();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(if self.input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|e| CmdError {
            cmdline: cmdline.clone(),
            what: format!("could not start: {e}"),
            stderr_tail: String::new(),
        })?;
        if let (Some(data), Some(mut stdin)) = (self.input.clone(), child.stdin.take()) {
            // A writer thread, so that a command that does not read its input cannot block us.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (killed_tx, killed_rx) = mpsc::channel::<bool>();
        let watched = self.timeout.is_some() || self.heartbeat.is_some();
        if watched {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let (limit, heartbeat) = (self.timeout, self.heartbeat.clone());
            let name = cmdline.clone();
            std::thread::spawn(move || {
                let killed = watch(started, limit, heartbeat, &done_rx);
                if killed {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    log::warn!(
                        "killed `{name}` at its time limit; a command busy inside the kernel ends only when the kernel returns"
                    );
                }
                let _ = killed_tx.send(killed);
            });
        }
        let out = child.wait_with_output();
        drop(done_tx);
        let timed_out = watched && killed_rx.recv().unwrap_or(false);
        let out = out.map_err(|e| CmdError {
            cmdline: cmdline.clone(),
            what: format!("could not be waited for: {e}"),
            stderr_tail: String::new(),
        })?;
        let result = Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            timed_out,
        };
        log::debug!(
            "  -> {} in {} ms",
            result
                .code
                .map_or("signal".to_string(), |c| format!("exit {c}")),
            started.elapsed().as_millis()
        );
        Ok(result)
    }

    /// Runs the command and returns its stdout; a nonzero exit is an error.
    pub fn run(&self) -> Result<String, CmdError> {
        let out = self.output()?;
        self.check(out).map(|o| o.stdout)
    }

    /// Turns an unsuccessful [`Output`] of this command into an error.
    pub fn check(&self, out: Output) -> Result<Output, CmdError> {
        if out.success() {
            return Ok(out);
        }
        let what = if out.timed_out {
            format!(
                "did not finish within {} s and was killed",
                self.timeout.unwrap_or_default().as_secs()
            )
        } else {
            match out.code {
                Some(c) => format!("failed with exit status {c}"),
                None => "was killed by a signal".to_string(),
            }
        };
        Err(CmdError {
            cmdline: self.cmdline(),
            what,
            stderr_tail: tail(&out.stderr),
        })
    }
}

/// Copies a stream, telling on stderr how far it got every 64 MiB; returns the bytes copied.
pub fn copy_with_progress(
    src: &mut dyn std::io::Read,
    dst: &mut dyn Write,
    what: &str,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut next = 64u64 << 20;
    loop {
        let n = match src.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])?;
        total += n as u64;
        if total >= next {
            eprintln!("bootenv: {what} {} MiB", total >> 20);
            next += 64 << 20;
        }
    }
    Ok(total)
}

impl Cmd {
    /// The program and its arguments.
    pub fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect()
    }

    fn command(&self) -> Command {
        log::debug!("$ {}", self.cmdline());
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn could_not(&self, what: &str, e: impl fmt::Display) -> CmdError {
        CmdError {
            cmdline: self.cmdline(),
            what: format!("{what}: {e}"),
            stderr_tail: String::new(),
        }
    }

    fn ended(&self, status: std::process::ExitStatus) -> Result<(), CmdError> {
        if status.success() {
            return Ok(());
        }
        Err(CmdError {
            cmdline: self.cmdline(),
            what: match status.code() {
                Some(c) => format!("failed with exit status {c}"),
                None => "was killed by a signal".to_string(),
            },
            stderr_tail: String::new(),
        })
    }

    /// Runs the command with bootenv's stdin and stderr, its stdout sent to bootenv's stderr;
    /// a nonzero exit is an error.
    pub fn attached(&self) -> Result<(), CmdError> {
        let stderr = std::os::fd::AsFd::as_fd(&std::io::stderr())
            .try_clone_to_owned()
            .map_err(|e| self.could_not("could not start", e))?;
        let status = self
            .command()
            .stdin(Stdio::inherit())
            .stdout(Stdio::from(stderr))
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| self.could_not("could not start", e))?;
        self.ended(status)
    }

    /// Runs the command with its stdout copied into `sink` (its stderr is bootenv's); returns
    /// the bytes copied. A nonzero exit is an error.
    pub fn stream_out(&self, sink: &mut dyn Write, what: &str) -> Result<u64, CmdError> {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| self.could_not("could not start", e))?;
        let mut out = child.stdout.take().expect("piped");
        let copied =
            copy_with_progress(&mut out, sink, what).and_then(|n| sink.flush().map(|()| n));
        drop(out);
        let status = child
            .wait()
            .map_err(|e| self.could_not("could not be waited for", e))?;
        self.ended(status)?;
        copied.map_err(|e| self.could_not("its output could not be written", e))
    }

    /// Runs the command with `src` copied into its stdin; returns the bytes copied. A nonzero
    /// exit is an error; so is a failure to read `src` (the command ends with its stdin closed).
    pub fn stream_in(&self, src: &mut dyn std::io::Read, what: &str) -> Result<u64, CmdError> {
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| self.could_not("could not start", e))?;
        let mut input = child.stdin.take().expect("piped");
        let copied = copy_with_progress(src, &mut input, what);
        drop(input);
        let status = child
            .wait()
            .map_err(|e| self.could_not("could not be waited for", e))?;
        self.ended(status)?;
        copied.map_err(|e| self.could_not("its input could not be read", e))
    }
}

/// Runs commands attached to the terminal: the seam the verbs run the operator's commands
/// through, so that tests can stand in for them.
pub trait Runner {
    /// Runs `cmd` as [`Cmd::attached`] does.
    fn attached(&self, cmd: &Cmd) -> Result<(), CmdError>;
}

/// Runs commands for real.
#[derive(Clone, Copy, Debug, Default)]
pub struct SysRunner;

impl Runner for SysRunner {
    fn attached(&self, cmd: &Cmd) -> Result<(), CmdError> {
        cmd.attached()
    }
}

/// A [`Runner`] for tests that run no command: every command fails.
#[cfg(test)]
pub struct NoRunner;

#[cfg(test)]
impl Runner for NoRunner {
    fn attached(&self, cmd: &Cmd) -> Result<(), CmdError> {
        Err(CmdError {
            cmdline: cmd.cmdline(),
            what: "was not run: this test runs no command".into(),
            stderr_tail: String::new(),
        })
    }
}

/// A fake [`Runner`] for tests: records each command line and answers with `action`.
#[cfg(test)]
pub struct FakeRunner {
    /// The command lines run, in order.
    pub ran: std::cell::RefCell<Vec<Vec<String>>>,
    action: Box<FakeAction>,
}

/// How a [`FakeRunner`] answers a command (its argv).
#[cfg(test)]
type FakeAction = dyn Fn(&[&str]) -> Result<(), String>;

#[cfg(test)]
impl Default for FakeRunner {
    /// Every command succeeds and does nothing.
    fn default() -> FakeRunner {
        FakeRunner::with(|_| Ok(()))
    }
}

#[cfg(test)]
impl FakeRunner {
    /// Each command is answered by `action` (its argv): `Err` is a failed command.
    pub fn with(action: impl Fn(&[&str]) -> Result<(), String> + 'static) -> FakeRunner {
        FakeRunner {
            ran: Default::default(),
            action: Box::new(action),
        }
    }
}

#[cfg(test)]
impl Runner for FakeRunner {
    fn attached(&self, cmd: &Cmd) -> Result<(), CmdError> {
        let argv = cmd.argv();
        self.ran
            .borrow_mut()
            .push(argv.iter().map(|a| a.to_string()).collect());
        (self.action)(&argv).map_err(|what| CmdError {
            cmdline: cmd.cmdline(),
            what,
            stderr_tail: String::new(),
        })
    }
}

/// Waits for `done` (the command ended) until `limit` has passed since `started`, logging the
/// heartbeat on its way; returns whether the limit was reached (the command must be killed).
fn watch(
    started: Instant,
    limit: Option<Duration>,
    heartbeat: Option<(Duration, String)>,
    done: &mpsc::Receiver<()>,
) -> bool {
    loop {
        let elapsed = started.elapsed();
        let left = limit.map(|l| l.saturating_sub(elapsed));
        if left == Some(Duration::ZERO) {
            return true;
        }
        let nap = match (&heartbeat, left) {
            (Some((every, _)), Some(left)) => (*every).min(left),
            (Some((every, _)), None) => *every,
            (None, Some(left)) => left,
            (None, None) => return false,
        };
        match done.recv_timeout(nap) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return false,
        }
        if let Some((every, what)) = &heartbeat {
            let secs = started.elapsed().as_secs();
            if secs >= every.as_secs() && left.map_or(true, |l| l > nap) {
                log::info!("{what}: still running after {secs} s");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_reports_stderr_tail() {
        let out = Cmd::new("sh")
            .args(["-c", "echo hello; echo oops >&2"])
            .run()
            .unwrap();
        assert_eq!(out, "hello\n");
        let err = Cmd::new("sh")
            .args(["-c", "echo 'bad thing' >&2; exit 3"])
            .run()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exit status 3"), "{msg}");
        assert!(msg.contains("bad thing"), "{msg}");
        assert!(
            msg.starts_with("`sh -c \"echo 'bad thing' >&2; exit 3\"`"),
            "{msg}"
        );
    }

    #[test]
    fn keeps_only_the_tail_of_long_stderr() {
        let err = Cmd::new("sh")
            .args([
                "-c",
                "head -c 5000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1",
            ])
            .run()
            .unwrap_err();
        assert!(err.stderr_tail.len() <= STDERR_TAIL + 3);
        assert!(err.stderr_tail.trim_end().ends_with("END"));
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = Cmd::new("/nonexistent/zpool")
            .arg("list")
            .run()
            .unwrap_err();
        assert!(err.to_string().contains("could not start"));
        assert!(err.to_string().contains("/nonexistent/zpool list"));
    }

    #[test]
    fn a_heartbeat_alone_never_kills() {
        let out = Cmd::new("sleep")
            .arg("0.3")
            .heartbeat(Duration::from_millis(50), "sleeping")
            .output()
            .unwrap();
        assert!(out.success() && !out.timed_out, "{out:?}");
    }

    #[test]
    fn the_watch_ends_at_the_limit_or_when_the_command_does() {
        let (tx, rx) = mpsc::channel::<()>();
        let beat = Some((Duration::from_millis(20), "test".to_string()));
        let t = Instant::now();
        assert!(watch(
            t,
            Some(Duration::from_millis(100)),
            beat.clone(),
            &rx
        ));
        assert!(t.elapsed() >= Duration::from_millis(100));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            drop(tx);
        });
        let t = Instant::now();
        assert!(!watch(t, Some(Duration::from_secs(10)), beat, &rx));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn timeout_kills() {
        let t = Instant::now();
        let err = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn env_and_input_reach_the_command() {
        let out = Cmd::new("sh")
            .args(["-c", "echo $X; cat"])
            .env("X", "42")
            .input(b"in".to_vec())
            .run()
            .unwrap();
        assert_eq!(out, "42\nin");
    }

    #[test]
    fn streams_flow_both_ways_and_a_failure_is_named() {
        let mut sink = Vec::new();
        let n = Cmd::new("sh")
            .args(["-c", "printf 'abc'"])
            .stream_out(&mut sink, "sent")
            .unwrap();
        assert_eq!((n, sink.as_slice()), (3, &b"abc"[..]));
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("got");
        let n = Cmd::new("sh")
            .args(["-c", &format!("cat > {}", file.display())])
            .stream_in(&mut &b"12345"[..], "received")
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(std::fs::read(&file).unwrap(), b"12345");
        let e = Cmd::new("sh")
            .args(["-c", "cat >/dev/null; exit 3"])
            .stream_in(&mut &b"x"[..], "received")
            .unwrap_err();
        assert!(e.to_string().contains("exit status 3"), "{e}");
        let e = Cmd::new("false").attached().unwrap_err();
        assert!(e.to_string().contains("`false` failed"), "{e}");
    }
}
