//! The peer links (`src/cluster/link.rs`) over real loopback sockets:
//! nodes in this process, peers played by raw sockets (which hold the
//! cluster secret and run the handshake themselves), and links cut and
//! slowed by the proxy. A test waits on events (a link up or down, a batch
//! arriving, a connection closing), never for a time; `within` only turns
//! a hang into a failure. The handshake's refusals are in `auth.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::raft::VoteRequest;
use seglog::cluster::frame::{self, FRAME_BYTES_MAX, Frame, HANDSHAKE_BYTES_MAX, Hello};
use seglog::cluster::handshake::{self, Role, Session, Transcript};
use seglog::cluster::link::{
    BEFORE_PROOF_CONNECTIONS_MAX, INCOMING_BATCHES_MAX, Links, REFUSAL, Received, SendError,
};
use seglog::cluster::peers::{Cluster, Membership};
use seglog::cluster::secret::Secret;
use seglog::raft::standing::Note;
use seglog::raft::transport::{Answer, Batch, Call, Lead, Reply, Rpc};
use seglog::raft::types::{NodeId, Vote};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::proxy::Proxy;

/// How long a step may wait before the test calls it a hang: far beyond
/// any step's real time (each is a few round trips on loopback, or one
/// link's backoff of at most two seconds).
const HANG: Duration = Duration::from_secs(60);

/// Numbers the tests' cluster ids ([`cluster_id`]).
static NEXT_CLUSTER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This test's cluster id: each test runs on a thread of its own, and
    /// its body on that thread (`block_on`).
    static CLUSTER_ID: String =
        format!("links-test-{}", NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed));
}

/// The cluster id every node of the running test has, and no node of
/// another test: tests run at once on one loopback, so a node a test has
/// dropped frees a port another test may bind next, while its peers still
/// dial it. With one cluster id for all, such a peer proved itself to the
/// other test's node and replaced that test's own peer's connection.
pub fn cluster_id() -> String {
    CLUSTER_ID.with(Clone::clone)
}

/// The secret every node of these tests holds.
pub fn secret() -> Secret {
    Secret::new(b"the secret of the peer link tests: 32 bytes or more").expect("a valid secret")
}

/// Node `me` of `membership`, of this test's cluster ([`cluster_id`]).
pub fn cluster(me: NodeId, membership: &Membership) -> Cluster {
    Cluster {
        id: cluster_id(),
        me,
        membership: membership.clone(),
    }
}

pub async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    match tokio::time::timeout(HANG, step).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing after {HANG:?}"),
    }
}

/// A raw connection to the node at `node`.
pub async fn connect(node: SocketAddr) -> TcpStream {
    within("connecting", TcpStream::connect(node))
        .await
        .expect("connecting to the node")
}

/// Node 1 of a two-node cluster, started on a fresh port: its links, what
/// it hands over, its address, the membership, and node 2's listener
/// (nothing answers on it: a test answers node 1's dials by hand, or
/// plays node 2 by dialing node 1).
pub async fn node_1_of_2() -> (
    Links,
    mpsc::Receiver<Received>,
    SocketAddr,
    Membership,
    TcpListener,
) {
    let (one, two) = (listener().await, listener().await);
    let node = one.local_addr().expect("a listener's address");
    let membership =
        Membership::new([(1, address(&one)), (2, address(&two))]).expect("a valid membership");
    let (links, incoming) = start(one, 1, &membership);
    (links, incoming, node, membership, two)
}

/// Waits for node 1's next dial at the fake node's listener.
pub async fn dialed(what: &str, fake: &TcpListener) -> TcpStream {
    within(what, fake.accept())
        .await
        .expect("accepting node 1")
        .0
}

pub async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a listener")
}

pub fn address(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .expect("a listener's address")
        .to_string()
}

/// A batch with one of each item, told apart by `tag`.
pub fn batch(tag: u32) -> Batch {
    Batch {
        calls: vec![Call {
            group: tag,
            id: u64::from(tag),
            rpc: Rpc::Vote(VoteRequest::new(Vote::new(u64::from(tag), 1), None)),
        }],
        answers: vec![Answer {
            id: u64::from(tag),
            reply: Reply::Unavailable(format!("tag {tag}")),
        }],
        notes: vec![Note::Probe {
            group: tag,
            probing: 1,
        }],
        leads: Some(vec![Lead {
            group: tag,
            term: 1,
            last: u64::from(tag),
            matched: [(2, 0)].into(),
        }]),
    }
}

pub fn json(batch: &Batch) -> serde_json::Value {
    serde_json::to_value(batch).expect("a batch serializes")
}

/// Starts node `me` of `membership` on `listener`, with the tests' secret.
pub fn start(
    listener: TcpListener,
    me: NodeId,
    membership: &Membership,
) -> (Links, mpsc::Receiver<Received>) {
    Links::start(listener, cluster(me, membership), secret())
}

/// The next batch the node hands over, and who sent it (its share of
/// the incoming budget given back).
pub async fn next(what: &str, incoming: &mut mpsc::Receiver<Received>) -> (NodeId, Batch) {
    let Received { from, batch, .. } = within(what, incoming.recv())
        .await
        .expect("the links deliver");
    (from, batch)
}

/// What a refused send says: its kind, peer and the items handed back.
fn refused(result: Result<(), SendError>) -> (&'static str, NodeId, serde_json::Value) {
    let error = result.expect_err("the send is refused");
    let kind = match &error {
        SendError::UnknownPeer { .. } => "unknown",
        SendError::Down { .. } => "down",
        SendError::Full { .. } => "full",
        SendError::TooLarge { .. } => "too large",
    };
    (kind, error.peer(), json(error.unsent()))
}

/// Reads one frame a node sent on a raw connection: its body as sent, and
/// the frame.
pub async fn read_raw(stream: &mut TcpStream) -> (Vec<u8>, Frame) {
    let mut field = [0u8; frame::LENGTH_BYTES];
    within("a frame's length", stream.read_exact(&mut field))
        .await
        .expect("a frame's length");
    let length = frame::body_length(field).expect("a valid length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.expect("a frame's body");
    let frame = frame::decode(&body).expect("a valid frame");
    (body, frame)
}

/// Reads one unsealed frame (of the handshake) a node sent.
pub async fn read_frame(stream: &mut TcpStream) -> Frame {
    read_raw(stream).await.1
}

/// Writes `frame` unsealed; the bytes written.
pub async fn write_frame(stream: &mut TcpStream, frame: &mut Frame) -> Vec<u8> {
    let bytes = frame::encode(frame).expect("encoding a frame");
    stream.write_all(&bytes).await.expect("writing a frame");
    bytes
}

/// Writes `frame` sealed with the session's next tag; the bytes written.
pub async fn write_sealed(
    stream: &mut TcpStream,
    session: &mut Session,
    frame: &mut Frame,
) -> Vec<u8> {
    let mut bytes = frame::encode(frame).expect("encoding a frame");
    let tag = session.seal(&bytes[frame::LENGTH_BYTES..]);
    frame::seal(&mut bytes, &tag);
    stream.write_all(&bytes).await.expect("writing a frame");
    bytes
}

/// A hello of node `us.me` to node `to`, with a fresh nonce.
pub fn hello(us: &Cluster, to: NodeId) -> Frame {
    Frame::Hello(Hello::new(us, to, handshake::nonce().expect("a nonce")))
}

/// A raw peer's connection to a node, after the handshake.
pub struct Authenticated {
    pub stream: TcpStream,
    pub session: Session,
    /// Every byte the raw peer sent in the handshake, in order.
    pub sent: Vec<u8>,
    /// The node's hello.
    pub theirs: Hello,
}

/// Connects to the node at `node` as node `us.me`, runs the dialing side
/// of the handshake with `secret` ([`dial_bare`]), and sends `us`'s
/// `--peers`, the first frame after the proofs.
pub async fn dial_as(node: SocketAddr, us: &Cluster, to: NodeId, secret: &Secret) -> Authenticated {
    let mut peer = dial_bare(node, us, to, secret).await;
    let mut members = Frame::Members(us.membership.nodes().clone());
    write_sealed(&mut peer.stream, &mut peer.session, &mut members).await;
    peer
}

/// Connects to the node at `node` as node `us.me`, and runs the dialing
/// side of the handshake with `secret`: the node's hello, this side's
/// proof, and the node's proof, which must hold. Nothing after them.
pub async fn dial_bare(
    node: SocketAddr,
    us: &Cluster,
    to: NodeId,
    secret: &Secret,
) -> Authenticated {
    let mut stream = connect(node).await;
    let mut sent = write_frame(&mut stream, &mut hello(us, to)).await;
    let (body, theirs) = read_raw(&mut stream).await;
    let Frame::Hello(theirs) = theirs else {
        panic!("the node answered the hello with {theirs:?}")
    };
    let transcript = Transcript::new(&sent[frame::LENGTH_BYTES..], &body);
    let mut ours = Frame::Proof(transcript.proof(secret, Role::Dialer));
    sent.extend(write_frame(&mut stream, &mut ours).await);
    let Frame::Proof(proof) = read_frame(&mut stream).await else {
        panic!("the node sent no proof after this side's")
    };
    assert!(
        transcript.verify(secret, Role::Acceptor, &proof),
        "the node's proof does not hold"
    );
    Authenticated {
        stream,
        session: transcript.session(secret),
        sent,
        theirs,
    }
}

/// Runs the accepting side of the handshake as node `us.me`, on a
/// connection a node dialed: its hello read, this side's hello sent, its
/// proof checked, this side's proof sent, and its first frame after the
/// proofs, which must be its `--peers`. The session of the frames it
/// sends next.
pub async fn answer_as(stream: &mut TcpStream, us: &Cluster, secret: &Secret) -> Session {
    let (body, theirs) = read_raw(stream).await;
    let Frame::Hello(theirs) = theirs else {
        panic!("the node started with {theirs:?}, not its hello")
    };
    let ours = write_frame(stream, &mut hello(us, theirs.from)).await;
    let transcript = Transcript::new(&body, &ours[frame::LENGTH_BYTES..]);
    let Frame::Proof(proof) = read_frame(stream).await else {
        panic!("the node sent no proof")
    };
    assert!(
        transcript.verify(secret, Role::Dialer, &proof),
        "the node's proof does not hold"
    );
    write_frame(
        stream,
        &mut Frame::Proof(transcript.proof(secret, Role::Acceptor)),
    )
    .await;
    let mut session = transcript.session(secret);
    let first = within("node's --peers", read_sealed(stream, &mut session)).await;
    assert!(
        matches!(first, Frame::Members(_)),
        "the node's first frame was {first:?}, not its --peers"
    );
    session
}

/// Reads one sealed frame a node sent after the handshake, its tag checked.
pub async fn read_sealed(stream: &mut TcpStream, session: &mut Session) -> Frame {
    let mut field = [0u8; frame::LENGTH_BYTES];
    stream
        .read_exact(&mut field)
        .await
        .expect("a frame's length");
    let length = frame::body_length(field).expect("a valid length");
    let mut sealed = vec![0; length];
    stream
        .read_exact(&mut sealed)
        .await
        .expect("a frame's body");
    frame::decode(session.open(&sealed).expect("a frame with a good tag")).expect("a valid frame")
}

/// Waits until the node closes `stream`; what it sent before closing.
pub async fn closed_by_the_node(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    // A reset (the node closed with our bytes unread) is a close too.
    let _ = within(
        "the node closing the connection",
        stream.read_to_end(&mut rest),
    )
    .await;
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_batches() {
    let listeners = [listener().await, listener().await, listener().await];
    let membership = Membership::new(
        listeners
            .iter()
            .zip(1..)
            .map(|(listener, id)| (id, address(listener))),
    )
    .expect("a valid membership");
    let mut nodes: Vec<_> = listeners
        .into_iter()
        .zip(1..)
        .map(|(listener, id)| start(listener, id, &membership))
        .collect();
    for (from, (links, _)) in (1..).zip(&nodes) {
        for to in 1..=3 {
            if to != from {
                assert!(within("a link coming up", links.wait_until(to, true)).await);
            }
        }
    }
    for (from, (links, _)) in (1u32..).zip(&nodes) {
        for to in 1..=3 {
            if to != from {
                links
                    .send(u64::from(to), batch(from * 10 + to))
                    .expect("the link is up");
            }
        }
    }
    for (to, (_, incoming)) in (1u32..).zip(&mut nodes) {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (from, batch) = next("a batch", incoming).await;
            got.push((from, json(&batch)));
        }
        got.sort_by_key(|(from, _)| *from);
        let expected: Vec<_> = (1u32..=3)
            .filter(|&from| from != to)
            .map(|from| (u64::from(from), json(&batch(from * 10 + to))))
            .collect();
        assert_eq!(got, expected, "what node {to} received");
    }
    assert_eq!(
        refused(nodes[0].0.send(9, batch(1))),
        ("unknown", 9, json(&batch(1)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_frame_limit_goes_in_several_frames() {
    let (one, two) = (listener().await, listener().await);
    let membership =
        Membership::new([(1, address(&one)), (2, address(&two))]).expect("a valid membership");
    let (links, _) = start(one, 1, &membership);
    let (_two_links, mut incoming) = start(two, 2, &membership);
    assert!(within("the link up", links.wait_until(2, true)).await);
    // 40 answers of 1 MiB each (over one frame together), and one answer
    // over a frame alone, which is left out and said so.
    let mib = "x".repeat(1 << 20);
    let mut answers: Vec<Answer> = (0..40)
        .map(|id| Answer {
            id,
            reply: Reply::Unavailable(mib.clone()),
        })
        .collect();
    answers.push(Answer {
        id: 40,
        reply: Reply::Unavailable("y".repeat(FRAME_BYTES_MAX + 1)),
    });
    let big = Batch {
        answers,
        ..Batch::default()
    };
    let (kind, peer, items) = refused(links.send(2, big));
    assert_eq!((kind, peer), ("too large", 2));
    let items: Batch = serde_json::from_value(items).expect("a batch");
    assert_eq!(
        items
            .answers
            .iter()
            .map(|answer| answer.id)
            .collect::<Vec<_>>(),
        [40],
        "the item over a frame is handed back"
    );
    let (mut ids, mut batches) = (Vec::new(), 0);
    while ids.len() < 40 {
        let (from, batch) = next("a part of the batch", &mut incoming).await;
        assert_eq!(from, 1);
        batches += 1;
        for answer in batch.answers {
            assert!(matches!(&answer.reply, Reply::Unavailable(text) if *text == mib));
            ids.push(answer.id);
        }
    }
    assert_eq!(ids, (0..40).collect::<Vec<u64>>(), "every item, in order");
    assert!(batches >= 2, "sent in {batches} frame(s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_garbage_and_oversized_frames_are_disconnected() {
    let (links, mut incoming, node_address, membership, _) = node_1_of_2().await;
    let connect = || connect(node_address);
    let as_node = |me| cluster(me, &membership);

    // Bytes of another protocol: "GET " read as a length is over 1 GB.
    let mut stream = connect().await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("writing to the node");
    assert!(closed_by_the_node(&mut stream).await.is_empty());

    // A length over the handshake's limit before the hello.
    let mut stream = connect().await;
    let length = u32::try_from(HANDSHAKE_BYTES_MAX + 1).expect("small");
    stream
        .write_all(&length.to_be_bytes())
        .await
        .expect("writing to the node");
    stream.write_all(&[1]).await.expect("writing to the node");
    assert!(closed_by_the_node(&mut stream).await.is_empty());

    // A batch before any hello.
    let mut stream = connect().await;
    write_frame(&mut stream, &mut Frame::Batch(batch(1))).await;
    assert!(closed_by_the_node(&mut stream).await.is_empty());

    // Hellos the node must refuse, with the reason.
    let mut stranger = as_node(2);
    stranger.id = "another-cluster".into();
    for (mut hello, says) in [
        (
            self::hello(&stranger, 1),
            "is of cluster \"another-cluster\"",
        ),
        (self::hello(&as_node(2), 3), "said hello to node 3"),
        (self::hello(&as_node(1), 1), "as this node is"),
        (
            self::hello(&cluster(7, &membership), 1),
            "not in this node's --peers",
        ),
    ] {
        let mut stream = connect().await;
        write_frame(&mut stream, &mut hello).await;
        let Frame::Refuse(why) = read_frame(&mut stream).await else {
            panic!("a wrong hello was not refused ({says})")
        };
        // Terse: a peer that has proved nothing learns nothing (the
        // reason, `says`, is in the node's log).
        assert_eq!(why, REFUSAL, "refusing a peer that {says}");
        assert!(closed_by_the_node(&mut stream).await.is_empty());
    }

    // A right handshake, then something a link must never carry: an
    // oversized length, a second hello, a batch that is not JSON (sealed),
    // a good batch without its tag.
    let length_over = u32::try_from(FRAME_BYTES_MAX + 1)
        .expect("small")
        .to_be_bytes();
    for bad in 0..4 {
        let mut peer = dial_as(node_address, &as_node(2), 1, &secret()).await;
        assert_eq!(peer.theirs.from, 1);
        let stream = &mut peer.stream;
        match bad {
            0 => stream.write_all(&length_over).await.expect("writing"),
            1 => {
                write_sealed(stream, &mut peer.session, &mut hello(&as_node(2), 1)).await;
            }
            2 => {
                let mut bytes = vec![0, 0, 0, 3, 3, b'{', b'x'];
                let tag = peer.session.seal(&bytes[frame::LENGTH_BYTES..]);
                frame::seal(&mut bytes, &tag);
                stream.write_all(&bytes).await.expect("writing");
            }
            _ => {
                write_frame(stream, &mut Frame::Batch(batch(2))).await;
            }
        }
        assert!(closed_by_the_node(stream).await.is_empty());
    }
    // Each of the four counted, the oversized length too.
    assert_eq!(links.failures().frames, 4, "{:?}", links.failures());

    // None of them delivered anything: the first batch the node hands
    // over is the one of a well-behaved peer, sent after them all.
    let mut peer = dial_as(node_address, &as_node(2), 1, &secret()).await;
    write_sealed(&mut peer.stream, &mut peer.session, &mut Frame::Keepalive).await;
    write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(99)),
    )
    .await;
    let (from, got) = next("the good batch", &mut incoming).await;
    assert_eq!((from, json(&got)), (2, json(&batch(99))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialed_peer_answering_as_another_node_is_refused() {
    let (links, _incoming, _, membership, fake) = node_1_of_2().await;

    // Node 1 dials "node 2"; the node at that address says it is node 3.
    let mut stream = dialed("node 1 dialing", &fake).await;
    let Frame::Hello(hello) = read_frame(&mut stream).await else {
        panic!("node 1 did not start with its hello")
    };
    assert_eq!(
        (hello.from, hello.to, hello.cluster.as_str()),
        (1, 2, cluster_id().as_str())
    );
    write_frame(&mut stream, &mut self::hello(&cluster(3, &membership), 1)).await;
    assert!(closed_by_the_node(&mut stream).await.is_empty());
    assert!(!links.is_up(2));
    assert_eq!(links.failures().hellos, 1);
    assert_eq!(
        refused(links.send(2, batch(1))),
        ("down", 2, json(&batch(1)))
    );

    // It dials again; this time the right node answers.
    let mut stream = dialed("node 1 dialing again", &fake).await;
    assert!(!links.is_up(2), "up before the peer's proof");
    let mut session = answer_as(&mut stream, &cluster(2, &membership), &secret()).await;
    assert!(within("the link up", links.wait_until(2, true)).await);
    links.send(2, batch(5)).expect("the link is up");
    let got = loop {
        match within("node 1's batch", read_sealed(&mut stream, &mut session)).await {
            Frame::Keepalive => {}
            Frame::Batch(got) => break got,
            other => panic!("node 1 sent {other:?} after the handshake"),
        }
    };
    assert_eq!(json(&got), json(&batch(5)));

    // The peer goes away: the link is down, and sends fail at once.
    drop(stream);
    assert!(within("the link down", links.wait_until(2, false)).await);
    assert_eq!(
        refused(links.send(2, batch(6))),
        ("down", 2, json(&batch(6)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_by_the_network_comes_back() {
    let (one, two) = (listener().await, listener().await);
    // Node 2's entry is the proxy: node 1 reaches node 2 through it.
    let proxy = Proxy::start(two.local_addr().expect("a listener's address")).await;
    let membership = Membership::new([(1, address(&one)), (2, proxy.address().to_string())])
        .expect("a valid membership");
    let (links, _) = start(one, 1, &membership);
    let (two_links, mut incoming) = start(two, 2, &membership);
    assert!(within("1 → 2 up", links.wait_until(2, true)).await);
    assert!(within("2 → 1 up", two_links.wait_until(1, true)).await);
    links.send(2, batch(1)).expect("the link is up");
    assert_eq!(next("a batch", &mut incoming).await.1.notes.len(), 1);

    proxy.cut();
    assert!(within("1 → 2 down", links.wait_until(2, false)).await);
    assert_eq!(
        refused(links.send(2, batch(2))),
        ("down", 2, json(&batch(2)))
    );
    // The direct link the other way is untouched.
    assert!(two_links.is_up(1));

    proxy.resume();
    assert!(within("1 → 2 up again", links.wait_until(2, true)).await);
    assert!(proxy.carried() >= 2, "reconnected through the proxy");
    links.send(2, batch(3)).expect("the link is up");
    let (from, got) = next("a batch after the cut", &mut incoming).await;
    assert_eq!((from, json(&got)), (1, json(&batch(3))));

    // A slow link still carries every batch, in order.
    proxy.delay(Duration::from_millis(20));
    for tag in 4..8 {
        links.send(2, batch(tag)).expect("the link is up");
    }
    for tag in 4..8 {
        let (_, got) = next("a delayed batch", &mut incoming).await;
        assert_eq!(json(&got), json(&batch(tag)));
    }
}

/// Review 30's first finding: strangers that send a length and stall
/// used to hold every connection slot for the body's 32 s timeout, so a
/// real peer was refused. Now one of them is closed to make room, and
/// each is closed within the hello's deadline anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_strangers_do_not_lock_a_peer_out() {
    let (_links, mut incoming, node_address, membership, _) = node_1_of_2().await;
    let mut strays = Vec::new();
    for _ in 0..BEFORE_PROOF_CONNECTIONS_MAX + 8 {
        let mut stray = connect(node_address).await;
        stray
            .write_all(&100u32.to_be_bytes())
            .await
            .expect("writing to the node");
        strays.push(stray);
    }
    let mut peer = dial_as(node_address, &cluster(2, &membership), 1, &secret()).await;
    write_sealed(
        &mut peer.stream,
        &mut peer.session,
        &mut Frame::Batch(batch(7)),
    )
    .await;
    let (from, got) = next("the peer's batch", &mut incoming).await;
    assert_eq!((from, json(&got)), (2, json(&batch(7))));
    // Every stray is closed: some to make room, the rest at the hello's
    // deadline, though each sent a length.
    for stray in &mut strays {
        assert!(closed_by_the_node(stray).await.is_empty());
    }
}

/// Review 30's third finding: a peer's old connection, blocked handing a
/// batch to a node slow to take them, held its slot forever and its
/// batches came out after the new connection's. Now a peer's new
/// connection, once its proof holds, closes its old one: nothing of the
/// old one comes after the new one's first batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_newest_connection_replaces_its_old_one() {
    let (_links, mut incoming, node_address, membership, _) = node_1_of_2().await;
    let (two_of, key) = (cluster(2, &membership), secret());
    let connect_as_2 = || dial_as(node_address, &two_of, 1, &key);
    // The old connection sends more than the node holds untaken.
    let old_batches = u32::try_from(INCOMING_BATCHES_MAX + 3).expect("small");
    let mut old = connect_as_2().await;
    for tag in 0..old_batches {
        write_sealed(
            &mut old.stream,
            &mut old.session,
            &mut Frame::Batch(batch(tag)),
        )
        .await;
    }
    let mut new = connect_as_2().await;
    closed_by_the_node(&mut old.stream).await;
    for tag in [100_000, 100_001] {
        write_sealed(
            &mut new.stream,
            &mut new.session,
            &mut Frame::Batch(batch(tag)),
        )
        .await;
    }
    let mut order = Vec::new();
    while order.last() != Some(&100_001) {
        let (from, got) = next("a batch", &mut incoming).await;
        assert_eq!(from, 2);
        order.push(got.calls[0].group);
    }
    let first_new = order
        .iter()
        .position(|&tag| tag >= 100_000)
        .expect("the new connection's batches came");
    assert_eq!(order[first_new..], [100_000, 100_001], "received {order:?}");
    assert!(
        order[..first_new].windows(2).all(|w| w[0] + 1 == w[1]),
        "the old connection's batches in order"
    );
}

/// Review item 7 of link-auth: a flood of new connections closed the
/// oldest connection still in its handshake, which is an honest peer's
/// between its hello and its proof; then (review item 2 of link-fix) a
/// flood from many addresses closed it by the draw. Now a connection whose
/// hello passed the check is closed only when every one's has: the
/// flood's own go first, however many addresses they come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_does_not_close_a_peer_in_its_handshake() {
    let (links, mut incoming, node, membership, _) = node_1_of_2().await;
    // The peer dials from another loopback address than the flood's.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.2:0".parse().expect("an address"))
        .expect("binding to 127.0.0.2");
    let mut peer = within("connecting from 127.0.0.2", socket.connect(node))
        .await
        .expect("connecting to the node");
    let sent = write_frame(&mut peer, &mut hello(&cluster(2, &membership), 1)).await;
    let (body, Frame::Hello(_)) = read_raw(&mut peer).await else {
        panic!("no hello back")
    };
    // Between its hello and its proof: twice the pool of strangers from
    // 127.0.0.1, and as many of them closed as the pool holds, so the
    // node has made room past the peer's connection many times over.
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let mut flood = Vec::new();
    // Each from its own address (127.0.1.3 and up), as the reviewer's
    // probe did: one network, and none of them has sent a hello.
    for i in 0..2 * BEFORE_PROOF_CONNECTIONS_MAX {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        let source = format!("127.0.1.{}:0", 3 + i);
        socket
            .bind(source.parse().expect("an address"))
            .expect("binding to 127.0.1.x");
        let mut stray = within("connecting a stranger", socket.connect(node))
            .await
            .expect("connecting to the node");
        let closed = closed_tx.clone();
        flood.push(tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = stray.read_to_end(&mut rest).await;
            let _ = closed.send(());
        }));
    }
    for _ in 0..BEFORE_PROOF_CONNECTIONS_MAX {
        within("the node closing strangers", closed_rx.recv())
            .await
            .expect("a stranger's task");
    }
    let transcript = Transcript::new(&sent[frame::LENGTH_BYTES..], &body);
    let secret = secret();
    write_frame(
        &mut peer,
        &mut Frame::Proof(transcript.proof(&secret, Role::Dialer)),
    )
    .await;
    let (_, Frame::Proof(proof)) = read_raw(&mut peer).await else {
        panic!("no proof back")
    };
    assert!(transcript.verify(&secret, Role::Acceptor, &proof));
    let mut session = transcript.session(&secret);
    let mut members = Frame::Members(membership.nodes().clone());
    write_sealed(&mut peer, &mut session, &mut members).await;
    write_sealed(&mut peer, &mut session, &mut Frame::Batch(batch(8))).await;
    let (from, got) = next("the peer's batch", &mut incoming).await;
    assert_eq!((from, json(&got)), (2, json(&batch(8))));
    assert_eq!(links.failures().proofs, 0);
    for task in flood {
        task.abort();
    }
}
