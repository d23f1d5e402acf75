//! The mapping of each KubeArmor spec element onto kive's traps.

use std::collections::BTreeMap;

use crate::policy::compile::{Compiled, CompiledTrap, PathSet};
use crate::policy::load_str;
use crate::policy::model::TrapAction;
use crate::trap::wire as w;

fn load(yaml: &str) -> Compiled {
    load_str("ka.yaml", yaml)
}

fn one(yaml: &str) -> CompiledTrap {
    let c = load(yaml);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.traps.len(), 1, "{:?}", c.traps);
    (*c.traps[0]).clone()
}

const HEAD: &str = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata: {name: p, namespace: shop}\n";

fn policy(spec: &str) -> String {
    format!("{HEAD}spec:\n{spec}")
}

#[test]
fn a_file_match_path_is_a_block_trap_on_the_selected_pods() {
    let t = one(&policy(
        "  selector: {matchLabels: {app: web}}\n  file:\n    matchPaths:\n    - path: /etc/shadow\n",
    ));
    assert_eq!(t.path, "/etc/shadow");
    assert_eq!(t.action, TrapAction::Block, "KubeArmor's default action");
    assert!(!t.conditions.exec_only && t.conditions.bits() == 0);
    assert!(!t.target.host);
    assert_eq!(t.target.pods.len(), 1);
    assert_eq!(t.target.pods[0].namespace.as_deref(), Some("shop"));
    assert_eq!(
        t.target.pods[0].labels.get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!(t.policy_name, "p");
    assert_eq!(t.policy_namespace.as_deref(), Some("shop"));
    assert_eq!(t.info.severity, Some(1), "severity 1 by default");
    assert_eq!(
        t.origin.to_string(),
        "policy shop/p rule file.matchPaths[0] (/etc/shadow)"
    );
}

#[test]
fn process_rules_trap_executions_only() {
    let t = one(&policy(
        "  process:\n    matchPaths:\n    - path: /usr/bin/curl\n  action: Audit\n",
    ));
    assert!(t.conditions.exec_only);
    assert_eq!(t.action, TrapAction::Audit);
    assert_eq!(t.conditions.bits(), w::TRAP_F_EXEC_ONLY);
}

#[test]
fn read_only_owner_only_and_from_source_become_kernel_conditions() {
    let t = one(&policy(
        "  file:\n    matchPaths:\n    - path: /data/db\n      readOnly: true\n      ownerOnly: true\n      fromSource: [{path: /usr/bin/psql}]\n",
    ));
    assert!(t.conditions.read_only && t.conditions.owner_only);
    assert_eq!(t.conditions.sources, ["/usr/bin/psql"]);
    assert!(!t.conditions.sources_allow);
    assert_eq!(
        t.conditions.bits(),
        w::TRAP_F_READ_ONLY | w::TRAP_F_OWNER_ONLY | w::TRAP_F_SOURCES
    );
    let e = t.enforcement();
    assert!(
        e.contains("block") && e.contains("reads pass") && e.contains("only from [/usr/bin/psql]"),
        "{e}"
    );
}

#[test]
fn allow_with_from_source_lets_only_the_sources_through() {
    let t = one(&policy(
        "  action: Allow\n  file:\n    matchPaths:\n    - path: /secret\n      fromSource: [{path: /app/server}]\n",
    ));
    assert!(t.conditions.sources_allow);
    assert_eq!(
        t.action,
        TrapAction::Block,
        "every other executable is blocked"
    );
    assert_eq!(t.conditions.bits(), w::TRAP_F_SOURCES_ALLOW);
}

#[test]
fn allow_without_from_source_is_refused_naming_policy_rule_and_field() {
    let c = load(&policy(
        "  action: Allow\n  file:\n    matchPaths:\n    - path: /secret\n    - path: /other\n      action: Audit\n",
    ));
    assert_eq!(c.traps.len(), 1, "the Audit override still applies");
    assert_eq!(c.errors.len(), 1);
    let msg = c.errors[0].to_string();
    assert!(
        msg.contains("policy shop/p rule file.matchPaths[0] (/secret)")
            && msg.contains("field action")
            && msg.contains("default-deny"),
        "{msg}"
    );
}

#[test]
fn rules_override_action_severity_tags_and_message() {
    let c = load(&policy(
        "  severity: 5\n  tags: [PCI]\n  message: policy message\n  action: Audit\n  file:\n    matchPaths:\n    - path: /a\n    - path: /b\n      action: Block\n      severity: 9\n      tags: [MITRE, T1003]\n      message: rule message\n",
    ));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let (a, b) = (&c.traps[0], &c.traps[1]);
    assert_eq!(
        (
            a.action,
            a.info.severity,
            a.info.tags.clone(),
            a.info.message.as_str()
        ),
        (
            TrapAction::Audit,
            Some(5),
            vec!["PCI".to_string()],
            "policy message"
        )
    );
    assert_eq!(
        (
            b.action,
            b.info.severity,
            b.info.tags.clone(),
            b.info.message.as_str()
        ),
        (
            TrapAction::Block,
            Some(9),
            vec!["MITRE".to_string(), "T1003".to_string()],
            "rule message"
        )
    );
    assert_eq!(
        b.metadata.get("policy-severity").map(String::as_str),
        Some("9")
    );
    assert_eq!(
        b.metadata.get("policy-tags").map(String::as_str),
        Some("MITRE,T1003")
    );
    assert_eq!(
        b.metadata.get("policy-message").map(String::as_str),
        Some("rule message")
    );
}

#[test]
fn a_severity_out_of_range_is_an_error_naming_it() {
    let c = load(&policy(
        "  severity: 11\n  file:\n    matchPaths:\n    - path: /a\n",
    ));
    assert!(c.traps.is_empty());
    let msg = c.errors[0].to_string();
    assert!(
        msg.contains("field spec.severity") && msg.contains("11"),
        "{msg}"
    );
}

#[test]
fn directories_patterns_and_globbed_paths_become_path_sets() {
    let c = load(&policy(
        "  file:\n    matchDirectories:\n    - dir: /etc/ssl/\n      recursive: true\n      readOnly: true\n    - dir: /run/secrets/\n    matchPatterns:\n    - pattern: /var/log/*.log\n    matchPaths:\n    - path: /home/*/.ssh/id_rsa\n",
    ));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let sets: Vec<PathSet> = c
        .traps
        .iter()
        .map(|t| t.path_set.clone().expect("a path set").0)
        .collect();
    assert_eq!(
        sets,
        [
            PathSet::Pattern("/home/*/.ssh/id_rsa".into()),
            PathSet::Directory {
                dir: "/etc/ssl/".into(),
                recursive: true
            },
            PathSet::Directory {
                dir: "/run/secrets/".into(),
                recursive: false
            },
            PathSet::Pattern("/var/log/*.log".into()),
        ]
    );
    assert!(c.traps[1].conditions.read_only);
}

#[test]
fn cluster_policies_select_namespaces_in_and_not_in() {
    let cluster = |expr: &str| {
        one(&format!(
            "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorClusterPolicy\nmetadata: {{name: c}}\nspec:\n  selector:\n    matchExpressions: {expr}\n  file:\n    matchPaths: [{{path: /etc/passwd}}]\n"
        ))
    };
    let t = cluster("[{key: namespace, operator: In, values: [a, b]}]");
    let ns: Vec<_> = t.target.pods.iter().map(|p| p.namespace.clone()).collect();
    assert_eq!(ns, [Some("a".to_string()), Some("b".to_string())]);
    assert_eq!(t.policy_namespace, None);
    let t = cluster("[{key: namespace, operator: NotIn, values: [kube-system]}]");
    assert_eq!(t.target.pods.len(), 1);
    assert_eq!(t.target.pods[0].namespace, None);
    assert_eq!(t.target.pods[0].not_namespaces, ["kube-system"]);
    let t = cluster("[]");
    assert_eq!(
        t.target.pods[0].namespace, None,
        "no selector: every namespace"
    );
    let c = load(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorClusterPolicy\nmetadata: {name: c}\nspec:\n  selector:\n    matchExpressions: [{key: label, operator: In, values: [x]}]\n  file:\n    matchPaths: [{path: /etc/passwd}]\n",
    );
    let msg = c.errors[0].to_string();
    assert!(
        msg.contains("spec.selector.matchExpressions[0].key"),
        "{msg}"
    );
}

#[test]
fn host_policies_target_the_node() {
    let c = load(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata: {name: h}\nspec:\n  nodeSelector: {matchLabels: {kubernetes.io/hostname: n1}}\n  process:\n    matchPaths: [{path: /usr/bin/nc}]\n  action: Audit\n",
    );
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let t = &c.traps[0].target;
    assert!(t.host && t.pods.is_empty());
    let labels = |v: &str| BTreeMap::from([("kubernetes.io/hostname".to_string(), v.to_string())]);
    assert_eq!(t.node_labels, labels("n1"), "nodeSelector.matchLabels kept");
    assert!(t.host_applies(Some(&labels("n1"))), "the selected node");
    assert!(!t.host_applies(Some(&labels("n2"))), "another node");
    assert!(!t.host_applies(None), "a node whose labels are unknown");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = load(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata: {name: h}\nspec:\n  nodeSelector: {matchExpressions: [{key: a, operator: In, values: [b]}]}\n  file:\n    matchPaths: [{path: /etc/x}]\n",
    );
    let msg = c
        .errors
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        msg.contains("field spec.nodeSelector.matchExpressions: not supported"),
        "{msg}"
    );
    assert!(c.traps.is_empty());
}

#[test]
fn network_capabilities_and_syscalls_are_warned_about_and_the_rest_applies() {
    let c = load(&policy(
        "  network:\n    matchProtocols: [{protocol: raw}]\n  capabilities:\n    matchCapabilities: [{capability: net_raw}]\n  syscalls:\n    matchSyscalls: [{syscall: [unlink]}]\n  file:\n    matchPaths: [{path: /a}]\n",
    ));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.traps.len(), 1);
    for section in ["spec.network", "spec.capabilities", "spec.syscalls"] {
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains(section) && w.contains("outside kive's reach")),
            "{section}: {:?}",
            c.warnings
        );
    }
}

#[test]
fn broken_rules_are_named_and_leave_the_others() {
    let c = load(&policy(
        "  file:\n    matchPaths:\n    - path: relative\n    - path: /ok\n    - path: /x\n      readonly: true\n    - path: /y\n      fromSource: [{dir: /bin/}]\n    - path: /z\n      fromSource: [{path: bash}]\n",
    ));
    assert_eq!(c.traps.len(), 1, "{:?}", c.errors);
    assert_eq!(c.traps[0].path, "/ok");
    let msgs: Vec<String> = c.errors.iter().map(ToString::to_string).collect();
    let want = [
        "rule file.matchPaths[0] (relative): field path",
        "rule file.matchPaths[2] (/x): field",
        "rule file.matchPaths[3] (/y): field fromSource[0].dir",
        "rule file.matchPaths[4] (/z): field fromSource[0].path",
    ];
    for (m, w) in msgs.iter().zip(want) {
        assert!(m.contains(w), "{m} should contain {w}");
    }
    assert!(msgs[1].contains("readonly"), "{}", msgs[1]);
    assert_eq!(msgs.len(), 4, "{msgs:?}");
}

#[test]
fn bad_envelopes_are_errors_and_kivepolicies_still_load_alongside() {
    let c = load(&format!(
        "apiVersion: security.kubearmor.com/v2\nkind: KubeArmorPolicy\nmetadata: {{name: x}}\n---\napiVersion: security.kubearmor.com/v1\nkind: KubeArmorThing\nmetadata: {{name: x}}\n---\napiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata: {{}}\n---\n{}---\napiVersion: kivebpf.san7o.github.io/v1\nkind: KivePolicy\nmetadata: {{name: k}}\nspec:\n  traps: [{{path: /k, matchAny: [{{host: true}}]}}]\n",
        policy("  file:\n    matchPaths: [{path: /a}]\n")
    ));
    let msgs: Vec<String> = c.errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs[0].contains("ka.yaml#0: field apiVersion"),
        "{}",
        msgs[0]
    );
    assert!(msgs[1].contains("ka.yaml#1: field kind"), "{}", msgs[1]);
    assert!(
        msgs[2].contains("ka.yaml#2: field metadata.name"),
        "{}",
        msgs[2]
    );
    let paths: Vec<&str> = c.traps.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/k"]);
}

fn example(name: &str) -> Compiled {
    let path = format!(
        "{}/../examples/kubearmor/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    load_str(name, &text)
}

/// The shipped examples load without errors and, together, use every
/// file and process element of the spec.
#[test]
fn the_shipped_examples_load_and_cover_every_element() {
    let all: Vec<Compiled> = ["shop-secrets.yaml", "cluster-audit.yaml", "host-allow.yaml"]
        .into_iter()
        .map(example)
        .collect();
    for c in &all {
        assert!(c.errors.is_empty(), "{:?}", c.errors);
    }
    let traps: Vec<&CompiledTrap> = all
        .iter()
        .flat_map(|c| c.traps.iter().map(|t| &**t))
        .collect();
    let has = |what: &str, f: &dyn Fn(&CompiledTrap) -> bool| {
        assert!(traps.iter().any(|t| f(t)), "no example uses {what}");
    };
    has("process rules", &|t| t.conditions.exec_only);
    has("file rules", &|t| !t.conditions.exec_only);
    has("readOnly", &|t| t.conditions.read_only);
    has("ownerOnly", &|t| t.conditions.owner_only);
    has("fromSource", &|t| {
        !t.conditions.sources.is_empty() && !t.conditions.sources_allow
    });
    has("Allow + fromSource", &|t| t.conditions.sources_allow);
    has("Audit", &|t| t.action == TrapAction::Audit);
    has("Block", &|t| {
        t.action == TrapAction::Block && !t.conditions.sources_allow
    });
    has("recursive directories", &|t| {
        matches!(
            t.path_set,
            Some((
                PathSet::Directory {
                    recursive: true,
                    ..
                },
                _
            ))
        )
    });
    has("flat directories", &|t| {
        matches!(
            t.path_set,
            Some((
                PathSet::Directory {
                    recursive: false,
                    ..
                },
                _
            ))
        )
    });
    has("patterns", &|t| {
        matches!(t.path_set, Some((PathSet::Pattern(_), _)))
    });
    has("a rule's own severity", &|t| t.info.severity == Some(10));
    has("tags", &|t| !t.info.tags.is_empty());
    has("message", &|t| !t.info.message.is_empty());
    has("NotIn", &|t| {
        t.target.pods.iter().any(|p| !p.not_namespaces.is_empty())
    });
    has("In", &|t| {
        t.policy_namespace.is_none() && t.target.pods.iter().any(|p| p.namespace.is_some())
    });
    has("matchLabels", &|t| {
        t.target.pods.iter().any(|p| !p.labels.is_empty())
    });
    has("host policies", &|t| t.target.host);
    has("nodeSelector", &|t| !t.target.node_labels.is_empty());
    let warnings: Vec<&String> = all.iter().flat_map(|c| &c.warnings).collect();
    for section in ["spec.network", "spec.capabilities", "spec.syscalls"] {
        assert!(
            warnings.iter().any(|w| w.contains(section)),
            "{section} warned: {warnings:?}"
        );
    }
}
