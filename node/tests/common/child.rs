//! Children kept in hand: killed when a test fails, their output read on
//! threads of their own, and a running node whose addresses were read from
//! its stderr.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::DEADLINE;

/// A child process killed (SIGKILL on Unix) and reaped when dropped, so no
/// test leaves one behind (or hangs on one), whatever fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's output, read on a thread of their own (so its pipe
/// never fills), and what was read so far for failure messages.
pub struct Lines {
    rx: Receiver<String>,
    seen: Arc<Mutex<String>>,
}

impl Lines {
    pub fn of(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(String::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&format!("{line}\n"));
                // The test may have stopped listening; keep draining.
                let _ = tx.send(line);
            }
        });
        Lines { rx, seen }
    }

    /// The next line, or `None` at end of output; a panic at `until`.
    pub fn next(&self, until: Instant, what: &str) -> Option<String> {
        let left = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "timed out waiting for {what}; output so far:\n{}",
                    self.seen()
                )
            }
        }
    }

    /// Everything read so far.
    pub fn seen(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    /// Everything, once the output has ended (within [`DEADLINE`]).
    pub fn to_end(&self) -> String {
        let until = Instant::now() + DEADLINE;
        while self.next(until, "the end of the output").is_some() {}
        self.seen()
    }
}

/// Waits, at most [`DEADLINE`], for `child` to exit by itself.
pub fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        assert!(Instant::now() < until, "{what} did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 100 ms until it holds, at most [`DEADLINE`].
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `int devnet` or `int run`: killed when dropped, its stdout
/// and stderr read as [`Lines`], and the addresses it printed on stderr.
pub struct Node {
    pub kid: KillOnDrop,
    /// Its stderr.
    pub log: Lines,
    pub stdout: Lines,
    /// `HOST:PORT` of its JSON-RPC server.
    pub rpc: String,
    /// `HOST:PORT` of its MQTT gateway, when asked for.
    pub mqtt: Option<String>,
}

impl Node {
    /// Starts `cmd` (see [`super::int_command`]) with stdout and stderr
    /// piped, and waits, at most [`DEADLINE`], for the `JSON-RPC on
    /// http://ADDR` line and, with `mqtt`, the `MQTT on mqtt://ADDR` one.
    pub fn start(cmd: &mut Command, mqtt: bool) -> Node {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start int");
        let log = Lines::of(child.stderr.take().expect("stderr"));
        let stdout = Lines::of(child.stdout.take().expect("stdout"));
        let kid = KillOnDrop(child);
        let until = Instant::now() + DEADLINE;
        let (mut rpc, mut gateway) = (None, None);
        while rpc.is_none() || (mqtt && gateway.is_none()) {
            let line = log
                .next(until, "its JSON-RPC and MQTT addresses")
                .unwrap_or_else(|| {
                    panic!(
                        "int exited before naming its JSON-RPC and MQTT addresses:\n{}",
                        log.seen()
                    )
                });
            if let Some(a) = line.trim().strip_prefix("JSON-RPC on http://") {
                rpc = Some(a.to_string());
            }
            if let Some(a) = line.trim().strip_prefix("MQTT on mqtt://") {
                gateway = Some(a.to_string());
            }
        }
        Node {
            kid,
            log,
            stdout,
            rpc: rpc.unwrap(),
            mqtt: gateway,
        }
    }

    /// The MQTT gateway's port.
    pub fn mqtt_port(&self) -> u16 {
        let mqtt = self.mqtt.as_deref().expect("started with MQTT");
        mqtt.rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in the MQTT address {mqtt:?}"))
    }

    /// Waits for the node to stop by itself (its `--duration`), at most
    /// [`DEADLINE`]; asserts it exited with success and did not panic, and
    /// returns its stdout.
    pub fn finish(mut self) -> String {
        let status = wait_exit(&mut self.kid.0, "int");
        let log = self.log.to_end();
        assert!(status.success(), "int exited with {status}:\n{log}");
        assert!(!log.contains("panicked"), "{log}");
        self.stdout.to_end()
    }
}
