//! Plain-text checks and edits of SDP that the negotiation engine does not do for us.
//!
//! `inspect_offer` decides, before any WebRTC state is built, whether an offer is one Parley
//! can serve, so that a client gets a precise 400/422 reason. `spread_candidates` copies the
//! answer's candidate lines into every m-section (bundled clients such as aiortc read them
//! from the last one). Pure string work: no I/O, no WebRTC types.

use std::fmt;

/// Most m-sections an offer may carry before it is refused outright.
pub const MAX_MEDIA_SECTIONS: usize = 64;

/// What an offer asks for, in the terms Parley cares about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OfferSummary {
    /// Active (port != 0) audio m-sections.
    pub audio: usize,
    /// Active (port != 0) video m-sections.
    pub video: usize,
    /// Whether every active m-section is in one BUNDLE group.
    pub bundled: bool,
}

/// Why an offer cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// Not SDP at all (400).
    Malformed(&'static str),
    /// SDP, but not an offer Parley can serve (422).
    Unserviceable(String),
}

impl std::error::Error for OfferError {}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferError::Malformed(why) => write!(f, "malformed SDP offer: {why}"),
            OfferError::Unserviceable(why) => f.write_str(why),
        }
    }
}

/// Checks the structure of an offer: version line, media sections, ICE credentials, DTLS
/// fingerprint and BUNDLE.
pub fn inspect_offer(sdp: &str) -> Result<OfferSummary, OfferError> {
    let mut lines = sdp.lines().map(|l| l.trim_end_matches('\r'));
    if lines.next() != Some("v=0") {
        return Err(OfferError::Malformed("it must start with \"v=0\""));
    }
    let mut summary = OfferSummary::default();
    let mut sections = 0usize;
    let mut session_ufrag = false;
    let mut session_fingerprint = false;
    let mut bundle_mids: Vec<&str> = Vec::new();
    // Per active section: (mid, has ufrag, has fingerprint).
    let mut active: Vec<(Option<&str>, bool, bool)> = Vec::new();
    let mut current_active = false;
    // Sections at port 0 that are `a=bundle-only` (Firefox under max-bundle) are active: they
    // share the first section's transport.
    let bundle_only = bundle_only_sections(sdp);
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(OfferError::Malformed("it contains control characters"));
        }
        if let Some(media) = line.strip_prefix("m=") {
            sections += 1;
            if sections > MAX_MEDIA_SECTIONS {
                return Err(OfferError::Unserviceable(format!(
                    "the offer has more than {MAX_MEDIA_SECTIONS} media sections"
                )));
            }
            let mut fields = media.split(' ');
            let kind = fields.next().unwrap_or_default();
            let port = fields.next().unwrap_or_default();
            let port = port.split('/').next().unwrap_or_default();
            let port: u32 = port
                .parse()
                .map_err(|_| OfferError::Malformed("an m= line has no valid port"))?;
            current_active = port != 0 || bundle_only.get(sections - 1) == Some(&true);
            if current_active {
                match kind {
                    "audio" => summary.audio += 1,
                    "video" => summary.video += 1,
                    "application" => {
                        return Err(OfferError::Unserviceable(
                            "data channels are not supported: offer only audio and video".into(),
                        ))
                    }
                    _ => {
                        return Err(OfferError::Unserviceable(format!(
                            "unsupported media kind {kind:?}: offer only audio and video"
                        )))
                    }
                }
                active.push((None, false, false));
            }
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        let in_media = sections > 0;
        if let Some(group) = attr.strip_prefix("group:BUNDLE") {
            bundle_mids.extend(group.split_whitespace());
        } else if attr.starts_with("ice-ufrag:") {
            if !in_media {
                session_ufrag = true;
            } else if current_active {
                if let Some(last) = active.last_mut() {
                    last.1 = true;
                }
            }
        } else if attr.starts_with("fingerprint:") {
            if !in_media {
                session_fingerprint = true;
            } else if current_active {
                if let Some(last) = active.last_mut() {
                    last.2 = true;
                }
            }
        } else if let Some(mid) = attr.strip_prefix("mid:") {
            if current_active {
                if let Some(last) = active.last_mut() {
                    last.0 = Some(mid.trim());
                }
            }
        }
    }
    if active.is_empty() {
        return Err(OfferError::Unserviceable(
            "the offer has no active audio or video section".into(),
        ));
    }
    if !session_ufrag && active.iter().any(|s| !s.1) {
        return Err(OfferError::Unserviceable(
            "the offer has no ICE credentials (a=ice-ufrag / a=ice-pwd)".into(),
        ));
    }
    if !session_fingerprint && active.iter().any(|s| !s.2) {
        return Err(OfferError::Unserviceable(
            "the offer has no DTLS fingerprint (a=fingerprint)".into(),
        ));
    }
    summary.bundled = active
        .iter()
        .all(|(mid, _, _)| mid.is_some_and(|m| bundle_mids.contains(&m)));
    Ok(summary)
}

/// Per media section of `sdp`, in order: whether it says `a=bundle-only`.
pub fn bundle_only_sections(sdp: &str) -> Vec<bool> {
    let mut sections = Vec::new();
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            sections.push(false);
        } else if line == "a=bundle-only" {
            if let Some(last) = sections.last_mut() {
                *last = true;
            }
        }
    }
    sections
}

/// Makes every m-section of `answer` carry the same `a=candidate` lines and one
/// `a=end-of-candidates`, taking them from wherever the answer has them.
pub fn spread_candidates(answer: &str) -> String {
    let candidates: Vec<&str> = answer
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("a=candidate:"))
        .fold(Vec::new(), |mut seen, l| {
            if !seen.contains(&l) {
                seen.push(l);
            }
            seen
        });
    let mut out = String::with_capacity(answer.len() + candidates.len() * 96);
    let mut in_media = false;
    let flush = |out: &mut String| {
        for c in &candidates {
            out.push_str(c);
            out.push_str("\r\n");
        }
        out.push_str("a=end-of-candidates\r\n");
    };
    for line in answer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("m=") {
            if in_media {
                flush(&mut out);
            }
            in_media = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if in_media {
        flush(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBS_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=fingerprint:sha-256 AB:CD\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn a_typical_publisher_offer_is_accepted() {
        let s = inspect_offer(OBS_OFFER).expect("valid offer");
        assert_eq!(
            s,
            OfferSummary {
                audio: 1,
                video: 1,
                bundled: true
            }
        );
    }

    #[test]
    fn a_bundle_only_section_at_port_0_counts_as_active() {
        // Firefox under max-bundle: every section after the first is bundle-only at port 0.
        let offer = OBS_OFFER
            .replace("m=video 9", "m=video 0")
            .replace("a=mid:1\r\n", "a=mid:1\r\na=bundle-only\r\n");
        let s = inspect_offer(&offer).expect("valid offer");
        assert_eq!((s.audio, s.video, s.bundled), (1, 1, true));
        assert_eq!(bundle_only_sections(&offer), [false, true]);
    }

    #[test]
    fn offers_that_cannot_be_served_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "v=0"),
            ("hello", "v=0"),
            (
                &OBS_OFFER.replace("a=group:BUNDLE 0 1\r\n", "a=group:BUNDLE 0\r\n"),
                "",
            ),
            (
                &OBS_OFFER.replace("a=ice-ufrag:abcd\r\n", ""),
                "ICE credentials",
            ),
            (
                &OBS_OFFER.replace("a=fingerprint:sha-256 AB:CD\r\n", ""),
                "fingerprint",
            ),
            (
                &OBS_OFFER.replace("m=video 9", "m=application 9"),
                "data channels",
            ),
            (&OBS_OFFER.replace("m=video 9", "m=video x"), "port"),
            (
                &OBS_OFFER
                    .replace("m=audio 9", "m=audio 0")
                    .replace("m=video 9", "m=video 0"),
                "no active",
            ),
        ];
        for (offer, why) in cases {
            match inspect_offer(offer) {
                Ok(s) => assert!(!s.bundled && why.is_empty(), "accepted {offer:?}"),
                Err(e) => assert!(e.to_string().contains(why), "{e} lacks {why:?}"),
            }
        }
    }

    #[test]
    fn too_many_sections_are_refused() {
        let mut offer = OBS_OFFER.to_string();
        for _ in 0..MAX_MEDIA_SECTIONS {
            offer.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:x\r\n");
        }
        assert!(matches!(
            inspect_offer(&offer),
            Err(OfferError::Unserviceable(_))
        ));
    }

    #[test]
    fn candidates_reach_every_media_section() {
        let answer = "v=0\r\ns=-\r\nm=audio 9 X 111\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\nm=video 9 X 96\r\na=mid:1\r\n";
        let out = spread_candidates(answer);
        assert_eq!(out.matches("a=candidate:1 1 udp").count(), 2);
        assert_eq!(out.matches("a=end-of-candidates").count(), 2);
        let video = out.split("m=video").nth(1).expect("video section");
        assert!(video.contains("a=candidate:") && video.contains("a=mid:1"));
    }
}
