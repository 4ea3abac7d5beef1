use super::*;
use tokio::io::AsyncWriteExt;

/// Frames written as `chunks` (split and joined however the test likes) read back whole.
async fn read_all(chunks: Vec<Vec<u8>>) -> Vec<Option<BytesMut>> {
    let (mut client, server) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        for c in chunks {
            client.write_all(&c).await.expect("write");
            client.flush().await.expect("flush");
        }
    });
    let mut rd = BufReader::new(server);
    let mut frames = Vec::new();
    loop {
        let f = read_frame(&mut rd).await;
        let end = f.is_none();
        frames.push(f);
        if end {
            break;
        }
    }
    writer.await.expect("writer");
    frames
}

fn framed(packet: &[u8]) -> Vec<u8> {
    frame(packet).expect("small").to_vec()
}

#[tokio::test]
async fn frames_split_across_reads_and_coalesced_in_one_read_come_out_whole() {
    let a = vec![0x80u8; 300];
    let b = vec![0x17u8; 3];
    let c = vec![0x00u8; 1200];
    let mut all = framed(&a);
    all.extend(framed(&b));
    all.extend(framed(&c));
    // One byte at a time, then all in one write.
    let bytes: Vec<Vec<u8>> = all.iter().map(|b| vec![*b]).collect();
    for chunks in [bytes, vec![all.clone()]] {
        let frames = read_all(chunks).await;
        let got: Vec<Vec<u8>> = frames.into_iter().flatten().map(|f| f.to_vec()).collect();
        assert_eq!(got, vec![a.clone(), b.clone(), c.clone()]);
    }
}

#[tokio::test]
async fn a_frame_over_the_limit_or_cut_off_ends_the_stream() {
    let over = u16::try_from(MAX_FRAME + 1)
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    let frames = read_all(vec![framed(&[1, 2, 3]), over]).await;
    assert_eq!(frames.len(), 2);
    assert!(frames[1].is_none(), "the oversized frame ends it");
    let mut cut = framed(&[9u8; 100]);
    cut.truncate(50);
    let frames = read_all(vec![cut]).await;
    assert!(
        frames[0].is_none(),
        "a frame cut off by the end is not returned"
    );
    let frames = read_all(vec![vec![0, 0]]).await;
    assert!(frames[0].is_none(), "an empty frame ends it");
}

#[test]
fn a_frame_carries_its_length() {
    let f = frame(&[7u8; 258]).expect("small");
    assert_eq!(&f[..2], &[1, 2]);
    assert_eq!(f.len(), 260);
    assert!(
        frame(&vec![0u8; 70_000]).is_none(),
        "longer than a length can say"
    );
}

#[test]
fn media_is_told_from_stun_and_dtls() {
    assert!(is_media(&[0x80, 96]), "RTP");
    assert!(is_media(&[0x81, 200]), "RTCP");
    assert!(!is_media(&[0x00, 0x01]), "STUN");
    assert!(!is_media(&[0x16, 0xfe]), "DTLS");
    assert!(!is_media(&[]));
}

#[test]
fn connections_past_the_limit_get_no_place_and_places_come_back() {
    let live = Arc::new(AtomicUsize::new(0));
    let a = ConnGuard::take(&live, 2).expect("first");
    let _b = ConnGuard::take(&live, 2).expect("second");
    assert!(ConnGuard::take(&live, 2).is_none(), "third over the limit");
    drop(a);
    assert!(ConnGuard::take(&live, 2).is_some(), "a place freed");
}
