//! The extractor of each field and the field table (order = the README's
//! order).

use anyhow::Error;
use falco_plugin::extract::{field, ExtractFieldInfo, ExtractRequest};

use std::ffi::{CStr, CString};

use super::{
    cstring, escaped, foreign, joined, loss, num, numbers, pairs, process_flag, short_container_id,
    text, with,
};
use crate::alert::kive_alert::{META_MESSAGE, META_SEVERITY, META_TAGS};
use crate::alert::ProcessFlags;
use crate::falco::payload::Slot;
use crate::falco::KivePlugin;

impl KivePlugin {
    fn inode(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::inode)
    }

    fn mask(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::mask)
    }

    fn open_flags(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::open_flags)
    }

    fn cgroup_id(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::cgroup_id)
    }

    fn pid(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::pid)
    }

    fn tgid(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::tgid)
    }

    fn ppid(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::ppid)
    }

    fn suppressed(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::suppressed)
    }

    fn vpid(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::vpid)
    }

    fn loginuid(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::loginuid)
    }

    fn uid(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::uid)
    }

    fn gid(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        num(req, numbers::gid)
    }

    fn access(&mut self, req: ExtractRequest<Self>) -> Result<Option<CString>, Error> {
        with(req, |_, d| numbers::access(d.numbers()).map(CString::from))
    }

    fn policy_severity(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        with(req, |data, d| {
            d.map_get(data, Slot::CustomMetadata, META_SEVERITY.as_bytes())
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        })
    }

    fn policy_tags(&mut self, req: ExtractRequest<Self>) -> Result<Option<CString>, Error> {
        with(req, |data, d| {
            d.map_get(data, Slot::CustomMetadata, META_TAGS.as_bytes())
                .map(escaped)
        })
    }

    fn policy_message(&mut self, req: ExtractRequest<Self>) -> Result<Option<CString>, Error> {
        with(req, |data, d| {
            d.map_get(data, Slot::CustomMetadata, META_MESSAGE.as_bytes())
                .map(escaped)
        })
    }

    fn container_shortid(&mut self, req: ExtractRequest<Self>) -> Result<Option<CString>, Error> {
        with(req, |data, d| {
            d.text(data, Slot::ContainerId)
                .and_then(short_container_id)
                .map(cstring)
        })
    }

    fn policy_namespace(&mut self, req: ExtractRequest<Self>) -> Result<Option<CString>, Error> {
        with(req, |data, d| {
            if d.has_policy_namespace() {
                d.text(data, Slot::PolicyNamespace).map(escaped)
            } else {
                None
            }
        })
    }

    fn metadata(
        &mut self,
        req: ExtractRequest<Self>,
        key: Option<&CStr>,
    ) -> Result<Option<CString>, Error> {
        with(req, |data, d| match key {
            Some(k) => d
                .map_get(data, Slot::CustomMetadata, k.to_bytes())
                .map(escaped),
            None => joined(d.map(data, Slot::CustomMetadata)),
        })
    }

    fn metadata_pairs(&mut self, req: ExtractRequest<Self>) -> Result<Vec<CString>, Error> {
        with(req, |data, d| pairs(d.map(data, Slot::CustomMetadata)))
    }

    fn pod_label(
        &mut self,
        req: ExtractRequest<Self>,
        key: &CStr,
    ) -> Result<Option<CString>, Error> {
        with(req, |data, d| {
            d.map_get(data, Slot::PodLabels, key.to_bytes())
                .map(escaped)
        })
    }

    fn pod_labels(&mut self, req: ExtractRequest<Self>) -> Result<Vec<CString>, Error> {
        with(req, |data, d| pairs(d.map(data, Slot::PodLabels)))
    }

    fn namespace_label(
        &mut self,
        req: ExtractRequest<Self>,
        key: &CStr,
    ) -> Result<Option<CString>, Error> {
        with(req, |data, d| {
            d.map_get(data, Slot::NamespaceLabels, key.to_bytes())
                .map(escaped)
        })
    }

    fn namespace_labels(&mut self, req: ExtractRequest<Self>) -> Result<Vec<CString>, Error> {
        with(req, |data, d| pairs(d.map(data, Slot::NamespaceLabels)))
    }

    fn process_flags(&mut self, req: ExtractRequest<Self>) -> Result<Vec<CString>, Error> {
        with(req, |_, d| {
            ProcessFlags(d.numbers().process_flags.unwrap_or(0))
                .names()
                .into_iter()
                .map(|n| cstring(n.as_bytes()))
                .collect()
        })
    }

    fn binary_truncated(&mut self, req: ExtractRequest<Self>) -> Result<Option<bool>, Error> {
        process_flag(req, ProcessFlags::BINARY_TRUNCATED)
    }

    fn binary_memfd(&mut self, req: ExtractRequest<Self>) -> Result<Option<bool>, Error> {
        process_flag(req, ProcessFlags::BINARY_MEMFD)
    }

    fn binary_deleted(&mut self, req: ExtractRequest<Self>) -> Result<Option<bool>, Error> {
        process_flag(req, ProcessFlags::BINARY_DELETED)
    }

    fn loss_ring(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        loss(req, |l| l[0])
    }

    fn loss_queue(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        loss(req, |l| l[1])
    }

    fn loss_limited(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        loss(req, |l| l[2])
    }

    fn loss_total(&mut self, req: ExtractRequest<Self>) -> Result<Option<u64>, Error> {
        loss(req, |l| l.iter().fold(0u64, |a, b| a.saturating_add(*b)))
    }

    fn accessor_host(&mut self, req: ExtractRequest<Self>) -> Result<Option<bool>, Error> {
        with(req, |_, d| d.accessor_host())
    }

    fn accessor_foreign(&mut self, req: ExtractRequest<Self>) -> Result<Option<bool>, Error> {
        with(req, foreign)
    }

    fn alert_json(&mut self, req: ExtractRequest<Self>) -> Result<Option<CString>, Error> {
        with(req, |data, d| {
            Some(cstring(d.to_alert(data).to_json().as_bytes()))
        })
    }
}

/// The field table (order = the README's order).
pub(in crate::falco) const FIELDS: &[ExtractFieldInfo<KivePlugin>] = &[
    field("kive.alert.version", s!(AlertVersion))
        .with_display("Alert Version")
        .with_description("KiveAlert version of the alert (kive-alert-version, e.g. v1)"),
    field("kive.policy.name", s!(PolicyName))
        .with_display("Policy Name")
        .with_description("Name of the KivePolicy whose trap fired (kive-policy-name)")
        .add_output(),
    field("kive.policy.namespace", &KivePlugin::policy_namespace)
        .with_display("Policy Namespace")
        .with_description("Namespace of the KivePolicy whose trap fired"),
    field("kive.policy.severity", &KivePlugin::policy_severity)
        .with_display("Policy Severity")
        .with_description(
        "Severity (1-10) of the policy rule that fired (KubeArmor severity; kive-policy-severity)",
    ),
    field("kive.policy.tags", &KivePlugin::policy_tags)
        .with_display("Policy Tags")
        .with_description(
        "Tags of the policy rule that fired, comma-separated (KubeArmor tags; kive-policy-tags)",
    ),
    field("kive.policy.message", &KivePlugin::policy_message)
        .with_display("Policy Message")
        .with_description(
        "Message of the policy rule that fired (KubeArmor message; kive-policy-message)",
    ),
    field("kive.trap.path", s!(TrapPath))
        .with_display("Trap Path")
        .with_description("Path of the trap as written in the policy"),
    field("kive.path", s!(Path))
        .with_display("Path")
        .with_description(
            "Path of the file that was accessed, inside its owner's root (metadata.path)",
        )
        .add_output(),
    field("kive.inode", &KivePlugin::inode)
        .with_display("Inode")
        .with_description("Inode number of the accessed file (metadata.inode)"),
    field("kive.dev", s!(Dev))
        .with_display("Device")
        .with_description("Device of the accessed file as major:minor (kernel numbering)"),
    field("kive.mask", &KivePlugin::mask)
        .with_display("Mask").with_description(
        "Access mask, kernel MAY_* bits: exec 1, write 2, read 4, append 8, access 16, open 32 (metadata.mask)",
    ),
    field("kive.access", &KivePlugin::access)
        .with_display("Access")
        .with_description(
            "The access in words, comma separated: exec, read, write, append, access (open when nothing else)",
        )
        .add_output(),
    field("kive.action", s!(Action))
        .with_display("Action")
        .with_description("What the kernel did: audit (reported) or block (denied with EPERM)"),
    field("kive.hook", s!(Hook))
        .with_display("Hook")
        .with_description("The eBPF program that saw the access, e.g. lsm/file_open or tp_btf/sys_exit"),
    field("kive.owner", s!(Owner))
        .with_display("Owner")
        .with_description("Whose file the trap is: host (the node's own file) or pod"),
    field("kive.open.flags", &KivePlugin::open_flags)
        .with_display("Open Flags")
        .with_description("Open flags of the access (f_flags)"),
    field("kive.suppressed", &KivePlugin::suppressed)
        .with_display("Suppressed").with_description(
        "Alerts of this trap and process held back since the previous one, by the trap's rate limit and the kernel's flood limit (metadata.suppressed)",
    ),
    field("kive.loss.total", &KivePlugin::loss_total)
        .with_display("Loss Total").with_description(
        "On a loss report (no file access): trap hits lost since the previous report, all causes (metadata.loss)",
    ),
    field("kive.loss.ring", &KivePlugin::loss_ring)
        .with_display("Loss Ring")
        .with_description("On a loss report: hits lost because the kernel's ring buffer was full (metadata.loss.ring)"),
    field("kive.loss.queue", &KivePlugin::loss_queue)
        .with_display("Loss Queue")
        .with_description("On a loss report: hits lost because the consumer queue was full (metadata.loss.queue)"),
    field("kive.loss.limited", &KivePlugin::loss_limited)
        .with_display("Loss Limited")
        .with_description("On a loss report: hits held back by the kernel's per-(trap, process) flood limit (metadata.loss.limited)"),
    field("kive.tamper", s!(TamperKind))
        .with_display("Tamper").with_description(
        "Set when the event is a change to the trapped file's names, not an access: rename, link, unlink or replace (metadata.tamper.kind)",
    ),
    field("kive.tamper.old_path", s!(TamperOldPath))
        .with_display("Tamper Old Path")
        .with_description("The name the tampered file had (metadata.tamper.old-path)"),
    field("kive.tamper.new_path", s!(TamperNewPath))
        .with_display("Tamper New Path").with_description(
        "The name the tampered file has now, as kive sees it, when known (metadata.tamper.new-path)",
    ),
    field("kive.armed_as", s!(ArmedAs))
        .with_display("Armed As").with_description(
        "Set when the accessed inode has left the trap's path (renamed, linked elsewhere): the path it was armed as (metadata.armed-as)",
    ),
    field("kive.kernel.id", s!(KernelId))
        .with_display("Kernel ID")
        .with_description("Boot id of the node's kernel (metadata.kernel-id)"),
    field("kive.callback", s!(Callback))
        .with_display("Callback")
        .with_description("Callback URL of the trap (metadata.callback)"),
    field("kive.metadata", &KivePlugin::metadata)
        .with_display("Metadata").with_description(
        "Trap metadata (custom-metadata): kive.metadata[key] is one value, kive.metadata all of them as key=value,key=value",
    ),
    field("kive.metadata.pairs", &KivePlugin::metadata_pairs)
        .with_display("Metadata Pairs")
        .with_description("Trap metadata as a list of key=value"),
    field("kive.pod.name", s!(PodName))
        .with_display("Pod Name")
        .with_description("Name of the pod the trapped file belongs to (pod.name)"),
    field("kive.pod.namespace", s!(PodNamespace))
        .with_display("Pod Namespace")
        .with_description("Namespace of the pod the trapped file belongs to (pod.namespace)"),
    field("kive.pod.ip", s!(PodIp))
        .with_display("Pod IP").with_description("IP of the pod (pod.ip)"),
    field("kive.pod.label", &KivePlugin::pod_label)
        .with_display("Pod Label")
        .with_description("Value of one label of the pod, e.g. kive.pod.label[app]"),
    field("kive.pod.labels", &KivePlugin::pod_labels)
        .with_display("Pod Labels")
        .with_description("Labels of the pod as a list of key=value"),
    field("kive.pod.uid", s!(PodUid))
        .with_display("Pod UID").with_description("UID of the pod (pod.uid)"),
    field("kive.pod.serviceaccount", s!(ServiceAccount))
        .with_display("Pod Service Account")
        .with_description("Service account of the pod (pod.service-account)"),
    field("kive.pod.workload.kind", s!(WorkloadKind))
        .with_display("Pod Workload Kind").with_description(
        "Kind of the workload that owns the pod: Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet",
    ),
    field("kive.pod.workload.name", s!(WorkloadName))
        .with_display("Pod Workload Name")
        .with_description("Name of the workload that owns the pod"),
    field("kive.namespace.label", &KivePlugin::namespace_label)
        .with_display("Namespace Label")
        .with_description("Value of one label of the pod's namespace, e.g. kive.namespace.label[team]"),
    field("kive.namespace.labels", &KivePlugin::namespace_labels)
        .with_display("Namespace Labels")
        .with_description("Labels of the pod's namespace as a list of key=value"),
    field("kive.container.id", s!(ContainerId))
        .with_display("Container ID")
        .with_description("Id of the container, runtime://id (pod.container.id)"),
    field("kive.container.shortid", &KivePlugin::container_shortid)
        .with_display("Container Short ID")
        .with_description(
            "Id of the container as Falco's container.id shows it: without the runtime prefix, 12 characters",
        ),
    field("kive.container.name", s!(ContainerName))
        .with_display("Container Name")
        .with_description("Name of the container (pod.container.name)"),
    field("kive.container.image", s!(ContainerImage))
        .with_display("Container Image")
        .with_description("Image of the container (pod.container.image)"),
    field("kive.node.name", s!(NodeName))
        .with_display("Node Name")
        .with_description("Name of the node (node.name)"),
    field("kive.process.pid", &KivePlugin::pid)
        .with_display("Process PID")
        .with_description(
            "Host thread id of the accessing task (process.pid; the process id for a single-threaded process)",
        )
        .add_output(),
    field("kive.process.tgid", &KivePlugin::tgid)
        .with_display("Process TGID")
        .with_description("Host process id of the accessing process (process.tgid)"),
    field("kive.process.ppid", &KivePlugin::ppid)
        .with_display("Process PPID")
        .with_description("Host process id of the parent of the accessing process"),
    field("kive.process.parent.comm", s!(ParentComm))
        .with_display("Process Parent Command")
        .with_description("Command name of the parent of the accessing process (process.parent-comm)"),
    field("kive.process.parent.binary", s!(ParentBinary))
        .with_display("Process Parent Binary")
        .with_description("Executable of the parent of the accessing process, as the parent sees it (process.parent-binary)"),
    field("kive.process.vpid", &KivePlugin::vpid)
        .with_display("Process Namespace PID")
        .with_description("Process id of the accessing process inside its own pid namespace (process.ns-pid)"),
    field("kive.process.loginuid", &KivePlugin::loginuid)
        .with_display("Process Login UID")
        .with_description("Login uid of the accessing process, when set (process.loginuid)"),
    field("kive.process.uid", &KivePlugin::uid)
        .with_display("Process UID")
        .with_description("Real uid of the accessing process (process.uid)"),
    field("kive.process.gid", &KivePlugin::gid)
        .with_display("Process GID")
        .with_description("Real gid of the accessing process (process.gid)"),
    field("kive.process.binary", s!(Binary))
        .with_display("Process Binary")
        .with_description("Executable of the accessing process (process.binary; starts with ... when cut)"),
    field("kive.process.binary.truncated", &KivePlugin::binary_truncated)
        .with_display("Process Binary Truncated")
        .with_description("Whether the executable's path was cut at the kernel capture's limits (256 bytes, 24 levels): only its last components are known"),
    field("kive.process.binary.memfd", &KivePlugin::binary_memfd)
        .with_display("Process Binary Memfd")
        .with_description("Whether the executable is a memfd (memfd_create + fexecve: no file on disk)"),
    field("kive.process.binary.deleted", &KivePlugin::binary_deleted)
        .with_display("Process Binary Deleted")
        .with_description("Whether the executable was deleted (unlinked) while it ran"),
    field("kive.process.flags", &KivePlugin::process_flags)
        .with_display("Process Flags").with_description(
        "What the capture of the process is worth (process.flags): binary-truncated, cwd-truncated, parent-binary-truncated, arguments-truncated, binary-memfd, binary-deleted",
    ),
    field("kive.process.cwd", s!(Cwd))
        .with_display("Process Working Directory")
        .with_description("Working directory of the accessing process (process.cwd)"),
    field("kive.process.args", s!(Arguments))
        .with_display("Process Arguments")
        .with_description("Command line of the accessing process, space separated (process.arguments)"),
    field("kive.process.comm", s!(Comm))
        .with_display("Process Command")
        .with_description("Command name (task comm) of the accessing task"),
    field("kive.cgroup.id", &KivePlugin::cgroup_id)
        .with_display("Cgroup ID")
        .with_description("cgroup v2 id of the accessing process (identifies its container)"),
    field("kive.accessor.host", &KivePlugin::accessor_host)
        .with_display("Accessor Host")
        .with_description("Whether the accessing process runs on the node outside any container"),
    field("kive.accessor.container.id", s!(AccessorContainerId))
        .with_display("Accessor Container ID")
        .with_description("Container of the accessing process, runtime://id (accessor.container-id)"),
    field("kive.accessor.container.name", s!(AccessorContainerName))
        .with_display("Accessor Container Name")
        .with_description("Name of the accessing process's container, when kive knows it"),
    field("kive.accessor.pod.name", s!(AccessorPodName))
        .with_display("Accessor Pod Name")
        .with_description("Pod of the accessing process, when kive knows it"),
    field("kive.accessor.pod.namespace", s!(AccessorPodNamespace))
        .with_display("Accessor Pod Namespace")
        .with_description("Namespace of the accessing process's pod, when kive knows it"),
    field("kive.accessor.cgroup", s!(AccessorCgroup))
        .with_display("Accessor Cgroup")
        .with_description("cgroup path of the accessing process (v2; on hybrid or v1 nodes the v1 path that names its container)"),
    field("kive.accessor.foreign", &KivePlugin::accessor_foreign)
        .with_display("Accessor Foreign").with_description(
        "Whether the accessing process is outside the trap's owner: in a container for a host trap, on the host or in another pod for a pod trap",
    ),
    field("kive.alert", &KivePlugin::alert_json)
        .with_display("Alert JSON")
        .with_description("The whole alert as KiveAlert v1 JSON"),
];
