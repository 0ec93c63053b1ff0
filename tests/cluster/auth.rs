//! The peer links' authentication (`src/cluster/handshake.rs`, run by
//! `link.rs`) over real loopback sockets: nodes in this process, and raw
//! sockets that play a peer without the secret, replay what a real peer
//! sent, reflect a node's own proof, or forge frames after the handshake.
//! Each is refused, disconnected, counted, and delivers nothing.

use std::time::Duration;

use seglog::cluster::frame::{self, Frame, Hello};
use seglog::cluster::handshake::{Role, Transcript};
use seglog::cluster::link::{FRAME_READ_TIMEOUT, HELLO_TIMEOUT, Links, REFUSAL};
use seglog::cluster::peers::Membership;
use seglog::cluster::secret::Secret;
use seglog::raft::transport::Batch;
use seglog::raft::types::NodeId;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::links::{
    Authenticated, address, answer_as, batch, closed_by_the_node, cluster, cluster_id, connect,
    dial_as, dial_bare, dialed, hello, json, listener, next, node_1_of_2, read_frame, read_raw,
    secret, start, within, write_frame, write_sealed,
};

/// A secret that is not the tests' cluster secret.
fn wrong_secret() -> Secret {
    Secret::new(b"another secret altogether, also 32 bytes or more").expect("a valid secret")
}

/// Waits until `done` holds, looking again every few milliseconds: for a
/// refusal between two nodes of this process, seen only in their
/// counters. `within` turns a hang into a failure.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The next batch a node hands over, as `(from, JSON)`.
async fn next_json(
    what: &str,
    incoming: &mut mpsc::Receiver<seglog::cluster::link::Received>,
) -> (NodeId, serde_json::Value) {
    let (from, batch) = next(what, incoming).await;
    (from, json(&batch))
}

fn from(node: NodeId, batch: &Batch) -> (NodeId, serde_json::Value) {
    (node, json(batch))
}

/// Sends `batch(tag)` as raw peer `node`, and checks the node hands it on.
async fn delivered(
    peer: &mut Authenticated,
    node: NodeId,
    tag: u32,
    incoming: &mut mpsc::Receiver<seglog::cluster::link::Received>,
) {
    write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(tag)),
    )
    .await;
    assert_eq!(
        next_json("the peer's batch", incoming).await,
        from(node, &batch(tag))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_secret_connects_and_a_wrong_one_never_does() {
    let (one, two, three) = (listener().await, listener().await, listener().await);
    let (a1, a2, a3) = (address(&one), address(&two), address(&three));
    // Node 2 lists node 3; node 1 does not: a difference that is logged,
    // not fatal, since 1 and 2 list each other.
    let of_1 = Membership::new([(1, a1.clone()), (2, a2.clone())]).expect("a valid membership");
    let of_2 =
        Membership::new([(1, a1), (2, a2.clone()), (3, a3.clone())]).expect("a valid membership");
    let of_3 = Membership::new([(2, a2), (3, a3)]).expect("a valid membership");
    let (links_1, mut incoming_1) = start(one, 1, &of_1);
    let (links_2, mut incoming_2) = start(two, 2, &of_2);
    // Node 3 holds another secret.
    let (links_3, mut incoming_3) = Links::start(three, cluster(3, &of_3), wrong_secret());

    assert!(within("1 → 2 up", links_1.wait_until(2, true)).await);
    assert!(within("2 → 1 up", links_2.wait_until(1, true)).await);
    links_1.send(2, batch(12)).expect("the link is up");
    links_2.send(1, batch(21)).expect("the link is up");
    assert_eq!(
        next_json("1's batch", &mut incoming_2).await,
        from(1, &batch(12))
    );
    assert_eq!(
        next_json("2's batch", &mut incoming_1).await,
        from(2, &batch(21))
    );

    // 2 and 3 each refuse the other's proof, dial after dial.
    until("2 and 3 refusing each other's proofs", || {
        links_2.failures().proofs >= 2 && links_3.failures().proofs >= 2
    })
    .await;
    assert!(!links_2.is_up(3) && !links_3.is_up(2));
    assert!(links_2.send(3, batch(23)).is_err());
    assert!(links_3.send(2, batch(32)).is_err());
    // Nothing of node 3 reached node 2: the next batch node 2 hands over
    // is node 1's; and node 3 took nothing.
    links_1.send(2, batch(13)).expect("the link is up");
    assert_eq!(
        next_json("1's next batch", &mut incoming_2).await,
        from(1, &batch(13))
    );
    assert!(incoming_3.try_recv().is_err(), "node 3 took a batch");
    assert_eq!(links_1.failures().proofs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_secret_is_refused() {
    let (links, mut incoming, node, membership, _) = node_1_of_2().await;
    let mut stream = connect(node).await;
    let sent = write_frame(&mut stream, &mut hello(&cluster(2, &membership), 1)).await;
    let (body, Frame::Hello(_)) = read_raw(&mut stream).await else {
        panic!("no hello back")
    };
    let transcript = Transcript::new(&sent[frame::LENGTH_BYTES..], &body);
    // A proof made with another secret is refused, tersely, and the node
    // sends no proof of its own to a peer that has not proved the secret:
    // the refusal is the next and last thing it sends.
    let mut ours = Frame::Proof(transcript.proof(&wrong_secret(), Role::Dialer));
    write_frame(&mut stream, &mut ours).await;
    write_frame(&mut stream, &mut Frame::Batch(batch(1))).await;
    let Frame::Refuse(why) = read_frame(&mut stream).await else {
        panic!("a wrong proof was not refused")
    };
    assert_eq!(why, REFUSAL);
    assert!(closed_by_the_node(&mut stream).await.is_empty());
    assert_eq!(links.failures().proofs, 1);

    let mut peer = dial_as(node, &cluster(2, &membership), 1, &secret()).await;
    write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(2)),
    )
    .await;
    assert_eq!(
        next_json("the good batch", &mut incoming).await,
        from(2, &batch(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_handshake_is_refused_and_delivers_nothing() {
    let (links, mut incoming, node, membership, _) = node_1_of_2().await;
    // A real exchange, recorded: the peer's hello, proof and one batch.
    let mut peer = dial_as(node, &cluster(2, &membership), 1, &secret()).await;
    let sealed = write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(1)),
    )
    .await;
    assert_eq!(
        next_json("the recorded batch", &mut incoming).await,
        from(2, &batch(1))
    );
    drop(peer.stream);

    // Replayed byte for byte on a new connection: the node's nonce is
    // new, so the recorded proof does not hold for it.
    let mut stream = connect(node).await;
    stream
        .write_all(&[peer.sent, sealed].concat())
        .await
        .expect("writing to the node");
    closed_by_the_node(&mut stream).await;
    assert_eq!(links.failures().proofs, 1);

    let mut peer = dial_as(node, &cluster(2, &membership), 1, &secret()).await;
    write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(2)),
    )
    .await;
    assert_eq!(
        next_json("the batch after the replay", &mut incoming).await,
        from(2, &batch(2)),
        "the replayed batch was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflected_proof_is_refused_on_either_side() {
    // Node 1 dials "node 2", a stranger at node 2's address. The stranger
    // dials node 1 back as node 2, with node 1's nonce in its hello, and
    // answers node 1's dial with node 1's accepting nonce: then hands
    // node 1's dialing proof back to node 1 on either connection.
    let (links, _incoming, node, membership, fake) = node_1_of_2().await;
    let mut dialed = dialed("node 1 dialing", &fake).await;
    let Frame::Hello(challenge) = read_frame(&mut dialed).await else {
        panic!("node 1 did not start with its hello")
    };
    let mut back = connect(node).await;
    let reflected = Hello::new(&cluster(2, &membership), 1, challenge.nonce.clone());
    write_frame(&mut back, &mut Frame::Hello(reflected)).await;
    let Frame::Hello(answer) = read_frame(&mut back).await else {
        panic!("node 1 did not answer the hello")
    };
    let forged = Hello::new(&cluster(2, &membership), 1, answer.nonce);
    write_frame(&mut dialed, &mut Frame::Hello(forged)).await;
    let Frame::Proof(proof) = read_frame(&mut dialed).await else {
        panic!("node 1 did not prove itself to the node it dialed")
    };
    // As the dialer's proof on the connection back: refused.
    write_frame(&mut back, &mut Frame::Proof(proof)).await;
    let Frame::Refuse(why) = read_frame(&mut back).await else {
        panic!("a reflected proof was not refused")
    };
    assert_eq!(why, REFUSAL);
    closed_by_the_node(&mut back).await;
    assert_eq!(links.failures().proofs, 1);
    // As the acceptor's proof on node 1's own dial: refused.
    write_frame(&mut dialed, &mut Frame::Proof(proof)).await;
    closed_by_the_node(&mut dialed).await;
    assert_eq!(links.failures().proofs, 2);
    assert!(!links.is_up(2));

    // Node 1 dials again, and the right node 2 gets the link up.
    let mut dialed = self::dialed("node 1 dialing again", &fake).await;
    answer_as(&mut dialed, &cluster(2, &membership), &secret()).await;
    assert!(within("the link up", links.wait_until(2, true)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_reordered_or_replayed_frame_is_refused() {
    let (links, mut incoming, node, membership, _) = node_1_of_2().await;
    let two = cluster(2, &membership);

    // A frame replayed on its own connection: its sequence number is past.
    let mut peer = dial_as(node, &two, 1, &secret()).await;
    let sealed = write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(1)),
    )
    .await;
    assert_eq!(
        next_json("the first batch", &mut incoming).await,
        from(2, &batch(1))
    );
    peer.stream.write_all(&sealed).await.expect("writing");
    closed_by_the_node(&mut peer.stream).await;
    assert_eq!(links.failures().frames, 1);

    // A frame on another connection than its own.
    let mut peer = dial_as(node, &two, 1, &secret()).await;
    peer.stream.write_all(&sealed).await.expect("writing");
    closed_by_the_node(&mut peer.stream).await;
    assert_eq!(links.failures().frames, 2);

    // A frame changed by one bit, in its payload, then in its tag (its
    // last byte).
    for in_tag in [false, true] {
        let mut peer = dial_as(node, &two, 1, &secret()).await;
        let mut bytes = frame::encode(&mut Frame::Batch(batch(3))).expect("encoding");
        let tag = peer.session.seal(&bytes[frame::LENGTH_BYTES..]);
        frame::seal(&mut bytes, &tag);
        let at = if in_tag {
            bytes.len() - 1
        } else {
            frame::LENGTH_BYTES + 3
        };
        bytes[at] ^= 1;
        peer.stream.write_all(&bytes).await.expect("writing");
        closed_by_the_node(&mut peer.stream).await;
    }
    assert_eq!(links.failures().frames, 4);

    // Two frames swapped: each with a good tag, sent in the wrong order.
    let mut peer = dial_as(node, &two, 1, &secret()).await;
    let [first, second] = [4, 5].map(|tag| {
        let mut bytes = frame::encode(&mut Frame::Batch(batch(tag))).expect("encoding");
        let tag = peer.session.seal(&bytes[frame::LENGTH_BYTES..]);
        frame::seal(&mut bytes, &tag);
        bytes
    });
    peer.stream
        .write_all(&[second, first].concat())
        .await
        .expect("writing");
    closed_by_the_node(&mut peer.stream).await;
    assert_eq!(links.failures().frames, 5);

    // None was delivered: the next batch is a good peer's.
    let mut peer = dial_as(node, &two, 1, &secret()).await;
    write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(6)),
    )
    .await;
    assert_eq!(
        next_json("the good batch", &mut incoming).await,
        from(2, &batch(6)),
        "a refused frame was delivered"
    );
    assert_eq!(links.failures().proofs, 0);
}

/// A stranger that claims node 2's id and fails its proof leaves node 2's
/// authenticated connection alone: a connection takes its peer's slot
/// (closing the one it had) only after its proof has held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_claiming_a_peer_does_not_replace_it() {
    let (links, mut incoming, node, membership, _) = node_1_of_2().await;
    let mut real = dial_as(node, &cluster(2, &membership), 1, &secret()).await;
    write_sealed(
        &mut real.stream,
        &mut real.session,
        &mut Frame::Batch(batch(1)),
    )
    .await;
    assert_eq!(
        next_json("the real node 2's first batch", &mut incoming).await,
        from(2, &batch(1))
    );
    let mut stranger = connect(node).await;
    let sent = write_frame(&mut stranger, &mut hello(&cluster(2, &membership), 1)).await;
    let (body, _) = read_raw(&mut stranger).await;
    let transcript = Transcript::new(&sent[frame::LENGTH_BYTES..], &body);
    let mut proof = Frame::Proof(transcript.proof(&wrong_secret(), Role::Dialer));
    write_frame(&mut stranger, &mut proof).await;
    closed_by_the_node(&mut stranger).await;
    assert_eq!(links.failures().proofs, 1);
    // The real node 2's connection is still the one that delivers.
    write_sealed(
        &mut real.stream,
        &mut real.session,
        &mut Frame::Batch(batch(2)),
    )
    .await;
    assert_eq!(
        next_json("the real node 2's second batch", &mut incoming).await,
        from(2, &batch(2))
    );
}

/// A stranger that sends a good hello, then stalls part-way through its
/// proof frame, is closed by the handshake's one deadline
/// ([`HELLO_TIMEOUT`]), not by the much longer wait for a frame's body
/// ([`FRAME_READ_TIMEOUT`]) that a peer past its handshake gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_stalling_in_its_proof_is_closed_by_the_handshake_deadline() {
    let (links, _incoming, node, membership, _) = node_1_of_2().await;
    let mut stranger = connect(node).await;
    write_frame(&mut stranger, &mut hello(&cluster(2, &membership), 1)).await;
    let _ = read_raw(&mut stranger).await;
    // A proof frame's length and kind and half its MAC, then nothing.
    let proof = frame::encode(&mut Frame::Proof([0; 32])).expect("encoding a proof");
    stranger
        .write_all(&proof[..proof.len() / 2])
        .await
        .expect("writing to the node");
    // Half the body's wait: eight times the handshake's deadline, and
    // sure to run out first if the body's wait were what closed it.
    let bound = FRAME_READ_TIMEOUT / 2;
    let closed = tokio::time::timeout(bound, closed_by_the_node(&mut stranger)).await;
    assert!(
        closed.is_ok(),
        "the stalled handshake was not closed within {bound:?} (its deadline is \
         {HELLO_TIMEOUT:?})"
    );
    assert_eq!(links.failures().hellos, 1);
}

/// A frame's length is not authenticated until its body and tag have
/// come: a bare length of the largest frame, injected on node 2's link
/// (or sent by a node 2 that then stalls), holds none of the node's
/// receive budget, and node 3's batches keep being delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_length_does_not_stall_the_other_peers() {
    let (one, two, three) = (listener().await, listener().await, listener().await);
    let node = one.local_addr().expect("a listener's address");
    let membership =
        Membership::new([(1, address(&one)), (2, address(&two)), (3, address(&three))])
            .expect("a valid membership");
    let (links, mut incoming) = start(one, 1, &membership);
    let mut two = dial_as(node, &cluster(2, &membership), 1, &secret()).await;
    let mut three = dial_as(node, &cluster(3, &membership), 1, &secret()).await;
    // A batch of node 2's, and the bare length in the same write: once the
    // batch is handed over, node 1's reader of node 2 goes straight on to
    // the length, already there.
    let mut bytes = frame::encode(&mut Frame::Batch(batch(2))).expect("encoding");
    let tag = two.session.seal(&bytes[frame::LENGTH_BYTES..]);
    frame::seal(&mut bytes, &tag);
    let length = u32::try_from(frame::FRAME_BYTES_MAX).expect("a frame's length fits");
    bytes.extend(length.to_be_bytes());
    two.stream.write_all(&bytes).await.expect("writing");
    assert_eq!(
        next_json("node 2's batch", &mut incoming).await,
        from(2, &batch(2))
    );
    for tag in [31, 32, 33] {
        delivered(&mut three, 3, tag, &mut incoming).await;
    }
    assert_eq!(links.failures().stalls, 0);
}

/// Review item 1 of link-auth, and of link-fix: the node's hello, sent to
/// whoever connects before any proof, carried every `--peers` entry, then
/// a digest of them that a stranger could test guesses against. Now it
/// carries nothing of the membership: a stranger learns none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_learns_nothing_of_the_membership_before_its_proof() {
    let (_links, _incoming, node, membership, _) = node_1_of_2().await;
    let mut stranger = connect(node).await;
    let sent = write_frame(&mut stranger, &mut hello(&cluster(2, &membership), 1)).await;
    let (body, Frame::Hello(_)) = read_raw(&mut stranger).await else {
        panic!("no hello back")
    };
    let text = String::from_utf8_lossy(&body);
    for address in membership.nodes().values() {
        assert!(!text.contains(address.as_str()), "{address} in {text}");
    }
    assert!(
        !text.contains("127.0.0.1") && !text.contains("members"),
        "{text}"
    );
    // Without the secret, the next thing it gets is a refusal.
    let transcript = Transcript::new(&sent[frame::LENGTH_BYTES..], &body);
    let mut proof = Frame::Proof(transcript.proof(&wrong_secret(), Role::Dialer));
    write_frame(&mut stranger, &mut proof).await;
    let Frame::Refuse(why) = read_frame(&mut stranger).await else {
        panic!("a wrong proof was not refused")
    };
    assert_eq!(why, REFUSAL);
}

/// The dialing peer's `--peers` are always its first frame after the
/// proofs, sealed: the node compares them with its own and logs how they
/// differ. A peer that sends anything else first, or a second list, is
/// closed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sends_its_peers_first_after_the_proofs() {
    let (links, mut incoming, node, membership, _) = node_1_of_2().await;
    let mut of_2 = membership.nodes().clone();
    of_2.insert(3, "10.9.9.9:7000".into());
    let of_2 = Membership::new(of_2).expect("a valid membership");
    let two = cluster(2, &of_2);

    // A batch before its list.
    let mut peer = dial_bare(node, &two, 1, &secret()).await;
    write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(1)),
    )
    .await;
    closed_by_the_node(&mut peer.stream).await;
    assert_eq!(links.failures().frames, 1);

    // A second list.
    let mut peer = dial_as(node, &two, 1, &secret()).await;
    let mut members = Frame::Members(of_2.nodes().clone());
    write_sealed(&mut peer.stream, &mut peer.session, &mut members).await;
    closed_by_the_node(&mut peer.stream).await;
    assert_eq!(links.failures().frames, 2);

    // Its list, other than node 1's or the same, then its batches:
    // delivered, none of the above was.
    for (us, tag) in [(two, 2), (cluster(2, &membership), 3)] {
        let mut peer = dial_as(node, &us, 1, &secret()).await;
        delivered(&mut peer, 2, tag, &mut incoming).await;
    }
    assert_eq!(links.failures().frames, 2);
}

/// A node of link protocol version 2 (its hello carried a digest of its
/// `--peers`), meeting one of this version either way: refused by the
/// hello's protocol and version alone, counted, and told nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_the_previous_version_is_refused_either_way() {
    let (links, _incoming, node, _, fake) = node_1_of_2().await;
    let old_hello = |from: NodeId, to: NodeId| {
        let json = serde_json::json!({
            "protocol": frame::PROTOCOL, "version": 2, "cluster": cluster_id(),
            "from": from, "to": to, "members": "0a".repeat(32),
            "nonce": seglog::cluster::handshake::nonce().expect("a nonce"),
        });
        let payload = serde_json::to_vec(&json).expect("JSON encodes");
        let length = u32::try_from(payload.len() + 1).expect("a short hello");
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.push(1);
        bytes.extend(payload);
        bytes
    };
    // Dialing node 1: refused with the one word, then closed.
    let mut old = connect(node).await;
    old.write_all(&old_hello(2, 1))
        .await
        .expect("writing a hello");
    let Frame::Refuse(why) = read_frame(&mut old).await else {
        panic!("an old hello was not refused")
    };
    assert_eq!(why, REFUSAL);
    assert!(closed_by_the_node(&mut old).await.is_empty());
    assert_eq!(links.failures().hellos, 1);
    // Dialed by node 1: its hello answered with an old one, refused by
    // node 1, which sends no proof and closes.
    let mut dialed = dialed("node 1's dial", &fake).await;
    let Frame::Hello(_) = read_frame(&mut dialed).await else {
        panic!("node 1 sent no hello")
    };
    dialed
        .write_all(&old_hello(2, 1))
        .await
        .expect("writing a hello");
    assert!(closed_by_the_node(&mut dialed).await.is_empty());
    assert_eq!(links.failures().hellos, 2);
    assert_eq!(links.failures().proofs, 0);
    assert!(!links.is_up(2));
}
