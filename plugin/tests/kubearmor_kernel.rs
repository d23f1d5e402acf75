//! KubeArmor host policies on this machine's kernel: readOnly, ownerOnly,
//! fromSource (by inode) and process rules are decided in the kernel on a
//! hit; an access that satisfies the rule produces no event at all.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kive::alert::KiveAlert;
use kive::policy::{load_str, CompiledTrap};
use kive::runtime::Runtime;
use kive::trap::TierChoice;
use support::exec::{cat_as, copy_tool, tool_at};
use support::{alerts, alerts_until, quiet, run, world_dir};

fn host_policy(spec: &str) -> Vec<Arc<CompiledTrap>> {
    let text = format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata: {{name: ka}}\nspec:\n  severity: 7\n  tags: [test, kive]\n  message: ka rule\n{spec}"
    );
    let c = load_str("kubearmor-test", &text);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(!c.traps.is_empty(), "no trap in {text}");
    c.traps
}

fn start(traps: &[Arc<CompiledTrap>]) -> Runtime {
    support::runtime::start(&support::runtime::config(TierChoice::Tracepoint), traps)
}

fn file(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, "content\n").expect("write");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
    f
}

fn sh(script: &str) {
    run(Command::new("sh").arg("-c").arg(script));
}

fn comms(got: &[KiveAlert]) -> Vec<String> {
    got.iter().map(|a| a.process.comm.clone()).collect()
}

#[test]
fn read_only_lets_reads_pass_and_reports_writes() {
    let d = world_dir();
    let f = file(d.path(), "config", 0o644);
    let rt = start(&host_policy(&format!(
        "  action: Audit\n  file:\n    matchPaths:\n    - path: {}\n      readOnly: true\n",
        f.display()
    )));
    run(Command::new("cat").arg(&f));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "a read of a readOnly file is silent"
    );
    assert_eq!(
        rt.metrics().kernel.hits,
        0,
        "decided in the kernel: no event"
    );
    sh(&format!("echo more >> {}", f.display()));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_ne!(
        got[0].metadata.mask & 2,
        0,
        "a write: {}",
        got[0].metadata.mask
    );
    assert_eq!(got[0].policy_name, "ka");
    assert_eq!(got[0].policy_severity, Some(7));
    assert_eq!(got[0].policy_tags, ["test", "kive"]);
    assert_eq!(got[0].policy_message, "ka rule");
    let json = got[0].to_json();
    assert!(
        json.contains(r#""kive-policy-severity":7"#)
            && json.contains(r#""kive-policy-message":"ka rule""#),
        "{json}"
    );
}

#[test]
fn owner_only_lets_the_owner_pass_and_reports_everyone_else() {
    let d = world_dir();
    let f = file(d.path(), "owned", 0o644);
    std::os::unix::fs::chown(&f, Some(4321), Some(4321)).expect("chown");
    let rt = start(&host_policy(&format!(
        "  action: Audit\n  file:\n    matchPaths:\n    - path: {}\n      ownerOnly: true\n",
        f.display()
    )));
    run(&mut cat_as(4321, &f));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "the owner's read is silent"
    );
    run(Command::new("cat").arg(&f));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "root is not the owner: {got:#?}");
    assert_eq!(got[0].process.uid, 0);
}

/// `Allow` + `fromSource`: only the listed executable may open the file;
/// it is known by its inode, not its name.
#[test]
fn from_source_is_the_executables_inode_not_its_name() {
    let d = world_dir();
    let f = file(d.path(), "secret", 0o644);
    let allowed = d.path().join("reader");
    copy_tool("/usr/bin/cat", &allowed);
    let rt = start(&host_policy(&format!(
        "  action: Allow\n  file:\n    matchPaths:\n    - path: {}\n      fromSource: [{{path: {}}}]\n",
        f.display(),
        allowed.display()
    )));
    run(tool_at(&allowed, "cat").arg(&f));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "the allowed source reads silently"
    );

    // the same executable under another name (a hard link): still allowed
    let alias = d.path().join("another-name");
    std::fs::hard_link(&allowed, &alias).expect("link");
    run(tool_at(&alias, "cat").arg(&f));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "the allowed inode under another name is the same source"
    );

    // another executable: reported (would be blocked on the LSM tiers)
    run(Command::new("/usr/bin/cat").arg(&f));
    let got = alerts_until(&rt, 1);
    assert_eq!(comms(&got), ["cat"], "{got:#?}");
    assert_eq!(
        got[0].metadata.action, "audit",
        "the tracepoint tier cannot block"
    );

    // another binary renamed to the allowed name: not the source
    let impostor = d.path().join("impostor");
    copy_tool("/usr/bin/head", &impostor);
    std::fs::rename(&impostor, &allowed).expect("rename over the allowed name");
    rt.rescan_now();
    run(tool_at(&allowed, "head").arg(&f));
    let got = alerts_until(&rt, 1);
    assert_eq!(
        got.len(),
        1,
        "a binary renamed to the allowed name is reported: {got:#?}"
    );
    assert_eq!(got[0].process.binary, allowed.display().to_string());
}

/// `Block` + `fromSource`: the rule applies to the listed executables only.
#[test]
fn from_source_with_block_applies_to_the_listed_sources_only() {
    let d = world_dir();
    let f = file(d.path(), "data", 0o644);
    let listed = d.path().join("listed-cat");
    copy_tool("/usr/bin/cat", &listed);
    let rt = start(&host_policy(&format!(
        "  file:\n    matchPaths:\n    - path: {}\n      fromSource: [{{path: {}}}]\n",
        f.display(),
        listed.display()
    )));
    run(Command::new("/usr/bin/cat").arg(&f));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "an unlisted executable passes"
    );
    run(tool_at(&listed, "cat").arg(&f));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "the listed source is reported: {got:#?}");
}

#[test]
fn process_rules_report_executions_not_reads() {
    let d = world_dir();
    let tool = d.path().join("tool");
    copy_tool("/usr/bin/true", &tool);
    let rt = start(&host_policy(&format!(
        "  action: Audit\n  process:\n    matchPaths:\n    - path: {}\n",
        tool.display()
    )));
    run(Command::new("cat").arg(&tool));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "reading an executable is not executing it"
    );
    run(&mut tool_at(&tool, "true"));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_ne!(
        got[0].metadata.mask & 1,
        0,
        "an exec: {}",
        got[0].metadata.mask
    );
}

/// `matchDirectories` and `matchPatterns`: every file of the set is armed,
/// a file created later is armed by the next rescan, a deleted one dropped.
#[test]
fn directory_and_pattern_rules_arm_their_files_and_later_ones() {
    let d = world_dir();
    let conf = d.path().join("conf");
    std::fs::create_dir_all(conf.join("sub")).expect("mkdir");
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let a = file(&conf, "a.conf", 0o644);
    let b = file(&conf.join("sub"), "b.conf", 0o644);
    let l = file(&logs, "app.log", 0o644);
    let other = file(&logs, "app.txt", 0o644);
    let rt = start(&host_policy(&format!(
        "  action: Audit\n  file:\n    matchDirectories:\n    - dir: {}/\n      recursive: true\n    matchPatterns:\n    - pattern: {}/*.log\n",
        conf.display(),
        logs.display()
    )));
    assert_eq!(rt.metrics().armed, 3, "a.conf, sub/b.conf and app.log");
    for f in [&a, &b, &l] {
        run(Command::new("cat").arg(f));
        let got = alerts_until(&rt, 1);
        assert_eq!(got.len(), 1, "{}: {got:#?}", f.display());
        assert_eq!(got[0].metadata.path, f.display().to_string());
    }
    run(Command::new("cat").arg(&other));
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "app.txt does not match *.log"
    );

    let later = file(&conf.join("sub"), "later.conf", 0o644);
    rt.rescan_now();
    assert_eq!(rt.metrics().armed, 4, "the new file is armed by the rescan");
    run(Command::new("cat").arg(&later));
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].metadata.path, later.display().to_string());

    std::fs::remove_file(&later).expect("rm");
    rt.rescan_now();
    assert_eq!(rt.metrics().armed, 3, "a deleted file leaves the set");
}

/// The same building blocks as KivePolicy fields: a `directory` trap with
/// `readOnly` arms every file of the directory (and one created later): a
/// read passes, a write is reported; a trap with `allowFrom` lets the listed
/// executable (by inode) through and reports another one.
#[test]
fn kivepolicy_directory_read_only_and_allow_from_fields() {
    let d = world_dir();
    let dir = d.path().join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let a = file(&dir, "a", 0o644);
    let journal = file(d.path(), "journal", 0o644);
    let writer = d.path().join("writer-sh");
    copy_tool("/bin/sh", &writer);
    let text = format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: kp, namespace: test}}\nspec:\n  traps:\n  - path: {}\n    directory: true\n    readOnly: true\n    matchAny: [{{host: true}}]\n  - path: {}\n    allowFrom: [{}]\n    matchAny: [{{host: true}}]\n",
        dir.display(),
        journal.display(),
        writer.display()
    );
    let c = load_str("kivepolicy-fields", &text);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let rt = start(&c.traps);
    assert_eq!(
        rt.metrics().armed,
        2,
        "the directory's one file and the journal"
    );

    let append = |shell: &Path, f: &Path| {
        run(tool_at(shell, "sh")
            .arg("-c")
            .arg(format!("echo x >> {}", f.display())));
    };
    run(Command::new("cat").arg(&a));
    append(&writer, &journal);
    assert!(
        alerts(&rt, quiet()).is_empty(),
        "a read of a readOnly file and the allowed writer are silent"
    );
    append(Path::new("/bin/sh"), &a);
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "a write to a readOnly file: {got:#?}");
    assert_eq!(got[0].policy_name, "kp");
    assert_eq!(got[0].metadata.path, a.display().to_string());
    assert_ne!(
        got[0].metadata.mask & 2,
        0,
        "a write: {}",
        got[0].metadata.mask
    );
    append(Path::new("/bin/sh"), &journal);
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "another executable: {got:#?}");
    assert_eq!(got[0].metadata.path, journal.display().to_string());

    let later = file(&dir, "later", 0o644);
    rt.rescan_now();
    assert_eq!(rt.metrics().armed, 3, "a file created later is armed");
    append(Path::new("/bin/sh"), &later);
    let got = alerts_until(&rt, 1);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].metadata.path, later.display().to_string());
}
