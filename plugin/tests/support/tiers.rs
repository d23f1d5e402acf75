//! Which tiers this kernel offers, asked of the kernel itself: a trial load
//! of each tier alone through the engine, plus the kernel's LSM list. Tests
//! expect tiers from these facts, never from one machine's limits, so the
//! same suite passes here (tracepoint) and on Debian's 6.1 (lsm).

#![allow(dead_code)]

use std::sync::OnceLock;

use kive::trap::{Engine, EngineConfig, Tier, TierChoice};

/// Every tier `auto` tries, best first (fanotify is never picked by
/// `auto`: README, Hook tiers).
pub const ORDER: [Tier; 5] = [
    Tier::Lsm,
    Tier::Trampoline,
    Tier::Fentry,
    Tier::Tracepoint,
    Tier::TracepointClassic,
];

/// The forced choice that loads exactly `tier` (or nothing).
pub fn choice_of(tier: Tier) -> TierChoice {
    match tier {
        Tier::Lsm => TierChoice::Lsm,
        Tier::Trampoline => TierChoice::Trampoline,
        Tier::Fentry => TierChoice::Fentry,
        Tier::Tracepoint => TierChoice::Tracepoint,
        Tier::TracepointClassic => TierChoice::TracepointClassic,
        Tier::Fanotify => TierChoice::Fanotify,
    }
}

/// The programs a tier attaches (kept here, apart from the engine, so a
/// change on either side shows).
pub fn programs_of(tier: Tier) -> &'static [&'static str] {
    match tier {
        // with the tamper hooks (rename, link, unlink) on the lsm and
        // trampoline tiers
        Tier::Lsm => &[
            "kive_lsm_file_open",
            "kive_lsm_inode_rename",
            "kive_lsm_inode_link",
            "kive_lsm_inode_unlink",
        ],
        Tier::Trampoline => &[
            "kive_fmod_ret_file_open",
            "kive_fentry_inode_rename",
            "kive_fentry_inode_link",
            "kive_fentry_inode_unlink",
        ],
        Tier::Fentry => &[
            "kive_fentry_file_open",
            "kive_fentry_inode_rename",
            "kive_fentry_inode_link",
            "kive_fentry_inode_unlink",
        ],
        Tier::Tracepoint => &["kive_tp_sys_exit", "kive_tp_exec"],
        Tier::TracepointClassic => &[
            "kive_tpc_openat",
            "kive_tpc_openat2",
            "kive_tpc_open",
            "kive_tpc_creat",
            "kive_tpc_open_by_handle_at",
            "kive_tpc_exec",
        ],
        Tier::Fanotify => &[],
    }
}

/// What the kernel offers.
#[derive(Debug)]
pub struct Offer {
    /// Per tier (in [`ORDER`]): `Ok` if it loads alone, else the error.
    pub tiers: Vec<(Tier, Result<(), String>)>,
    /// `/sys/kernel/security/lsm` as read.
    pub lsm_list: String,
}

impl Offer {
    /// Whether `tier` loads on this kernel.
    pub fn loads(&self, tier: Tier) -> bool {
        self.tiers.iter().any(|(t, r)| *t == tier && r.is_ok())
    }

    /// The tier `auto` must pick: the best one that loads alone.
    pub fn best(&self) -> Tier {
        ORDER
            .into_iter()
            .find(|t| self.loads(*t))
            .unwrap_or_else(|| panic!("no tier loads on this kernel: {self:#?}"))
    }

    /// Whether `bpf` is an active LSM here.
    pub fn bpf_lsm_active(&self) -> bool {
        kive::trap::lsm_list_has_bpf(&self.lsm_list)
    }
}

fn trial(tier: Tier) -> Result<(), String> {
    let cfg = EngineConfig {
        tier: choice_of(tier),
        ..EngineConfig::default()
    };
    match Engine::load(&cfg) {
        // forcing trampoline falls back to fentry: that is not fmod_ret
        Ok(e) if e.tier() == tier => Ok(()),
        Ok(e) => Err(format!("forced {tier}, got {}", e.tier())),
        Err(e) => Err(e.to_string()),
    }
}

/// The kernel's offer, probed once per test binary.
pub fn offer() -> &'static Offer {
    static OFFER: OnceLock<Offer> = OnceLock::new();
    OFFER.get_or_init(|| {
        super::ensure_mounts();
        Offer {
            tiers: ORDER.into_iter().map(|t| (t, trial(t))).collect(),
            lsm_list: std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default(),
        }
    })
}
