use super::compile::DIRECTORY_CAP;
use super::*;

/// Sample-like policies kept in the repo (`test_files/policies/`): the
/// kivebpf v1 and v2alpha1 shapes, so parsing is covered without `../shared`
/// (the peer's own samples are checked by `make test-shared`).
fn repo_samples() -> Vec<(String, Compiled)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../test_files/policies");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("sample readable");
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let c = load_str(&path.display().to_string(), &text);
            (name, c)
        })
        .collect()
}

#[test]
fn every_repo_sample_policy_is_accepted_unchanged() {
    let samples = repo_samples();
    assert_eq!(samples.len(), 8, "test_files/policies holds eight samples");
    for (name, c) in &samples {
        assert!(c.errors.is_empty(), "{name}: {:?}", c.errors);
        assert_eq!(c.traps.len(), 1, "{name}: one trap");
    }
    let get = |n: &str| {
        let (_, c) = samples
            .iter()
            .find(|(name, _)| name == n)
            .unwrap_or_else(|| panic!("{n} missing"));
        std::sync::Arc::clone(&c.traps[0])
    };
    let v1 = get("v1-alert-version.yaml");
    assert_eq!(v1.alert_version, "v1");
    assert_eq!(
        (v1.path.as_str(), v1.create, v1.mode),
        ("/decoy-v1.txt", true, 444)
    );
    assert_eq!(v1.target.pods.len(), 1);
    assert_eq!(v1.target.pods[0].pod.as_deref(), Some("web-pod"));
    assert_eq!(
        v1.target.pods[0]
            .labels
            .get("security-level")
            .map(String::as_str),
        Some("high")
    );
    assert_eq!(
        get("v2alpha1-callback.yaml").callback.as_deref(),
        Some("http://collector.kive-tests.svc.cluster.local:9376/ingest")
    );
    assert_eq!(
        get("v2alpha1-metadata.yaml")
            .metadata
            .get("team")
            .map(String::as_str),
        Some("payments")
    );
    let ns = get("v2alpha1-namespace.yaml");
    assert!(!ns.create, "an existing file, no decoy");
    assert_eq!(ns.target.pods[0].namespace.as_deref(), Some("default"));
    assert!(get("v2alpha1-no-selector.yaml").create);
}

#[test]
fn the_usage_guide_sample_reads_with_its_metadata_map() {
    let text = r#"
apiVersion: kivebpf.san7o.github.io/v1
kind: KivePolicy
metadata:
  labels:
    app.kubernetes.io/name: kivebpf
  finalizers:
    - kivebpf.san7o.github.io/finalizer
  name: kive-sample-policy
  namespace: kivebpf-system
spec:
  alertVersion: v1
  traps:
    - path: /secret.txt
      create: true
      mode: 444
      matchAny:
      - pod: nginx-pod
        namespace: default
        matchLabels:
          security-level: high
      metadata:
          severity: medium
"#;
    let c = load_str("guide.yaml", text);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let t = &c.traps[0];
    assert_eq!(t.policy_name, "kive-sample-policy");
    assert_eq!(t.path, "/secret.txt");
    assert!(t.create);
    assert_eq!(t.mode, 444);
    assert_eq!(
        t.metadata.get("severity").map(String::as_str),
        Some("medium")
    );
    assert!(!t.target.host);
    assert_eq!(t.target.pods.len(), 1);
    assert_eq!(t.target.pods[0].pod.as_deref(), Some("nginx-pod"));
    // 444 is decimal (0o674): armed, with a warning naming policy and trap
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(
        t.warnings[0].contains("kivebpf-system/kive-sample-policy trap 0")
            && t.warnings[0].contains("mode"),
        "{}",
        t.warnings[0]
    );
}

fn policy(traps: &str) -> String {
    format!(
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n  traps:\n{traps}"
    )
}

#[test]
fn octal_modes_follow_kubernetes_yaml() {
    for (written, want) in [("0444", 0o444), ("0o600", 0o600), ("420", 420), ("0", 0)] {
        let c = load_str(
            "m.yaml",
            &policy(&format!(
                "  - path: /a\n    mode: {written}\n    matchAny: [{{host: true}}]\n"
            )),
        );
        assert!(c.errors.is_empty(), "{written}: {:?}", c.errors);
        assert_eq!(c.traps[0].mode, want, "{written}");
        assert!(
            c.traps[0].warnings.is_empty(),
            "{written}: {:?}",
            c.traps[0].warnings
        );
    }
}

#[test]
fn one_broken_trap_leaves_the_others_armed_and_names_trap_and_field() {
    let text = policy(concat!(
        "  - path: /good\n    matchAny: [{host: true}]\n",
        "  - path: /typo\n    matchAny: [{host: true}]\n    colour: red\n",
        "  - path: relative.txt\n    matchAny: [{host: true}]\n",
        "  - path: /re\n    matchAny: [{containerName: 'regex:(open'}]\n",
        "  - path: /mixed\n    matchAny: [{host: true, namespace: default}]\n",
        "  - path: /badtype\n    create: maybe\n",
        "  - path: /also-good\n    matchAny: [{pod: web}]\n",
    ));
    let c = load_str("mixed.yaml", &text);
    let paths: Vec<_> = c.traps.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths, ["/good", "/also-good"]);
    let msgs: Vec<String> = c.errors.iter().map(ToString::to_string).collect();
    let expect = [
        ("trap 1 (/typo)", "field colour"),
        ("trap 2 (relative.txt)", "field path"),
        ("trap 3 (/re)", "field matchAny[0].containerName"),
        ("trap 4 (/mixed)", "field matchAny[0].host"),
        ("trap 5 (/badtype)", "field create"),
    ];
    assert_eq!(msgs.len(), expect.len(), "{msgs:#?}");
    for (msg, (trap, field)) in msgs.iter().zip(expect) {
        assert!(msg.starts_with("policy ns/p "), "{msg}");
        assert!(
            msg.contains(trap) && msg.contains(field),
            "{msg} lacks {trap} / {field}"
        );
    }
}

#[test]
fn documents_are_checked_one_by_one() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{}",
        policy("  - path: /one\n    matchAny: [{host: true}]\n"),
        policy("  - path: /two\n    matchAny: [{host: true}]\n").replace("name: p", "name: q"),
    );
    let c = load_str("multi.yaml", &text);
    assert_eq!(c.traps.len(), 2);
    assert_eq!(c.errors.len(), 1);
    let msg = c.errors[0].to_string();
    assert!(msg.starts_with("multi.yaml#1: field apiVersion"), "{msg}");
}

#[test]
fn yaml_syntax_errors_name_the_document() {
    let c = load_str("broken.yaml", "apiVersion: [unclosed\n");
    assert_eq!(c.errors.len(), 1);
    let msg = c.errors[0].to_string();
    assert!(msg.starts_with("broken.yaml#0: yaml:"), "{msg}");
}

#[test]
fn unknown_spec_fields_are_rejected() {
    let text = policy("  - path: /a\n").replace("spec:\n", "spec:\n  trapz: []\n");
    let c = load_str("s.yaml", &text);
    assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
    assert!(c.errors[0].to_string().contains("trapz"), "{}", c.errors[0]);
}

#[test]
fn empty_match_any_matches_nothing_with_a_warning() {
    let c = load_str("e.yaml", &policy("  - path: /test.txt\n    create: true\n"));
    let t = &c.traps[0];
    assert!(!t.target.host && t.target.pods.is_empty());
    assert!(t.warnings[0].contains("matchAny"), "{:?}", t.warnings);
}

#[test]
fn action_block_is_an_additive_field() {
    let c = load_str(
        "b.yaml",
        &policy("  - path: /a\n    action: block\n    matchAny: [{host: true}]\n"),
    );
    assert_eq!(c.traps[0].action, TrapAction::Block);
    let c = load_str(
        "b.yaml",
        &policy("  - path: /a\n    action: deny\n    matchAny: [{host: true}]\n"),
    );
    assert!(
        c.errors[0].to_string().contains("field action"),
        "{}",
        c.errors[0]
    );
}

#[test]
fn metadata_as_a_plain_string_is_kept() {
    let c = load_str(
        "m.yaml",
        &policy("  - path: /a\n    metadata: important\n    matchAny: [{host: true}]\n"),
    );
    assert_eq!(
        c.traps[0].metadata.get("metadata").map(String::as_str),
        Some("important")
    );
}

fn one_trap(extra: &str) -> Compiled {
    load_str(
        "t",
        &format!(
            "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n  traps:\n  - path: /srv/data\n    matchAny: [{{host: true}}]\n{extra}"
        ),
    )
}

#[test]
fn additive_conditions_map_onto_the_kubearmor_building_blocks() {
    use crate::trap::wire::{
        TRAP_F_OWNER_ONLY, TRAP_F_READ_ONLY, TRAP_F_SOURCES, TRAP_F_SOURCES_ALLOW,
    };
    let c = one_trap("    readOnly: true\n    ownerOnly: true\n    fromSource: [/usr/bin/cat]\n");
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let t = &c.traps[0];
    assert_eq!(
        t.conditions.bits(),
        TRAP_F_READ_ONLY | TRAP_F_OWNER_ONLY | TRAP_F_SOURCES
    );
    assert_eq!(t.conditions.sources, ["/usr/bin/cat"]);
    assert!(t.path_set.is_none());
    let c = one_trap("    allowFrom: [/usr/bin/backup]\n    action: block\n");
    let t = &c.traps[0];
    assert_eq!(t.conditions.bits(), TRAP_F_SOURCES_ALLOW);
    assert_eq!(
        t.enforcement(),
        "block, opens, only from [/usr/bin/backup] allowed"
    );
    // absent fields: no condition, and the trap's identity is unchanged
    let plain = one_trap("");
    assert_eq!(plain.traps[0].conditions.bits(), 0);
    assert!(!plain.traps[0].fingerprint.contains("readOnly"));
}

#[test]
fn a_directory_trap_is_the_set_of_its_files() {
    let c = one_trap("    directory: true\n    recursive: true\n");
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(
        c.traps[0].path_set,
        Some((
            PathSet::Directory {
                dir: "/srv/data".into(),
                recursive: true
            },
            DIRECTORY_CAP
        ))
    );
    let slash = load_str(
        "t",
        "apiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {name: p}\nspec:\n  traps:\n  - path: /srv/data/\n    directory: true\n    matchAny: [{host: true}]\n",
    );
    assert!(slash.errors.is_empty(), "{:?}", slash.errors);
    assert!(matches!(
        &slash.traps[0].path_set,
        Some((PathSet::Directory { dir, recursive: false }, _)) if dir == "/srv/data"
    ));
}

#[test]
fn bad_additive_fields_name_policy_trap_and_field() {
    for (extra, field, words) in [
        (
            "    fromSource: [/a]\n    allowFrom: [/b]\n",
            "allowFrom",
            "not both",
        ),
        ("    fromSource: [cat]\n", "fromSource[0]", "absolute path"),
        (
            "    allowFrom: [/ok, rel]\n",
            "allowFrom[1]",
            "absolute path",
        ),
        ("    recursive: true\n", "recursive", "directory: true"),
        (
            "    directory: true\n    create: true\n",
            "create",
            "creates none",
        ),
        ("    readOnly: yes-please\n", "readOnly", ""),
    ] {
        let c = one_trap(extra);
        assert!(c.traps.is_empty(), "{extra}: rejected");
        let msg = c
            .errors
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            msg.contains("policy ns/p trap 0") && msg.contains(field) && msg.contains(words),
            "{extra}: {msg}"
        );
    }
}

#[test]
fn the_conditions_example_loads_with_its_conditions() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/kivepolicy-conditions.yaml"
    );
    let text = std::fs::read_to_string(path).expect("example readable");
    let c = load_str(path, &text);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let e: Vec<String> = c.traps.iter().map(|t| t.enforcement()).collect();
    assert_eq!(
        e,
        [
            "block, opens, reads pass, every file in /etc/nginx and below (at most 1024)",
            "audit, opens, the owner passes, only from [/usr/local/bin/backup] allowed"
        ]
    );
}
