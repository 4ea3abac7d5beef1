//! A client with no WebRTC stack: it POSTs a valid offer and speaks ICE correctly from a
//! raw UDP socket, then sends whatever a test wants instead of a DTLS handshake.
//!
//! Owns: its socket. Never: DTLS or SRTP.

use super::hostile_call::{raw_offer, PROBE};
use super::hostile_wire::{sdp_attr, stun_request, stun_success};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::UdpSocket;

/// The client ufrag and password of every raw offer.
pub const RAW_UFRAG: &str = "Hstl";
pub const RAW_PWD: &str = "hostilehostilehostile12";

/// A client that POSTs a valid offer and speaks ICE correctly from a raw UDP socket, with
/// no DTLS or SRTP behind it.
pub struct RawPeer {
    pub socket: UdpSocket,
    /// The session path (`/sessions/{id}`).
    pub session: String,
    pub posted: Instant,
    /// `USERNAME` of our binding requests: the answer's ufrag, ":", ours.
    pub username: String,
    /// The answer's ICE password.
    pub server_pwd: String,
}

impl RawPeer {
    /// POSTs an offer to `{base}{endpoint}`; ICE has not started.
    pub async fn post(base: &str, endpoint: &str, direction: &str) -> RawPeer {
        let offer = raw_offer(
            RAW_UFRAG,
            RAW_PWD,
            &["opus/48000/2"],
            &["VP8/90000"],
            direction,
        );
        let posted = Instant::now();
        let resp = reqwest::Client::new()
            .post(format!("{base}{endpoint}"))
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
        let session = resp.headers()["location"]
            .to_str()
            .expect("Location")
            .to_owned();
        let answer = resp.text().await.expect("answer");
        let server_ufrag = sdp_attr(&answer, "ice-ufrag").expect("answer ufrag");
        RawPeer {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("socket"),
            session,
            posted,
            username: format!("{server_ufrag}:{RAW_UFRAG}"),
            server_pwd: sdp_attr(&answer, "ice-pwd").expect("answer pwd"),
        }
    }

    /// Completes ICE with the session: a binding request with USERNAME and
    /// MESSAGE-INTEGRITY keyed with the answer's password, our answer to the server's own
    /// check keyed with ours, then nomination. The session's DTLS server then waits for a
    /// ClientHello that never comes.
    pub async fn ice(&self, media: SocketAddr) {
        let me = self.socket.local_addr().expect("address");
        let binding = stun_request(&self.username, Some(&self.server_pwd), false);
        self.socket
            .send_to(&binding, media)
            .await
            .expect("send STUN");
        let mut buf = [0u8; 2048];
        let ice = tokio::time::timeout(PROBE, async {
            let mut successes = 0;
            while successes < 2 {
                let (n, from) = self.socket.recv_from(&mut buf).await.expect("recv");
                if buf[..n].starts_with(&[0x00, 0x01]) {
                    let ok = stun_success(&buf[..n], me, RAW_PWD).expect("a STUN request");
                    self.socket.send_to(&ok, from).await.expect("send");
                    let nominate = stun_request(&self.username, Some(&self.server_pwd), true);
                    self.socket.send_to(&nominate, media).await.expect("send");
                } else if buf[..n].starts_with(&[0x01, 0x01]) {
                    successes += 1;
                }
            }
        })
        .await;
        assert!(ice.is_ok(), "ICE with the raw peer: two binding successes");
    }

    /// [`RawPeer::post`] then [`RawPeer::ice`].
    pub async fn connect(
        base: &str,
        media: SocketAddr,
        endpoint: &str,
        direction: &str,
    ) -> RawPeer {
        let peer = RawPeer::post(base, endpoint, direction).await;
        peer.ice(media).await;
        peer
    }
}
