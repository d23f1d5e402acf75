//! kive's global allocator (mimalloc, counted on demand): in its own test
//! binary, so that no other test allocates while the counts are read.

use kive::allocator::{live_bytes, peak_bytes, reset_peak, start_counting};

#[test]
fn counts_live_bytes_and_their_peak_once_switched_on() {
    const MIB: isize = 1 << 20;
    // the other test allocates < 200 KiB meanwhile: 1 MiB of slack
    start_counting();
    let before = live_bytes();
    reset_peak();
    let mut held: Vec<u8> = Vec::with_capacity(8 << 20);
    held.resize(8 << 20, 1);
    let during = live_bytes();
    assert!(
        during - before >= 7 * MIB,
        "an 8 MiB allocation counted live: {before} -> {during}"
    );
    assert_eq!(held.iter().map(|&b| usize::from(b)).sum::<usize>(), 8 << 20);
    drop(held);
    let after = live_bytes();
    assert!(
        during - after >= 7 * MIB,
        "its free counted: {during} -> {after}"
    );
    assert!(
        peak_bytes() >= during,
        "the peak kept the 8 MiB: {} < {during}",
        peak_bytes()
    );
}

#[test]
fn returns_aligned_zeroed_memory_for_every_alignment() {
    // large alignments go through mimalloc's aligned path
    for align in [8usize, 64, 4096, 1 << 16] {
        let layout = std::alloc::Layout::from_size_align(align * 3, align).expect("layout");
        // SAFETY: a non-zero size; freed with the same layout below.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!p.is_null(), "allocation of {layout:?} failed");
        assert_eq!(p as usize % align, 0, "{layout:?} misaligned");
        // SAFETY: `p` holds `layout.size()` zeroed bytes.
        let zeroed = unsafe { std::slice::from_raw_parts(p, layout.size()) };
        assert!(zeroed.iter().all(|&b| b == 0), "{layout:?} not zeroed");
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(p, layout) };
    }
}

#[test]
fn mimalloc_runs_with_kives_options() {
    // the process allocated before this test: the options are set
    let v = std::hint::black_box(Box::new([1u8; 100]));
    assert_eq!(v.len(), 100);
    for (option, value) in kive::allocator::OPTIONS {
        assert_eq!(
            kive::allocator::option(option),
            value,
            "mimalloc option {option} as kive set it"
        );
    }
}
