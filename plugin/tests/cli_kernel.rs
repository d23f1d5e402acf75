//! `kive run` as a user runs it: policies from files, alerts on stdout,
//! per-trap errors on stderr, clean exit on SIGINT.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cli::{lines, piped, spawn, spawn_private_tmp, stop, wait_line, Kive};

#[test]
fn run_arms_good_traps_reports_bad_ones_and_prints_json_alerts() {
    let d = support::world_dir();
    let decoy = d.path().join("decoy.txt");
    let policy = d.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: cli, namespace: ops}}\nspec:\n  traps:\n  - path: {}\n    create: true\n    mode: 0444\n    matchAny: [{{host: true}}]\n  - path: not/absolute\n    matchAny: [{{host: true}}]\n  - path: /x\n    matchAny: [{{containerName: 'regex:(', namespace: default}}]\n  - path: /in/a/pod\n    matchAny: [{{namespace: default}}]\n",
            decoy.display()
        ),
    )
    .expect("write policy");
    let k = spawn(&[
        "run",
        "--policy",
        policy.to_str().expect("utf-8"),
        "--tier",
        "tracepoint",
    ]);
    let log = wait_line(&k.stderr, "kive running", support::DEADLINE);
    let all = log.join("\n");
    assert!(all.contains("tier=tracepoint armed=1"), "{all}");
    assert!(
        all.contains("policy ops/cli trap 1 (not/absolute): field path"),
        "{all}"
    );
    assert!(
        all.contains("policy ops/cli trap 2 (/x): field matchAny[0].containerName"),
        "{all}"
    );
    assert!(
        all.contains("policy ops/cli trap 3 (/in/a/pod): targets pods: needs a cluster"),
        "{all}"
    );
    let (pid, _) = support::run(Command::new("cat").arg(&decoy));
    let line = k
        .stdout
        .recv_timeout(support::DEADLINE)
        .expect("an alert line on stdout");
    let v: serde_json::Value = serde_json::from_str(&line).expect("stdout is JSON lines");
    assert_eq!(v["kive-alert-version"], "v1");
    assert_eq!(v["kive-policy-name"], "cli");
    assert_eq!(v["metadata"]["path"], decoy.display().to_string());
    assert_eq!(v["metadata"]["mask"], 36);
    assert_eq!(v["process"]["tgid"], pid);
    assert_eq!(v["process"]["comm"], "cat");
    // the print loop reads the ring itself: a spare thread, no reader thread
    let pid = k.child.id().to_string();
    assert_eq!(
        (
            support::threads_named(&pid, "kive-ring-spare"),
            support::threads_named(&pid, "kive-ring")
        ),
        (1, 0),
        "kive run reads the ring in its print loop: a spare thread, no reader thread"
    );
    assert!(stop(k).success(), "clean exit on Ctrl-C");
}

#[test]
fn text_format_and_the_embedded_default_policy() {
    let k = spawn_private_tmp(&["run", "--format", "text"]);
    let log = wait_line(&k.stderr, "kive running", support::DEADLINE).join("\n");
    assert!(log.contains("armed=1"), "{log}");
    // cat in kive's mount namespace, where its /tmp is
    let (_, out) = support::run(
        Command::new("nsenter")
            .arg("-t")
            .arg(k.child.id().to_string())
            .args(["-m", "cat", "/tmp/kive-secret.txt"]),
    );
    assert!(out.status.success(), "{out:?}");
    let line = k.stdout.recv_timeout(support::DEADLINE).expect("alert");
    assert!(
        line.contains("policy=host-decoy path=/tmp/kive-secret.txt access=read"),
        "{line}"
    );
    assert!(line.contains("comm=cat"), "{line}");
    assert!(stop(k).success());
}

#[test]
fn a_closed_stdout_ends_kive_run_cleanly_like_head_does() {
    support::ensure_mounts();
    let d = support::world_dir();
    let decoy = d.path().join("decoy.txt");
    let policy = d.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: pipe, namespace: ops}}\nspec:\n  traps:\n  - path: {}\n    create: true\n    matchAny: [{{host: true}}]\n",
            decoy.display()
        ),
    )
    .expect("write policy");
    let mut child = piped(
        Command::new(env!("CARGO_BIN_EXE_kive"))
            .args(["run", "--tier", "tracepoint", "--policy"])
            .arg(&policy),
    )
    .spawn()
    .expect("kive starts");
    let stderr = lines(child.stderr.take().expect("stderr"));
    wait_line(&stderr, "kive running", support::DEADLINE);
    // `| head -1`: read one alert, then close the pipe
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    support::run(Command::new("cat").arg(&decoy));
    let mut first = String::new();
    out.read_line(&mut first).expect("the first alert");
    assert!(first.contains("\"kive-policy-name\":\"pipe\""), "{first}");
    drop(out);
    // the next alerts meet a closed pipe: kive stops by itself
    let deadline = Instant::now() + support::DEADLINE;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "kive kept running with its stdout closed"
        );
        support::run(Command::new("cat").arg(&decoy));
        std::thread::sleep(Duration::from_millis(50));
    };
    let log: Vec<String> = stderr.try_iter().collect();
    let log = log.join("\n");
    assert!(!log.contains("panicked"), "{log}");
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(log.contains("stdout closed: stopping"), "{log}");
}

#[test]
fn kive_run_raises_its_open_file_limit_to_the_hard_limit() {
    support::ensure_mounts();
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .expect("a finite hard limit");
    let d = support::world_dir();
    let policy = d.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: fds, namespace: ops}}\nspec:\n  traps:\n  - path: {}\n    create: true\n    matchAny: [{{host: true}}]\n",
            d.path().join("decoy.txt").display()
        ),
    )
    .expect("write policy");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kive"));
    cmd.args(["run", "--tier", "tracepoint", "--policy"])
        .arg(&policy)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("kive starts");
    let stderr = lines(child.stderr.take().expect("stderr"));
    let stdout = lines(child.stdout.take().expect("stdout"));
    let k = Kive {
        child,
        stdout,
        stderr,
    };
    let log = wait_line(&k.stderr, "kive running", support::DEADLINE).join("\n");
    assert!(
        log.contains(&format!("open-file limit raised from 256 to {hard}")),
        "{log}"
    );
    assert!(stop(k).success());
}

/// `kive check` on policies shaped like the ones clusters run (package
/// managers, credentials, service account tokens, FIM, allow-lists, shells,
/// droppers, database files, network and capability hardening, the node's
/// PKI, a default-deny posture): every enforceable rule accepted with what it
/// enforces, everything else named with its policy, rule and field; never a
/// crash.
#[test]
fn kive_check_on_real_world_kubearmor_policies_says_what_it_leaves_out() {
    // embedded: the binary also runs where the checkout is not (the VM)
    const POLICIES: [(&str, &str); 11] = [
        (
            "block-package-managers.yaml",
            include_str!("../../examples/kubearmor/real-world/block-package-managers.yaml"),
        ),
        (
            "default-deny-workload.yaml",
            include_str!("../../examples/kubearmor/real-world/default-deny-workload.yaml"),
        ),
        (
            "host-kubernetes-pki.yaml",
            include_str!("../../examples/kubearmor/real-world/host-kubernetes-pki.yaml"),
        ),
        (
            "mysql-data-owner.yaml",
            include_str!("../../examples/kubearmor/real-world/mysql-data-owner.yaml"),
        ),
        (
            "nginx-config-allow.yaml",
            include_str!("../../examples/kubearmor/real-world/nginx-config-allow.yaml"),
        ),
        (
            "no-shells.yaml",
            include_str!("../../examples/kubearmor/real-world/no-shells.yaml"),
        ),
        (
            "protect-credentials.yaml",
            include_str!("../../examples/kubearmor/real-world/protect-credentials.yaml"),
        ),
        (
            "raw-sockets-and-caps.yaml",
            include_str!("../../examples/kubearmor/real-world/raw-sockets-and-caps.yaml"),
        ),
        (
            "sa-token-audit.yaml",
            include_str!("../../examples/kubearmor/real-world/sa-token-audit.yaml"),
        ),
        (
            "system-binaries-write-protect.yaml",
            include_str!("../../examples/kubearmor/real-world/system-binaries-write-protect.yaml"),
        ),
        (
            "tmp-exec.yaml",
            include_str!("../../examples/kubearmor/real-world/tmp-exec.yaml"),
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<std::path::PathBuf> = POLICIES
        .iter()
        .map(|(name, text)| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write policy");
            p
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_kive"))
        .arg("check")
        .args(&files)
        .output()
        .expect("kive check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused rules make the exit status 1 (not a crash): {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("ok    "), 37, "every enforceable rule: {text}");
    assert_eq!(count("warn  "), 3, "{text}");
    assert_eq!(count("error "), 3, "{text}");
    for f in &files {
        let name = f.file_stem().and_then(|n| n.to_str()).expect("name");
        assert!(text.contains(name), "{name} is reported: {text}");
    }
    for want in [
        "ok    policy web/nginx-config-allow rule file.matchDirectories[0] (/etc/nginx/): 1 pod selector(s); block, opens, only from [/usr/sbin/nginx] allowed, every file in /etc/nginx/ and below",
        "ok    policy db/mysql-data-owner rule file.matchPaths[0] (/etc/mysql/my.cnf): 1 pod selector(s); block, opens, reads pass, the owner passes, severity 7",
        "ok    policy system-binaries-write-protect rule file.matchDirectories[2] (/usr/bin/): 2 pod selector(s); block, opens, reads pass",
        "ok    policy host-kubernetes-pki rule file.matchDirectories[0] (/etc/kubernetes/pki/): host (nodes labelled kubernetes.io/os=linux); block, opens, only from [/usr/bin/kubelet, /usr/local/bin/kube-apiserver] allowed",
        "ok    policy tmp-exec rule process.matchPatterns[0] (/tmp/**/xmrig*): 1 pod selector(s); block, executions, every file matching /tmp/**/xmrig*",
        "warn  policy web/raw-sockets-and-caps: section spec.network is outside kive's reach",
        "error policy web/no-shells rule process.matchPaths[4] (nc): field execname: \"nc\": an executable matched by name",
        "error policy shop/default-deny-workload rule file.matchDirectories[0] (/): field action: Allow without fromSource is a default-deny posture",
    ] {
        assert!(text.lines().any(|l| l.starts_with(want)), "missing {want:?} in:\n{text}");
    }
}

/// `kive check` on the KubeArmor examples: every rule accepted, each with
/// what it enforces, and the sections left out named.
#[test]
fn kive_check_says_what_each_kubearmor_rule_enforces_and_what_it_leaves_out() {
    // embedded: the binary also runs where the checkout is not (the VM)
    const EXAMPLES: [(&str, &str); 3] = [
        (
            "shop-secrets.yaml",
            include_str!("../../examples/kubearmor/shop-secrets.yaml"),
        ),
        (
            "cluster-audit.yaml",
            include_str!("../../examples/kubearmor/cluster-audit.yaml"),
        ),
        (
            "host-allow.yaml",
            include_str!("../../examples/kubearmor/host-allow.yaml"),
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kive"));
    cmd.arg("check");
    for (name, text) in EXAMPLES {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write example");
        cmd.arg(p);
    }
    let out = cmd.output().expect("kive check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok    policy shop/shop-secrets rule file.matchPaths[1] (/app/config/db.yaml): 1 pod selector(s); block, opens, reads pass, the owner passes, severity 8"),
        "{text}"
    );
    assert!(
        text.contains("rule process.matchPaths[0] (/bin/sh): 1 pod selector(s); block, executions, only from [/usr/local/bin/payments-api]"),
        "{text}"
    );
    assert!(
        text.contains("every file in /run/secrets/ and below (at most 1024)"),
        "{text}"
    );
    assert!(
        text.contains("only from [/usr/bin/kubelet] allowed"),
        "{text}"
    );
    for left_out in ["spec.network", "spec.capabilities", "spec.syscalls"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("warn") && l.contains(left_out)),
            "{left_out}: {text}"
        );
    }

    // a default-deny rule is refused, named, and the exit status says so
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path().join("deny.yaml");
    std::fs::write(
        &p,
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata: {name: deny, namespace: web}\nspec:\n  action: Allow\n  file:\n    matchPaths:\n    - path: /etc/app.conf\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_kive"))
        .arg("check")
        .arg(&p)
        .output()
        .expect("kive check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("error policy web/deny rule file.matchPaths[0] (/etc/app.conf): field action: Allow without fromSource"),
        "{text}"
    );
}
