//! Device numbers: userspace `st_dev` (glibc encoding) to the kernel's
//! `sb->s_dev` (`MAJOR << 20 | MINOR`), the encoding trap keys use.

/// Major number of a userspace (glibc-encoded) `st_dev`.
pub fn major(st_dev: u64) -> u32 {
    (((st_dev >> 32) & 0xffff_f000) | ((st_dev >> 8) & 0x0000_0fff)) as u32
}

/// Minor number of a userspace (glibc-encoded) `st_dev`.
pub fn minor(st_dev: u64) -> u32 {
    (((st_dev >> 12) & 0xffff_ff00) | (st_dev & 0x0000_00ff)) as u32
}

/// The kernel's internal encoding of a userspace `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    (major(st_dev) << 20) | (minor(st_dev) & 0xf_ffff)
}

/// `MAJOR:MINOR` of a kernel-encoded device, as shown in `/proc/self/mountinfo`.
pub fn kernel_dev_display(dev: u32) -> String {
    // at every live event: no formatting machinery
    let mut out = String::with_capacity(12);
    out.push_str(itoa::Buffer::new().format(dev >> 20));
    out.push(':');
    out.push_str(itoa::Buffer::new().format(dev & 0xf_ffff));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_is_what_format_writes() {
        for d in [
            0,
            1,
            45,
            0x0fe0_0000,
            0x0fe0_0001,
            0xfff0_0000,
            0x000f_ffff,
            u32::MAX,
        ] {
            let want = format!("{}:{}", d >> 20, d & 0xf_ffff);
            assert_eq!(kernel_dev_display(d), want, "dev {d:#x}");
        }
    }

    #[test]
    fn block_device_254_0() {
        assert_eq!(kernel_dev(0xfe00), 0x0fe0_0000);
        assert_eq!(kernel_dev_display(0x0fe0_0000), "254:0");
    }

    #[test]
    fn anonymous_device_0_45() {
        // overlayfs and tmpfs use anonymous devices, major 0
        assert_eq!(kernel_dev(45), 45);
        assert_eq!(kernel_dev_display(45), "0:45");
    }

    #[test]
    fn large_minor_uses_the_high_bits() {
        // makedev(8, 300): minor above 255 lives in bits 20.. of st_dev
        let st_dev: u64 = ((300 & 0xffff_ff00) << 12) | (8 << 8) | (300 & 0xff);
        assert_eq!((major(st_dev), minor(st_dev)), (8, 300));
        assert_eq!(kernel_dev(st_dev), (8 << 20) | 300);
    }

    #[test]
    fn matches_libc_makedev() {
        for (ma, mi) in [(0u32, 1u32), (7, 3), (259, 1), (254, 70000)] {
            let st = libc::makedev(ma, mi);
            assert_eq!(kernel_dev(st), (ma << 20) | mi, "{ma}:{mi}");
        }
    }
}
