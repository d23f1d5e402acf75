//! The test API server in a process of its own, so that the bench process's
//! memory is kive's (its runtime, kube client, watch stores and trap table)
//! and not the server's copies of every pod and their watch log.
//!
//! The bench re-executes itself with [`SERVE_FLAG`]; the child starts the
//! real test API server (`plugin/tests/support/apiserver.rs`), prints its
//! URL, then applies one object per stdin line (`<Kind> <json>`) and
//! answers `ok` once it is applied (an apply is done when it returns, as
//! in-process). Same interface as the in-process server for what the bench
//! uses: [`ApiServer::start`], `apply`, `write_kubeconfig`.

#[path = "../../tests/support/apiserver.rs"]
#[allow(dead_code)]
mod inproc;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

pub use inproc::Kind;

/// The argument that makes the bench binary the API server.
pub const SERVE_FLAG: &str = "--kive-bench-api-server";

const KINDS: [Kind; 7] = [
    Kind::Pod,
    Kind::Policy,
    Kind::Namespace,
    Kind::KaPolicy,
    Kind::KaClusterPolicy,
    Kind::KaHostPolicy,
    Kind::Node,
];

/// Runs the API server if this process was started as one (never returns
/// then); otherwise returns.
pub fn serve_if_child() {
    if !std::env::args().any(|a| a == SERVE_FLAG) {
        return;
    }
    let server = inproc::ApiServer::start();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", server.url()).expect("api server: stdout");
    out.flush().expect("api server: stdout");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("api server: stdin");
        let (kind, json) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("api server: no kind in {line:?}"));
        let kind = KINDS
            .into_iter()
            .find(|k| format!("{k:?}") == kind)
            .unwrap_or_else(|| panic!("api server: unknown kind {kind:?}"));
        let object = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("api server: object of {kind:?}: {e}"));
        server.apply(kind, object);
        writeln!(out, "ok").expect("api server: stdout");
        out.flush().expect("api server: stdout");
    }
    // the bench closed stdin: it is done
    std::process::exit(0);
}

/// The API server child, driven over its stdin.
pub struct ApiServer {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    url: String,
}

impl ApiServer {
    /// Starts the server in a child process (this binary, re-executed).
    pub fn start() -> Self {
        let exe = std::env::current_exe().expect("the bench's own path");
        let mut child = Command::new(exe)
            .arg(SERVE_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the API server process");
        let stdin = child.stdin.take().expect("api server stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("api server stdout"));
        let mut url = String::new();
        stdout.read_line(&mut url).expect("api server: its URL");
        assert!(
            url.starts_with("http://"),
            "the API server process printed {url:?}, not its URL"
        );
        Self {
            child,
            io: Mutex::new((stdin, stdout)),
            url: url.trim().to_string(),
        }
    }

    /// Writes a kubeconfig pointing at the server.
    pub fn write_kubeconfig(&self, path: &Path) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n",
                self.url
            ),
        )
        .expect("write kubeconfig");
    }

    /// Creates or replaces an object; returns once the server applied it.
    pub fn apply(&self, kind: Kind, object: serde_json::Value) {
        let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let (stdin, stdout) = &mut *io;
        writeln!(stdin, "{kind:?} {object}").expect("api server: stdin");
        stdin.flush().expect("api server: stdin");
        let mut ok = String::new();
        stdout.read_line(&mut ok).expect("api server: answer");
        assert_eq!(ok.trim(), "ok", "the API server process answered {ok:?}");
    }

    /// The server process's resident memory (`VmRSS`), bytes.
    pub fn rss_bytes(&self) -> u64 {
        super::heap::rss_of(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
