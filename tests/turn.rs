//! TURN credentials through the HTTP API: every WHIP/WHEP answer carries the TURN servers
//! with a credential minted for its session (coturn's REST scheme, checked here with an
//! independent HMAC), `GET /ice-servers` hands them to a page before its offer, and settings
//! that cannot work refuse to start.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use parley::config::Config;
use reqwest::{header, Client, StatusCode};
use std::time::{SystemTime, UNIX_EPOCH};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

fn turn_config() -> Config {
    let mut config = Config::loopback();
    config.ice_server = vec!["stun:stun.example.org:3478".into()];
    config.turn_url = vec![
        "turn:turn.example.org:3478?transport=udp".into(),
        "turns:turn.example.org:443?transport=tcp".into(),
    ];
    config.turn_secret = Some("north".into());
    config.turn_ttl = 600;
    config.publish_token = Some("pub".into());
    config.play_token = Some("play".into());
    config
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Checks a minted credential: `expiry:label` about `ttl` from now, and its HMAC.
fn check(username: &str, credential: &str, label: Option<&str>) {
    let (expiry, rest) = username.split_once(':').expect("expiry:label");
    let expiry: u64 = expiry.parse().expect("expiry in seconds");
    assert!(expiry.abs_diff(now() + 600) <= 5, "{username}");
    if let Some(label) = label {
        assert_eq!(rest, label);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"north").expect("key");
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(credential, expected, "HMAC-SHA1 of {username}");
}

/// The value of `name="…"` in a Link header.
fn param<'a>(link: &'a str, name: &str) -> Option<&'a str> {
    let at = link.find(&format!("; {name}=\""))? + name.len() + 4;
    link[at..].split('"').next()
}

#[tokio::test]
async fn every_answer_and_ice_servers_carry_turn_credentials_and_options_does_not() {
    let server = parley::start(turn_config()).await.expect("server");
    let base = server.base_url();
    let http = Client::new();

    let created = http
        .post(format!("{base}/whip/r"))
        .header(header::CONTENT_TYPE, "application/sdp")
        .bearer_auth("pub")
        .body(OFFER)
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.headers()[header::LOCATION]
        .to_str()
        .expect("location")
        .rsplit('/')
        .next()
        .expect("id")
        .to_owned();
    let links: Vec<String> = created
        .headers()
        .get_all(header::LINK)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .filter(|l| l.contains("rel=\"ice-server\""))
        .collect();
    assert_eq!(links.len(), 3, "{links:?}");
    assert_eq!(links[0], "<stun:stun.example.org:3478>; rel=\"ice-server\"");
    for (link, url) in links[1..].iter().zip([
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:443?transport=tcp",
    ]) {
        assert!(link.starts_with(&format!("<{url}>")), "{link}");
        assert_eq!(param(link, "credential-type"), Some("password"));
        check(
            param(link, "username").expect("username"),
            param(link, "credential").expect("credential"),
            Some(&id),
        );
    }
    assert!(created.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .expect("ascii")
        .contains("Link"));

    // OPTIONS needs no token, so it names the STUN server only.
    let options = http
        .request(reqwest::Method::OPTIONS, format!("{base}/whip/r"))
        .send()
        .await
        .expect("OPTIONS");
    let links: Vec<&str> = options
        .headers()
        .get_all(header::LINK)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(
        links,
        vec!["<stun:stun.example.org:3478>; rel=\"ice-server\""]
    );

    let refused = http
        .get(format!("{base}/ice-servers"))
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    for token in ["pub", "play"] {
        let listed: serde_json::Value = http
            .get(format!("{base}/ice-servers"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        let servers = listed["iceServers"].as_array().expect("iceServers");
        assert_eq!(servers.len(), 2, "{listed}");
        assert_eq!(servers[0]["urls"][0], "stun:stun.example.org:3478");
        assert!(servers[0].get("username").is_none());
        assert_eq!(servers[1]["urls"].as_array().map(Vec::len), Some(2));
        check(
            servers[1]["username"].as_str().expect("username"),
            servers[1]["credential"].as_str().expect("credential"),
            None,
        );
    }
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{base}/ice-servers"))
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert!(preflight.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .expect("ascii")
        .contains("Authorization"));
    server.shutdown().await;
}

#[tokio::test]
async fn turn_settings_that_cannot_work_refuse_to_start() {
    let start = |change: &dyn Fn(&mut Config)| {
        let mut config = turn_config();
        change(&mut config);
        parley::start(config)
    };
    let err = start(&|c| c.turn_secret = None)
        .await
        .err()
        .expect("no secret");
    assert!(err.to_string().contains("--turn-secret"), "{err}");
    let err = start(&|c| c.turn_url.push("stun:x.example".into()))
        .await
        .err()
        .expect("not TURN");
    assert!(err.to_string().contains("stun:x.example"), "{err}");
    let err = start(&|c| c.turn_secret_file = Some("/nonexistent/secret".into()))
        .await
        .err()
        .expect("both");
    assert!(err.to_string().contains("not both"), "{err}");

    let dir = std::env::temp_dir().join(format!("parley-turn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("secret");
    std::fs::write(&file, "  north\n").expect("write");
    let from_file = {
        let file = file.clone();
        start(&move |c| {
            c.turn_secret = None;
            c.turn_secret_file = Some(file.clone());
        })
        .await
        .expect("a secret from a file")
    };
    let listed: serde_json::Value = Client::new()
        .get(format!("{}/ice-servers", from_file.base_url()))
        .bearer_auth("play")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    check(
        listed["iceServers"][1]["username"]
            .as_str()
            .expect("username"),
        listed["iceServers"][1]["credential"]
            .as_str()
            .expect("credential"),
        None,
    );
    from_file.shutdown().await;
    let err = start(&|c| {
        c.turn_secret = None;
        c.turn_secret_file = Some("/nonexistent/secret".into());
    })
    .await
    .err()
    .expect("unreadable");
    assert!(err.to_string().contains("/nonexistent/secret"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
