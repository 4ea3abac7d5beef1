//! Simulcast in a publisher's offer (RFC 8853 `a=simulcast`, RFC 8851 `a=rid`), brought to
//! what Parley serves before the WebRTC stack sees it.
//!
//! Parley keeps at most [`MAX_LAYERS`] layers per video track. An offer with more send
//! streams is answered with the first three, as RFC 8853 §5.3.2 lets an answerer do: the
//! `a=simulcast` line keeps the first alternative of the first three streams (a paused `~`
//! stream is taken as active), and `a=rid` lines of the streams left out are removed, so the
//! answer names only what will be received and no slot ever carries two layers. An
//! `a=simulcast` line Parley cannot read is refused with a reason. Pure string work.

use super::sdp::OfferError;
use super::MAX_LAYERS;
use std::borrow::Cow;

/// Longest rid accepted (RFC 8851 allows any token; real ones are a few characters).
const MAX_RID_LEN: usize = 32;

fn valid_rid(rid: &str) -> bool {
    !rid.is_empty()
        && rid.len() <= MAX_RID_LEN
        && rid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The send streams of an `a=simulcast` value (`send a;b,c;~d recv x`): the first
/// alternative of each stream, without the paused mark.
fn send_streams(value: &str) -> Result<Vec<&str>, OfferError> {
    let malformed = |why: &str| {
        OfferError::Unserviceable(format!("the offer's a=simulcast line is malformed: {why}"))
    };
    let mut words = value.split_whitespace();
    let mut send = None;
    while let Some(direction) = words.next() {
        let list = words
            .next()
            .ok_or_else(|| malformed("a direction without streams"))?;
        match direction {
            "send" if send.is_none() => send = Some(list),
            "send" => return Err(malformed("two send lists")),
            "recv" => {}
            other => return Err(malformed(&format!("unknown direction {other:?}"))),
        }
    }
    let list = send.ok_or_else(|| {
        OfferError::Unserviceable(
            "the offer's a=simulcast line has no send streams: a WHIP publisher sends".into(),
        )
    })?;
    list.split(';')
        .map(|stream| {
            let first = stream.split(',').next().unwrap_or_default();
            let rid = first.strip_prefix('~').unwrap_or(first);
            if valid_rid(rid) {
                Ok(rid)
            } else {
                Err(malformed(&format!("{rid:?} is not a stream id")))
            }
        })
        .collect()
}

/// The offer with every media section's simulcast limited to its first [`MAX_LAYERS`] send
/// streams (unchanged when no section needs it), or why it cannot be served.
pub fn limit_simulcast(offer: &str) -> Result<Cow<'_, str>, OfferError> {
    if !offer.contains("a=simulcast:") {
        return Ok(Cow::Borrowed(offer));
    }
    // Sections: the session part, then one per m= line.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in offer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    let mut out = String::with_capacity(offer.len());
    let mut changed = false;
    for section in &sections {
        let simulcast = section
            .iter()
            .filter_map(|l| l.strip_prefix("a=simulcast:"))
            .collect::<Vec<_>>();
        let kept: Option<Vec<&str>> = match simulcast.as_slice() {
            [] => None,
            [value] => {
                let mut streams = send_streams(value)?;
                streams.truncate(MAX_LAYERS);
                Some(streams)
            }
            _ => {
                return Err(OfferError::Unserviceable(
                    "a media section of the offer has more than one a=simulcast line".into(),
                ))
            }
        };
        for line in section {
            let Some(kept) = &kept else {
                out.push_str(line);
                out.push_str("\r\n");
                continue;
            };
            if line.starts_with("a=simulcast:") {
                let rewritten = format!("a=simulcast:send {}", kept.join(";"));
                changed |= rewritten != *line;
                out.push_str(&rewritten);
            } else if let Some(rid) = line.strip_prefix("a=rid:") {
                let mut fields = rid.split_whitespace();
                let id = fields.next().unwrap_or_default();
                let direction = fields.next().unwrap_or_default();
                if direction != "send" || !kept.contains(&id) {
                    changed = true;
                    continue;
                }
                out.push_str(line);
            } else {
                out.push_str(line);
            }
            out.push_str("\r\n");
        }
    }
    Ok(if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(offer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(simulcast: &str, rids: &[&str]) -> String {
        let mut s = String::from(
            "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n",
        );
        for rid in rids {
            s.push_str(&format!("a=rid:{rid} send\r\n"));
        }
        s.push_str(&format!("a=simulcast:{simulcast}\r\n"));
        s
    }

    #[test]
    fn three_layers_or_fewer_are_left_alone() {
        for (simulcast, rids) in [
            ("send q;h;f", &["q", "h", "f"][..]),
            ("send 0;1;2", &["0", "1", "2"]),
            ("send a;b", &["a", "b"]),
        ] {
            let o = offer(simulcast, rids);
            assert!(matches!(limit_simulcast(&o), Ok(Cow::Borrowed(_))), "{o}");
        }
        let plain = "v=0\r\nm=video 9 X 96\r\n";
        assert!(matches!(limit_simulcast(plain), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn more_than_three_keep_the_first_three() {
        let o = offer("send a;b;c;d;e", &["a", "b", "c", "d", "e"]);
        let out = limit_simulcast(&o).expect("served");
        assert!(out.contains("a=simulcast:send a;b;c\r\n"), "{out}");
        assert!(out.contains("a=rid:c send") && !out.contains("a=rid:d"));
        assert!(!out.contains("a=rid:e"));
        assert!(out.contains("a=mid:0\r\n"), "other sections kept");
    }

    #[test]
    fn alternatives_and_paused_streams_take_their_first_id() {
        let o = offer("send ~q,x;h;f recv r", &["q", "x", "h", "f"]);
        let out = limit_simulcast(&o).expect("served");
        assert!(out.contains("a=simulcast:send q;h;f\r\n"), "{out}");
        assert!(!out.contains("a=rid:x "), "the unused alternative goes");
    }

    #[test]
    fn unreadable_simulcast_is_refused_with_a_reason() {
        for (simulcast, why) in [
            ("recv q;h", "no send streams"),
            ("send", "without streams"),
            ("send a;;b", "not a stream id"),
            ("sideways a;b", "unknown direction"),
            ("send a send b", "two send lists"),
            ("send a b;c", "a direction without streams"),
            ("send a\u{e9};b", "not a stream id"),
        ] {
            let o = offer(simulcast, &["a", "b"]);
            let err = limit_simulcast(&o).expect_err(simulcast);
            assert!(err.to_string().contains(why), "{simulcast}: {err}");
        }
        let twice = offer("send a;b", &["a", "b"]) + "a=simulcast:send a\r\n";
        assert!(limit_simulcast(&twice).is_err());
    }
}
