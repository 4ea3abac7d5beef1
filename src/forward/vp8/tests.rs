//! Tests of `forward::vp8`.

use super::*;

const DROP: Vp8Verdict = Vp8Verdict::Drop;

fn fwd(picture_id: u16, tl0picidx: u8) -> Vp8Verdict {
    Vp8Verdict::Forward {
        picture_id: Some(picture_id),
        tl0picidx: Some(tl0picidx),
    }
}

/// Sent without a PictureID.
fn fwd_np(tl0picidx: Option<u8>) -> Vp8Verdict {
    Vp8Verdict::Forward {
        picture_id: None,
        tl0picidx,
    }
}

/// The first packet of a one-packet frame with a 15-bit PictureID.
fn frame(pid: u16, tl0: u8, tid: u8, y: bool) -> Vp8Descriptor {
    Vp8Descriptor {
        start: true,
        frame_start: true,
        picture_id: Some(pid),
        long_picture_id: true,
        tl0picidx: Some(tl0),
        tid: Some(tid),
        layer_sync: y,
        ..Vp8Descriptor::default()
    }
}

fn key(pid: u16, tl0: u8) -> Vp8Descriptor {
    Vp8Descriptor {
        keyframe: true,
        ..frame(pid, tl0, 0, false)
    }
}

/// A later packet of the same frame.
fn cont(d: Vp8Descriptor) -> Vp8Descriptor {
    Vp8Descriptor {
        start: false,
        frame_start: false,
        keyframe: false,
        ..d
    }
}

/// The same packet without a PictureID.
fn np(d: Vp8Descriptor) -> Vp8Descriptor {
    Vp8Descriptor {
        picture_id: None,
        ..d
    }
}

/// Frame `n` of a stream with Chromium's three temporal layers: TIDs repeat 0 2 1 2, and
/// libwebrtc sets Y on the frames that reference only the base layer (the first TL2 and
/// the TL1 of each group); TL0PICIDX counts the base-layer frames. Frame 0 is a keyframe.
fn chromium(n: u16, pid0: u16, tl0: u8, long: bool) -> Vp8Descriptor {
    let i = usize::from(n % 4);
    let mask = if long { 0x7fff } else { 0x7f };
    let d = frame(
        pid0.wrapping_add(n) & mask,
        tl0.wrapping_add((n / 4) as u8),
        [0, 2, 1, 2][i],
        [false, true, true, false][i],
    );
    Vp8Descriptor {
        keyframe: n == 0,
        long_picture_id: long,
        ..d
    }
}

fn c(n: u16, pid0: u16, tl0: u8) -> Vp8Descriptor {
    chromium(n, pid0, tl0, true)
}

/// Chromium's pattern with 7-bit PictureIDs.
fn c7(n: u16, pid0: u16, tl0: u8) -> Vp8Descriptor {
    chromium(n, pid0, tl0, false)
}

#[derive(Clone, Copy)]
enum Step {
    Target(u8),
    Pkt(Vp8Descriptor, Vp8Verdict),
    NewSource(Vp8Descriptor, Vp8Verdict),
    Current(u8),
}
use Step::{Current, NewSource, Pkt, Target};

fn run(name: &str, steps: &[Step]) {
    let mut f = TemporalFilter::new();
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Target(t) => f.set_target(t),
            Current(want) => assert_eq!(f.current(), want, "{name}: step {i}: current"),
            Pkt(d, want) | NewSource(d, want) => {
                let new_source = matches!(step, NewSource(..));
                let got = f.on_packet(&d, new_source);
                assert_eq!(got, want, "{name}: step {i}: {d:?}");
                if got != DROP {
                    assert_eq!(f.resend(&d), got, "{name}: step {i}: resend");
                }
            }
        }
    }
}

#[test]
fn chromium_three_layers_filtered_at_each_target() {
    // (target, first PictureID, 15-bit, frames fed, the frames sent): the k-th frame
    // sent gets PictureID first + k in the field's width, since the frames dropped leave
    // no gap; TL0PICIDX (from 254, so it wraps too) passes unchanged.
    let table: &[(u8, u16, bool, u16, &[u16])] = &[
        (2, 1000, true, 12, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        (1, 1000, true, 12, &[0, 2, 4, 6, 8, 10]),
        (0, 1000, true, 12, &[0, 4, 8]),
        (0, 125, false, 13, &[0, 4, 8, 12]), // sent as 125 126 127 0
        (1, 32_766, true, 8, &[0, 2, 4, 6]), // sent as 32766 32767 0 1
    ];
    for (target, first, long, frames, sent) in table {
        let mut f = TemporalFilter::new();
        f.set_target(*target);
        let mask = if *long { 0x7fff } else { 0x7f };
        let mut next = *first;
        for n in 0..*frames {
            let d = chromium(n, *first, 254, *long);
            let want = match sent.contains(&n) {
                true => fwd(next & mask, 254u8.wrapping_add((n / 4) as u8)),
                false => DROP,
            };
            next += u16::from(want != DROP);
            assert_eq!(
                f.on_packet(&d, n == 0),
                want,
                "target {target}, from {first}, frame {n}"
            );
        }
        assert_eq!(f.current(), *target, "target {target}");
    }
}

#[test]
fn scenarios() {
    let table: Vec<(&str, Vec<Step>)> = vec![
        (
            "going up waits for a layer-sync frame, one layer at a time",
            vec![
                Target(0),
                NewSource(c(0, 100, 10), fwd(100, 10)),
                Current(0),
                Target(2),
                Pkt(c(1, 100, 10), DROP), // TL2 sync, but TL1 is not in effect yet
                Pkt(c(2, 100, 10), fwd(101, 10)), // TL1 sync
                Current(1),
                Pkt(c(3, 100, 10), DROP), // TL2 without Y
                Pkt(c(4, 100, 10), fwd(102, 11)),
                Pkt(c(5, 100, 10), fwd(103, 11)), // TL2 sync
                Current(2),
                Pkt(c(6, 100, 10), fwd(104, 11)),
                Pkt(c(7, 100, 10), fwd(105, 11)),
            ],
        ),
        (
            "going down takes effect at the next frame, not inside one",
            vec![
                NewSource(c(0, 200, 0), fwd(200, 0)),
                Pkt(c(1, 200, 0), fwd(201, 0)),
                Target(0),
                Current(MAX_TID),
                Pkt(cont(c(1, 200, 0)), fwd(201, 0)),
                Pkt(c(2, 200, 0), DROP),
                Current(0),
                Pkt(cont(c(2, 200, 0)), DROP),
                Pkt(c(3, 200, 0), DROP),
                Pkt(c(4, 200, 0), fwd(202, 1)),
            ],
        ),
        (
            "frames of several packets follow their first packet, reordered or not",
            vec![
                Target(1),
                NewSource(c(0, 300, 0), fwd(300, 0)),
                Pkt(cont(c(0, 300, 0)), fwd(300, 0)),
                Pkt(cont(c(1, 300, 0)), DROP),
                Pkt(c(1, 300, 0), DROP),
                Pkt(cont(c(2, 300, 0)), fwd(301, 0)),
                Pkt(c(2, 300, 0), fwd(301, 0)),
                Pkt(cont(c(2, 300, 0)), fwd(301, 0)),
                Pkt(c(3, 300, 0), DROP),
                Pkt(c(4, 300, 0), fwd(302, 1)),
                Pkt(cont(c(1, 300, 0)), DROP), // a straggler of a dropped frame
            ],
        ),
        (
            "a keyframe whose start arrives second still syncs every layer",
            vec![
                NewSource(cont(c(0, 400, 5)), fwd(400, 5)),
                Current(0),
                Pkt(c(0, 400, 5), fwd(400, 5)),
                Current(MAX_TID),
                Pkt(c(1, 400, 5), fwd(401, 5)),
            ],
        ),
        (
            "a keyframe puts a higher target in effect at once",
            vec![
                Target(0),
                NewSource(c(0, 500, 0), fwd(500, 0)),
                Pkt(c(1, 500, 0), DROP),
                Pkt(c(2, 500, 0), DROP),
                Pkt(c(3, 500, 0), DROP),
                Target(2),
                Pkt(key(504, 1), fwd(501, 1)),
                Current(2),
                Pkt(frame(505, 1, 2, false), fwd(502, 1)),
            ],
        ),
        (
            "a frame lost upstream still shows as a PictureID gap",
            vec![
                Target(1),
                NewSource(c(0, 600, 0), fwd(600, 0)),
                // frame 601 lost
                Pkt(c(2, 600, 0), fwd(602, 0)),
                Pkt(c(3, 600, 0), DROP),
                Pkt(c(4, 600, 0), fwd(603, 1)),
            ],
        ),
        (
            "a whole frame arriving late is numbered around the skips after it",
            vec![
                Target(1),
                NewSource(c(0, 700, 0), fwd(700, 0)),
                Pkt(c(1, 700, 0), DROP),
                // frame 702 (TL1) is late
                Pkt(c(3, 700, 0), DROP),
                Pkt(c(4, 700, 0), fwd(702, 1)),
                Pkt(c(2, 700, 0), fwd(701, 0)),
                Pkt(cont(c(2, 700, 0)), fwd(701, 0)),
                // frame 705 (TL2) is late too: its turn to be skipped has passed
                Pkt(c(6, 700, 0), fwd(704, 1)),
                Pkt(c(5, 700, 0), DROP),
                Pkt(c(7, 700, 0), DROP),
                Pkt(c(8, 700, 0), fwd(705, 2)),
            ],
        ),
        (
            "a new source continues PictureID and TL0PICIDX from the last sent",
            vec![
                NewSource(c(0, 50, 254), fwd(50, 254)),
                Pkt(c(1, 50, 254), fwd(51, 254)),
                Pkt(c(4, 50, 254), fwd(54, 255)),
                Pkt(c(5, 50, 254), fwd(55, 255)),
                NewSource(c(0, 9000, 17), fwd(56, 0)),
                Pkt(c(1, 9000, 17), fwd(57, 0)),
                Pkt(c(2, 9000, 17), fwd(58, 0)),
                Pkt(c(3, 9000, 17), fwd(59, 0)),
                Pkt(c(4, 9000, 17), fwd(60, 1)),
                Pkt(c(8, 9000, 17), fwd(64, 2)),
            ],
        ),
        (
            "a new source after trailing drops leaves no gap",
            vec![
                Target(0),
                NewSource(c(0, 100, 9), fwd(100, 9)),
                Pkt(c(1, 100, 9), DROP),
                Pkt(c(2, 100, 9), DROP),
                Pkt(c(3, 100, 9), DROP),
                NewSource(c(0, 7, 3), fwd(101, 10)),
                Pkt(c(1, 7, 3), DROP),
                Pkt(c(2, 7, 3), DROP),
                Pkt(c(3, 7, 3), DROP),
                Pkt(c(4, 7, 3), fwd(102, 11)),
            ],
        ),
        (
            "a new source in the other PictureID width continues in its own width",
            vec![
                NewSource(c(0, 300, 0), fwd(300, 0)),
                NewSource(c7(0, 3, 0), fwd(301 & 0x7f, 1)),
                Pkt(c7(1, 3, 0), fwd(46, 1)),
            ],
        ),
        (
            "no temporal index: never dropped; no PictureID: sent with None",
            vec![
                Target(0),
                NewSource(key(10, 0), fwd(10, 0)),
                Pkt(
                    Vp8Descriptor {
                        tid: None,
                        ..frame(11, 0, 2, false)
                    },
                    fwd(11, 0),
                ),
                Pkt(np(frame(0, 0, 2, true)), DROP),
                Pkt(np(frame(0, 0, 0, false)), fwd_np(Some(0))),
                Pkt(
                    np(Vp8Descriptor {
                        tid: None,
                        tl0picidx: None,
                        ..frame(0, 0, 3, false)
                    }),
                    fwd_np(None),
                ),
            ],
        ),
        (
            "without PictureID, a frame's later packets follow the layer its start set",
            vec![
                NewSource(np(key(0, 0)), fwd_np(Some(0))),
                Target(1),
                Pkt(np(cont(frame(0, 0, 2, true))), fwd_np(Some(0))),
                Pkt(np(frame(0, 0, 2, true)), DROP),
                Pkt(np(cont(frame(0, 0, 2, true))), DROP),
                Pkt(np(cont(frame(0, 0, 1, true))), fwd_np(Some(0))),
            ],
        ),
    ];
    for (name, steps) in &table {
        run(name, steps);
    }
}

#[test]
fn frames_beyond_memory_are_dropped_and_a_far_keyframe_restarts() {
    let mut f = TemporalFilter::new();
    for pid in 0..40u16 {
        let d = if pid == 0 {
            key(pid, 0)
        } else {
            frame(pid, 0, 0, false)
        };
        assert_eq!(f.on_packet(&d, false), fwd(pid, 0), "frame {pid}");
    }
    let newest = 39u16;
    let kept = frame(newest + 1 - FRAMES as u16, 0, 0, false);
    assert_eq!(
        f.on_packet(&cont(kept), false),
        kept.picture_id.map_or(DROP, |p| fwd(p, 0))
    );
    assert_eq!(f.resend(&kept), f.on_packet(&cont(kept), false));
    let forgotten = frame(newest - FRAMES as u16, 0, 0, false);
    assert_eq!(f.on_packet(&cont(forgotten), false), DROP);
    assert_eq!(f.resend(&forgotten), DROP);
    // The source's PictureID jumped back by 100 with a keyframe: numbering restarts.
    let jumped = newest.wrapping_sub(100) & 0x7fff;
    assert_eq!(f.on_packet(&frame(jumped, 1, 0, false), false), DROP);
    assert_eq!(f.on_packet(&key(jumped, 1), false), fwd(40, 1));
    assert_eq!(
        f.on_packet(&frame(jumped + 1, 1, 0, false), false),
        fwd(41, 1)
    );
}

/// A descriptor in one line: flags, then each field present with its offset.
fn summary(d: &Vp8Descriptor) -> String {
    let mut s = format!("S={} PID={} len={}", u8::from(d.start), d.partition, d.len);
    for (on, text) in [(d.frame_start, " frame"), (d.keyframe, " key")] {
        if on {
            s += text;
        }
    }
    if let Some(pid) = d.picture_id {
        let bits = if d.long_picture_id { 15 } else { 7 };
        s += &format!(" pid={pid}/{bits}@{}", d.picture_id_at);
    }
    if let Some(tl0) = d.tl0picidx {
        s += &format!(" tl0={tl0}@{}", d.tl0picidx_at);
    }
    if let Some(tid) = d.tid {
        s += &format!(" tid={tid}{}", if d.layer_sync { "y" } else { "" });
    }
    s
}

#[test]
fn parse_table() {
    let table: &[(&str, &[u8], &str)] = &[
        ("empty", &[], "none"),
        ("descriptor without data", &[0x10], "none"),
        (
            "minimal keyframe start",
            &[0x10, 0x00],
            "S=1 PID=0 len=1 frame key",
        ),
        (
            "minimal interframe start",
            &[0x10, 0x01],
            "S=1 PID=0 len=1 frame",
        ),
        ("start of partition 1", &[0x11, 0x00], "S=1 PID=1 len=1"),
        ("continuation", &[0x00, 0x00], "S=0 PID=0 len=1"),
        (
            "7-bit PictureID",
            &[0x90, 0x80, 0x05, 0x01],
            "S=1 PID=0 len=3 frame pid=5/7@2",
        ),
        (
            "15-bit PictureID",
            &[0x90, 0x80, 0x81, 0x23, 0x01],
            "S=1 PID=0 len=4 frame pid=291/15@2",
        ),
        (
            "I, L and T",
            &[0x90, 0xe0, 0x92, 0x34, 0x07, 0xa0, 0x00],
            "S=1 PID=0 len=6 frame key pid=4660/15@2 tl0=7@4 tid=2y",
        ),
        (
            "L and T without I",
            &[0x80, 0x60, 0xff, 0x40, 0x00],
            "S=0 PID=0 len=4 tl0=255@2 tid=1",
        ),
        (
            "K without T: no temporal index",
            &[0x80, 0x10, 0xff, 0x00],
            "S=0 PID=0 len=3",
        ),
        ("15-bit PictureID cut short", &[0x90, 0x80, 0x81], "none"),
        ("extension byte missing", &[0x90], "none"),
    ];
    for (name, bytes, want) in table {
        let got = parse(bytes).map_or("none".to_string(), |d| summary(&d));
        assert_eq!(got, *want, "{name}");
    }
    let full = [0x90, 0xf0, 0x92, 0x34, 0x07, 0xa0, 0x00];
    assert!(parse(&full).is_some());
    for n in 0..full.len() {
        assert_eq!(parse(&full[..n]), None, "truncated to {n} bytes");
    }
}

#[test]
fn patch_table() {
    // (name, payload, PictureID, TL0PICIDX, accepted, payload after)
    type Case = (
        &'static str,
        &'static [u8],
        Option<u16>,
        Option<u8>,
        bool,
        &'static [u8],
    );
    let full: &[u8] = &[0x90, 0xe0, 0x92, 0x34, 0x07, 0xa0, 0x00];
    let short: &[u8] = &[0x90, 0x80, 0x05, 0x00];
    let table: &[Case] = &[
        (
            "both fields",
            full,
            Some(0x7ffe),
            Some(200),
            true,
            &[0x90, 0xe0, 0xff, 0xfe, 200, 0xa0, 0x00],
        ),
        (
            "15 bits kept",
            &[0x90, 0x80, 0x80, 0x00, 0x00],
            Some(0x8001),
            None,
            true,
            &[0x90, 0x80, 0x80, 0x01, 0x00],
        ),
        (
            "7 bits kept",
            short,
            Some(130),
            None,
            true,
            &[0x90, 0x80, 0x02, 0x00],
        ),
        ("nothing to write", short, None, None, true, short),
        ("no TL0PICIDX field", short, Some(6), Some(1), false, short),
        (
            "no PictureID field",
            &[0x80, 0x40, 0x05, 0x00],
            Some(6),
            Some(1),
            false,
            &[0x80, 0x40, 0x05, 0x00],
        ),
    ];
    for (name, payload, pid, tl0, accepted, after) in table {
        let d = parse(payload).expect(name);
        let mut buf = payload.to_vec();
        assert_eq!(patch(&mut buf, &d, *pid, *tl0), *accepted, "{name}");
        assert_eq!(buf, *after, "{name}");
    }
    let d = parse(full).expect("full");
    let mut cut = [0x90, 0xe0, 0x92];
    assert!(
        !patch(&mut cut, &d, Some(1), None),
        "a buffer shorter than the descriptor"
    );
    assert_eq!(cut, [0x90, 0xe0, 0x92]);
}

#[test]
fn no_input_panics_parse_patch_or_filter() {
    let mut f = TemporalFilter::new();
    for b01 in 0..=u16::MAX {
        let [b0, b1] = b01.to_be_bytes();
        for tail in 0..4usize {
            let mut buf = [b0, b1, 0x85, b0, b1, 0x22];
            let buf = &mut buf[..2 + tail];
            let Some(d) = parse(buf) else { continue };
            assert!(d.len < buf.len());
            f.set_target(b1 & 3);
            if let Vp8Verdict::Forward {
                picture_id,
                tl0picidx,
            } = f.on_packet(&d, b0 & 0x40 != 0)
            {
                assert!(patch(buf, &d, picture_id, tl0picidx));
                let after = parse(buf).expect("patched stays parseable");
                assert_eq!((after.picture_id, after.tl0picidx), (picture_id, tl0picidx));
            }
        }
    }
}
