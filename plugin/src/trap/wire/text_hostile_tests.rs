use super::super::{offsets, RawEvent, ARGS_LEN, COMM_LEN, EVENT_SIZE, EVENT_VERSION, PATH_LEN};

/// The texts as the decode before this change gave them.
#[derive(Debug, PartialEq)]
struct Old {
    comm: String,
    parent_comm: String,
    parent_exe: String,
    exe: String,
    cwd: String,
    args: Vec<String>,
}

fn old_c_str(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn old_decode(r: &[u8]) -> Old {
    let len = |o: usize, max: usize| usize::from(u16::from_le_bytes([r[o], r[o + 1]])).min(max);
    let f = |o: usize, l: usize| &r[o..o + l];
    let args = f(offsets::ARGS, len(offsets::ARGS_LEN, ARGS_LEN));
    let args = args.strip_suffix(&[0]).unwrap_or(args);
    Old {
        comm: old_c_str(f(offsets::COMM, COMM_LEN)),
        parent_comm: old_c_str(f(offsets::PCOMM, COMM_LEN)),
        parent_exe: old_c_str(f(offsets::PEXE, len(offsets::PEXE_LEN, PATH_LEN))),
        exe: old_c_str(f(offsets::EXE, len(offsets::EXE_LEN, PATH_LEN))),
        cwd: old_c_str(f(offsets::CWD, len(offsets::CWD_LEN, PATH_LEN))),
        args: if args.is_empty() {
            Vec::new()
        } else {
            args.split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        },
    }
}

fn new_decode(r: &[u8]) -> Old {
    let e = RawEvent::decode(r).unwrap_or_else(|err| panic!("a valid header: {err}"));
    Old {
        comm: e.comm().to_owned(),
        parent_comm: e.parent_comm().to_owned(),
        parent_exe: e.parent_exe().to_owned(),
        exe: e.exe().to_owned(),
        cwd: e.cwd().to_owned(),
        args: e.args().iter().map(str::to_owned).collect(),
    }
}

/// A record with a valid header and the given text fields (bytes put at
/// the field's start, lengths as given, whatever they say).
fn record(fields: [(&[u8], u16); 6]) -> Vec<u8> {
    let mut r = vec![0u8; EVENT_SIZE];
    r[offsets::VERSION..offsets::VERSION + 2].copy_from_slice(&EVENT_VERSION.to_le_bytes());
    r[offsets::HOOK] = 4;
    let at = [
        (offsets::COMM, COMM_LEN, None),
        (offsets::PCOMM, COMM_LEN, None),
        (offsets::PEXE, PATH_LEN, Some(offsets::PEXE_LEN)),
        (offsets::EXE, PATH_LEN, Some(offsets::EXE_LEN)),
        (offsets::CWD, PATH_LEN, Some(offsets::CWD_LEN)),
        (offsets::ARGS, ARGS_LEN, Some(offsets::ARGS_LEN)),
    ];
    for ((bytes, len), (o, room, len_at)) in fields.into_iter().zip(at) {
        let n = bytes.len().min(room);
        r[o..o + n].copy_from_slice(&bytes[..n]);
        if let Some(l) = len_at {
            r[l..l + 2].copy_from_slice(&len.to_le_bytes());
        }
    }
    r
}

fn same(r: &[u8], what: &str) {
    assert_eq!(new_decode(r), old_decode(r), "{what}");
}

#[test]
fn hostile_texts_decode_as_before() {
    let cases: [(&str, &[u8]); 18] = [
        ("empty", b""),
        ("a lone NUL", b"\0"),
        ("NUL-terminated ASCII", b"/usr/bin/cat\0"),
        ("no NUL at all", b"/usr/bin/cat"),
        ("NUL in the middle", b"/usr/b\0in/cat\0"),
        ("NUL at byte 7 and 8", b"0123456\0\0abc"),
        ("non-UTF-8", b"/tmp/\xff\xfe/bad\xc3\0"),
        ("non-ASCII after the NUL", b"/tmp/ok\0\xff\xff\xff\xff\xff"),
        ("non-ASCII before the NUL in one word", b"ab\xc3\xa9\0xyz"),
        ("valid UTF-8", "/tmp/caf\u{e9}/\u{1f600}\0".as_bytes()),
        ("a cut multi-byte sequence", b"abcdefg\xe2\x82"),
        ("0x01 after a NUL (borrow)", b"abc\0\x01\x01\x01\x01"),
        ("0x80 bytes", b"\x80\x80\x80\x80\x80\x80\x80\x80\0"),
        ("args with empty ones", b"cat\0\0/etc/\xffsecret\0\0last\0"),
        ("0x80 in a long path", b"/a/long/enough/path/\x80\x80\0"),
        (
            "0x7f and 0x01 in a long path",
            b"/a/long/enough/path/\x7f\x01\0",
        ),
        (
            "UTF-8 in a long path",
            "/a/long/enough/path/caf\u{e9}\0".as_bytes(),
        ),
        ("NUL in a long path", b"/a/long/enough/path\0/x\0"),
    ];
    for (what, bytes) in cases {
        for len in [
            0u16,
            1,
            bytes.len() as u16,
            bytes.len() as u16 + 3,
            300,
            u16::MAX,
        ] {
            let f = [(bytes, len); 6];
            same(&record(f), &format!("{what}, length {len}"));
            // the rest of a long field full of bytes
            let mut full = bytes.to_vec();
            full.resize(PATH_LEN, b'x');
            let f = [(&full[..], len); 6];
            same(&record(f), &format!("{what} then 'x's, length {len}"));
        }
    }
    // comm without a terminator: all sixteen bytes
    let r = record([
        (b"0123456789abcdef", 0),
        (b"\xff123456789abcde", 0),
        (b"", 0),
        (b"", 0),
        (b"", 0),
        (b"", 0),
    ]);
    same(&r, "16-byte comms");
}

#[test]
fn random_fields_decode_as_before() {
    // bytes picked to hit every path: NUL, ASCII, 0x01 (borrows), 0x7f,
    // 0x80, lead and continuation bytes, 0xff
    const ALPHABET: &[u8] = b"\0\0a/\x01\x7f\x80\xc3\xa9\xe2\x82\xac\xf0\x9f\xffz";
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3_000 {
        let mut fields: Vec<(Vec<u8>, u16)> = Vec::new();
        for _ in 0..6 {
            let n = (next() % 300) as usize;
            // mostly ASCII with a few others, or anything
            let wild = next() % 3 == 0;
            let bytes = (0..n)
                .map(|_| {
                    let x = next();
                    if wild || x % 17 == 0 {
                        ALPHABET[(x >> 8) as usize % ALPHABET.len()]
                    } else {
                        b'a' + (x >> 8) as u8 % 26
                    }
                })
                .collect();
            let len = match next() % 4 {
                0 => n as u16,
                1 => (n as u16).saturating_add(1),
                2 => (next() % 260) as u16,
                _ => next() as u16,
            };
            fields.push((bytes, len));
        }
        let f: [(&[u8], u16); 6] = std::array::from_fn(|i| (&fields[i].0[..], fields[i].1));
        same(&record(f), &format!("round {round}: {fields:?}"));
    }
}
